"""Generation runs (and, as they land, dataset snapshots, training runs and the model
registry). Every run subclasses core.runs.Run so the stale-run sweep recovers it."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from core.runs import Run


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
    audit_name = "generation"  # audit actions: generation.start, generation.cancel

    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="generation_runs"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    backend = models.CharField(max_length=32, choices=Backend.choices)
    model = models.CharField(
        max_length=500, blank=True,
        help_text="Hub id, a folder under MODEL_DIRS, or the endpoint's model name.")
    endpoint = models.CharField(
        max_length=64, blank=True,
        help_text="openai backend: the GENERATION_ENDPOINTS entry it samples from (never a URL).")
    params = models.JSONField(help_text="training.engine.sampling.SamplingParams as JSON.")
    backend_options = models.JSONField(
        default=dict, blank=True,
        help_text="Engine options in training.generation.RUN_OPTIONS; never a URL or a key.")
    prompt_ids = models.JSONField(default=list, help_text="Frozen at creation.")
    errors = models.JSONField(default=list, blank=True,
                              help_text="Per-prompt problems: [{prompt, reason}].")
    stats = models.JSONField(default=dict, blank=True,
                             help_text="Duplicate rate, distinct-2, tokens, tokens/s.")
    policy = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Sample from this registered policy (closing the loop).",
    )


class DatasetSnapshot(Run):
    """An immutable, versioned export of accepted labels (built by a task on `default`).

    Files live under ARTIFACT_ROOT/datasets/<id>/ with a manifest.json written last;
    once built, nothing about the snapshot changes."""

    audit_name = "snapshot"  # audit actions: snapshot.create, snapshot.cancel

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
    # Set by an erasure (erasure/services.py): a prompt in it was erased, so its files
    # are deleted and a download answers 410 Gone; rebuilding makes a new snapshot.
    contains_erased = models.BooleanField(default=False)


class TrainingRun(Run):
    """Train a reward model or a policy (SFT, DPO, online RL) on the `train` queue.

    The full config is stored on the row; checkpoints and the final weights go under
    ARTIFACT_ROOT/runs/<id>/. After a crash the sweep re-queues the run and it resumes
    from its last complete checkpoint."""

    class Kind(models.TextChoices):
        REWARD = "reward"
        SFT = "sft"
        DPO = "dpo"
        RL = "rl"

    task_name = "training.tasks.train_run"
    audit_name = "training"  # audit actions: training.start, training.cancel

    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="training_runs"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    base_model = models.CharField(
        max_length=500, help_text="Hub id, a folder under MODEL_DIRS, a built-in model or a "
                                  "registered model of the project (base_version).")
    base_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Start from a registered model (its adapter) instead of a raw base.",
    )
    snapshot = models.ForeignKey(
        DatasetSnapshot, null=True, blank=True, on_delete=models.PROTECT,
        related_name="training_runs",
    )
    reward_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="RL: the reward model that scores the policy's samples.",
    )
    config = models.JSONField(default=dict)
    devices = models.PositiveSmallIntegerField(default=1)
    artifact_path = models.CharField(max_length=500, blank=True)
    results = models.JSONField(default=dict, blank=True)


class TrainingMetric(models.Model):
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    values = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step"], name="training_metric_unique_step"),
        ]


class ModelVersion(models.Model):
    """A registered model: a policy (for generation) or a reward model (for scoring).
    At most one current policy per project and one current reward model per label axis
    (the primary axis's scores candidates, routes items and is RL's default reward);
    promoting switches it."""

    class Kind(models.TextChoices):
        POLICY = "policy"
        REWARD = "reward"

    project = models.ForeignKey(
        "labeling.Project", on_delete=models.CASCADE, related_name="model_versions"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200)
    version = models.PositiveIntegerField()
    base_model = models.CharField(max_length=500)
    adapter_path = models.CharField(max_length=500, blank=True)
    merged_path = models.CharField(max_length=500, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    source_run = models.ForeignKey(TrainingRun, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    snapshot = models.ForeignKey(DatasetSnapshot, null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="+")
    guideline_versions = models.JSONField(default=list, blank=True)
    axis = models.CharField(
        max_length=40, blank=True,
        help_text="Reward models: the label axis whose pairs it learned (issue #21); blank for versions "
                  "registered before axes, which learned the primary axis.")
    warnings = models.JSONField(
        default=list, blank=True,
        help_text="Why the run may have learned nothing (training.engine.reward.learning_warnings); "
                  "promoting a version that has any needs a confirmation.")
    is_current = models.BooleanField(default=False)
    trained_on_erased = models.BooleanField(
        default=False, help_text="Trained on a snapshot that held data erased since (kept, flagged).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "kind", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name", "version"],
                                    name="model_version_unique"),
            models.UniqueConstraint(fields=["project", "kind", "axis"], condition=models.Q(is_current=True),
                                    name="model_version_one_current_per_axis"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class CandidateScore(models.Model):
    """A reward model's score of one candidate (reviewers see it; annotators never)."""

    candidate = models.ForeignKey("labeling.Candidate", on_delete=models.CASCADE,
                                  related_name="scores")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE,
                                      related_name="scores")
    score = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["candidate", "model_version"],
                                    name="candidate_score_unique"),
        ]


class TrainingSchedule(models.Model):
    """A project's standing order: "train a reward model when at least N new accepted
    comparisons exist since the last one" (optionally followed by DPO). A
    django-celery-beat PeriodicTask ticks it; every tick logs a ScheduleDecision."""

    project = models.OneToOneField(
        "labeling.Project", on_delete=models.CASCADE, related_name="training_schedule"
    )
    enabled = models.BooleanField(default=True)
    min_new_comparisons = models.PositiveIntegerField(
        default=500, help_text="Train when at least this many new accepted comparisons exist.")
    interval_minutes = models.PositiveIntegerField(
        default=60, help_text="How often the schedule checks.")
    then_dpo = models.BooleanField(
        default=False, help_text="Also queue a DPO run of the current policy on the same data.")
    reward_config = models.JSONField(default=dict, blank=True,
                                     help_text="Reward config fields that differ from the defaults.")
    dpo_config = models.JSONField(default=dict, blank=True,
                                  help_text="DPO config fields that differ from the defaults.")
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    # Set while a snapshot the schedule started is being built; the runs start from it.
    pending_snapshot = models.ForeignKey(
        DatasetSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(interval_minutes__gte=1),
                                   name="schedule_interval_positive"),
            models.CheckConstraint(condition=models.Q(min_new_comparisons__gte=1),
                                   name="schedule_threshold_positive"),
        ]

    def __str__(self) -> str:
        return f"schedule of project {self.project_id}"


class ScheduleDecision(models.Model):
    """What one tick decided and why (append-only)."""

    class Action(models.TextChoices):
        SKIP = "skip"          # nothing to do (below threshold, disabled, busy)
        WAIT = "wait"          # a snapshot it started is still being built
        SNAPSHOT = "snapshot"  # threshold reached: a snapshot is being built
        TRAIN = "train"        # runs queued on the snapshot
        ERROR = "error"        # a step failed; the reason says which

    schedule = models.ForeignKey(TrainingSchedule, on_delete=models.CASCADE,
                                 related_name="decisions")
    action = models.CharField(max_length=16, choices=Action.choices)
    reason = models.TextField()
    new_comparisons = models.PositiveIntegerField(null=True, blank=True)
    snapshot = models.ForeignKey(DatasetSnapshot, null=True, blank=True,
                                 on_delete=models.SET_NULL, related_name="+")
    reward_run = models.ForeignKey(TrainingRun, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    dpo_run = models.ForeignKey(TrainingRun, null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]


class HubPush(Run):
    """A snapshot pushed to the Hugging Face Hub as a dataset repository (training/hub.py),
    by a task on `default`. The Hub and its token are the operator's (HF_ENDPOINT,
    HF_HUB_PUSH_TOKEN); a request names only the repository."""

    task_name = "training.tasks.push_to_hub"

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="hub_pushes")
    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.CASCADE, related_name="hub_pushes")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    repo_id = models.CharField(max_length=200, help_text="owner/name of the dataset repository.")
    private = models.BooleanField(default=True)
    license = models.CharField(max_length=64, default="other", help_text="The dataset card's license field.")
    commit_url = models.CharField(max_length=500, blank=True)
