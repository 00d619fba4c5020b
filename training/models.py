"""Generation runs (and, as they land, dataset snapshots, training runs and the model
registry). Every run subclasses labeling.runs.Run so the stale-run sweep recovers it."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from labeling.runs import Run


class GenerationRun(Run):
    """Sample K candidates per prompt from a policy on the `generate` queue.

    The prompt list is frozen when the run is created, so a retried or re-queued run
    works through the same prompts; candidates are unique on (prompt, "run:<id>:<k>").
    """

    class Backend(models.TextChoices):
        BUILTIN_TINY = "builtin-tiny"
        TRANSFORMERS = "transformers"
        VLLM = "vllm"
        OPENAI = "openai"

    task_name = "training.tasks.generate_candidates"

    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="generation_runs"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    backend = models.CharField(max_length=32, choices=Backend.choices)
    model = models.CharField(max_length=500, blank=True,
                             help_text="Hub id, local path, or the endpoint's model name.")
    params = models.JSONField(help_text="training.engine.sampling.SamplingParams as JSON.")
    backend_options = models.JSONField(
        default=dict, blank=True, help_text="e.g. base_url for openai; never an API key."
    )
    prompt_ids = models.JSONField(default=list, help_text="Frozen at creation.")
    errors = models.JSONField(default=list, blank=True,
                              help_text="Per-prompt problems: [{prompt, reason}].")
    stats = models.JSONField(default=dict, blank=True,
                             help_text="Duplicate rate, distinct-2, tokens, tokens/s.")


class DatasetSnapshot(Run):
    """An immutable, versioned export of accepted labels (built by a task on `default`).

    Files live under ARTIFACT_ROOT/datasets/<id>/ with a manifest.json written last;
    once built, nothing about the snapshot changes."""

    task_name = "training.tasks.build_snapshot"

    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="snapshots"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    kinds = models.JSONField(help_text="pairs, dpo, sft, kto, raw")
    formats = models.JSONField(help_text="jsonl, parquet")
    filters = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True,
                               help_text="conversational, validation_fraction, split_seed")
    counts = models.JSONField(default=dict, blank=True)
    files = models.JSONField(default=dict, blank=True, help_text="name -> rows, sha256, bytes")
    path = models.CharField(max_length=500, blank=True)
