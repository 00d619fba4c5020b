"""The Runs & datasets page as a launcher (admins): forms that start a generation run, build
a snapshot and start a training run through the same services as the API and the CLI
(which audit them), and the JSON the page polls for live progress.

What a generation run may sample from is offered, never typed: the project's registered
policies (the promoted one first, chosen by default), the built-in tiny model, the
operator's configured endpoints (by name) and the folders under MODEL_DIRS."""

from __future__ import annotations

import dataclasses
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from core.console import console_project, console_view
from core.errors import DomainError
from labeling.axes import axes_from_config
from labeling.models import Project, Role
from training.endpoints import endpoints_configured
from training.generation import generation_run_create
from training.model_refs import model_folders
from training.models import DatasetSnapshot, GenerationRun, ModelVersion, TrainingRun
from training.runs import training_run_create
from training.snapshots import FORMATS, KINDS, snapshot_create

FINISHED = {"done", "failed", "cancelled"}
# Presets of the training form: fields left empty take the preset's value.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"max_steps": 20, "per_device_train_batch_size": 4, "max_length": 128, "logging_steps": 1,
              "save_steps": 1000},
    "full": {"num_train_epochs": 1.0, "max_steps": -1, "logging_steps": 10, "save_steps": 100},
}
PRESET_HELP = {"quick": "quick: 20 steps, batch 4, 128 tokens: checks the pipeline in minutes on a CPU",
               "full": "full: one epoch over the snapshot with the kind's defaults"}
CONFIG_FIELDS = ("max_steps", "num_train_epochs", "learning_rate", "per_device_train_batch_size", "max_length")


def generation_sources(project: Project) -> list[tuple[str, str]]:
    """(value, label) of everything a generation run here may sample from; the promoted
    policy first."""
    choices = []
    policies = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.POLICY).order_by(
        "-is_current", "-id")
    for version in policies[:50]:
        choices.append((f"policy:{version.pk}", f"{version}{' (promoted policy)' if version.is_current else ''}"))
    choices.append(("builtin:builtin-tiny", "built-in tiny model"))
    for endpoint in sorted(endpoints_configured().values(), key=lambda e: e.name):
        for model in endpoint.models or ("",):
            choices.append((f"endpoint:{endpoint.name}:{model}",
                            f"endpoint {endpoint.name}{f': {model}' if model else ''}"))
    for folder in model_folders():
        choices.append((f"folder:{folder['model']}", f"model folder {folder['name']}"))
    return choices


class GenerationForm(forms.Form):
    source = forms.ChoiceField(label="Sample from",
                               help_text="The promoted policy by default; endpoints and folders are "
                                         "the operator's allowed list.")
    k = forms.IntegerField(min_value=2, max_value=16, label="K (answers per prompt)")
    temperature = forms.FloatField(min_value=0.0, max_value=5.0, initial=1.0)
    top_p = forms.FloatField(min_value=0.01, max_value=1.0, initial=1.0, label="Top-p")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=8192, initial=128, label="Max new tokens")
    prompts = forms.CharField(
        required=False, max_length=20000, label="Which prompts",
        help_text="Empty: every prompt with fewer than K sampled answers. Or prompt ids, comma-separated.")

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["source"].choices = generation_sources(project)
        current = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.POLICY, is_current=True).first()
        self.fields["source"].initial = f"policy:{current.pk}" if current else "builtin:builtin-tiny"
        self.fields["k"].initial = project.k

    def clean_prompts(self) -> list[int] | None:
        text = self.cleaned_data["prompts"].strip()
        if not text:
            return None
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not all(p.isascii() and p.isdigit() and len(p) < 18 for p in parts) or len(parts) > 2000:
            raise forms.ValidationError("prompt ids, comma-separated (at most 2,000)")
        return [int(p) for p in parts]


class SnapshotForm(forms.Form):
    kinds = forms.MultipleChoiceField(choices=[(k, k) for k in KINDS], initial=["pairs"],
                                      widget=forms.CheckboxSelectMultiple,
                                      help_text="pairs: reward models; dpo, kto: preference tuning; "
                                                "sft: demonstrations and best answers; ratings: "
                                                "per-answer 0-4 scores of the rating axes.")
    formats = forms.MultipleChoiceField(choices=[(f, f) for f in FORMATS], initial=["parquet"],
                                        widget=forms.CheckboxSelectMultiple)
    min_agreement = forms.FloatField(required=False, min_value=0.0, max_value=1.0,
                                     help_text="Only items whose rankings agree at least this much "
                                               "(adjudicated ones always).")
    exclude_flagged = forms.BooleanField(required=False, initial=True, label="Leave out items flagged unsafe")
    since = forms.DateField(required=False, label="Decided since", help_text="YYYY-MM-DD; empty: from the start.",
                            widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="Decided until", help_text="YYYY-MM-DD; empty: up to now.",
                            widget=forms.DateInput(attrs={"type": "date"}))
    validation_fraction = forms.FloatField(min_value=0.0, max_value=0.9, initial=0.1,
                                           help_text="Share of prompts held out for validation "
                                                     "(reward accuracy is measured on them).")
    axis = forms.ChoiceField(required=False, widget=forms.Select(attrs={"id": "id_snapshot_axis"}),
                             help_text="The axis whose consensus makes the pairs: items accepted on it, "
                                       "even if disputed on another.")

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        axes = axes_from_config(project.axes)
        if len(axes) < 2:  # one axis: nothing to choose
            del self.fields["axis"]
            return
        self.fields["axis"].choices = [("", f"{axes[0].name} (the primary axis, as before axes)")] + [
            (axis.key, axis.name) for axis in axes]


def config_help() -> dict[str, str]:
    """Each main config field's help: the engine's own first sentence (the reward config's),
    then its default for every kind, so one form serves them all."""
    from training.engine.cli import config_class

    texts: dict[str, str] = {}
    defaults: dict[str, list[str]] = {name: [] for name in CONFIG_FIELDS}
    for kind in TrainingRun.Kind.values:
        for f in dataclasses.fields(config_class(kind)):
            if f.name not in defaults:
                continue
            texts.setdefault(f.name, f.metadata.get("help", "").split(". ")[0].rstrip(".")[:160])
            default = f.default if f.default is not dataclasses.MISSING else "required"
            defaults[f.name].append(f"{kind} {'auto' if default is None else default}")
    return {name: f"{texts.get(name, '')}. Default: {', '.join(values)}." for name, values in defaults.items()}


def snapshot_label(snapshot: DatasetSnapshot) -> str:
    """A snapshot as the training form offers it; one built for a label axis says which
    (a reward run on it learns that axis)."""
    axis = snapshot.filters.get("axis")
    return f"snapshot {snapshot.pk}: {', '.join(snapshot.kinds)}{f' (axis {axis})' if axis else ''}"


class TrainingForm(forms.Form):
    kind = forms.ChoiceField(choices=TrainingRun.Kind.choices, initial="reward")
    snapshot = forms.ChoiceField(help_text="A built snapshot with the kind's files (pairs for reward, sft, dpo).")
    base = forms.ChoiceField(required=False, label="Base model", help_text="Default: the built-in model of the kind "
                                                          "(MiniLM for reward models, the tiny LM for policies).")
    preset = forms.ChoiceField(choices=[(k, k) for k in PRESETS], initial="quick",
                               help_text="; ".join(PRESET_HELP.values()) + ". Fields below override it.")
    max_steps = forms.IntegerField(required=False, min_value=-1, max_value=10**7)
    num_train_epochs = forms.FloatField(required=False, min_value=0.01, max_value=1000)
    learning_rate = forms.FloatField(required=False, min_value=1e-9, max_value=1.0)
    per_device_train_batch_size = forms.IntegerField(required=False, min_value=1, max_value=4096)
    max_length = forms.IntegerField(required=False, min_value=8, max_value=131072)

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        snapshots = DatasetSnapshot.objects.filter(project=project, status="done").order_by("-id")[:50]
        self.fields["snapshot"].choices = [(s.pk, snapshot_label(s)) for s in snapshots]
        versions = ModelVersion.objects.filter(project=project).order_by("-id")[:50]
        self.fields["base"].choices = [("", "built-in model of the kind")] + [
            (f"version:{v.pk}", f"registered {v}") for v in versions] + [
            (f"folder:{f['model']}", f"model folder {f['name']}") for f in model_folders()]
        for name, text in config_help().items():
            self.fields[name].help_text = text


def _generation(request: HttpRequest, project: Project) -> str:
    form = GenerationForm(request.POST, project=project)
    if not form.is_valid():
        raise DomainError("generation: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
    data = form.cleaned_data
    kind, _, rest = data["source"].partition(":")
    source: dict[str, Any] = {}
    if kind == "policy":
        source["policy"] = ModelVersion.objects.get(project=project, pk=int(rest), kind="policy")
        source["backend"] = ""
    elif kind == "builtin":
        source["backend"] = GenerationRun.Backend.BUILTIN_TINY
    elif kind == "endpoint":
        name, _, model = rest.partition(":")
        source.update(backend=GenerationRun.Backend.OPENAI, endpoint=name, model=model)
    else:
        source.update(backend=GenerationRun.Backend.TRANSFORMERS, model=rest)
    run = generation_run_create(
        project=project, user=request.user, prompt_ids=data["prompts"],
        params={"k": data["k"], "temperature": data["temperature"], "top_p": data["top_p"],
                "max_new_tokens": data["max_new_tokens"]}, **source)
    return f"Generation run {run.pk} started: {len(run.prompt_ids)} prompts."


def _snapshot(request: HttpRequest, project: Project) -> str:
    form = SnapshotForm(request.POST, project=project)
    if not form.is_valid():
        raise DomainError("snapshot: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
    data = form.cleaned_data
    filters = {"exclude_flagged": data["exclude_flagged"]}
    if data["min_agreement"] is not None:
        filters["min_agreement"] = data["min_agreement"]
    for name in ("since", "until"):
        if data[name] is not None:
            filters[name] = data[name].isoformat()
    if data.get("axis"):
        filters["axis"] = data["axis"]
    snapshot = snapshot_create(project=project, kinds=data["kinds"], formats=data["formats"], filters=filters,
                               options={"validation_fraction": data["validation_fraction"]}, user=request.user)
    return f"Snapshot {snapshot.pk} is being built."


def _training(request: HttpRequest, project: Project) -> str:
    form = TrainingForm(request.POST, project=project)
    if not form.is_valid():
        raise DomainError("training: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
    data = form.cleaned_data
    config = dict(PRESETS[data["preset"]])
    config.update({name: data[name] for name in CONFIG_FIELDS if data.get(name) is not None})
    base_version, base_model = None, ""
    kind, _, rest = data["base"].partition(":")
    if kind == "version":
        base_version = ModelVersion.objects.get(project=project, pk=int(rest))
    elif kind == "folder":
        base_model = rest
    snapshot = DatasetSnapshot.objects.filter(project=project, pk=int(data["snapshot"])).first()
    if data["kind"] == TrainingRun.Kind.REWARD and snapshot is not None and snapshot.filters.get("axis"):
        config["axis"] = snapshot.filters["axis"]  # a reward model learns the axis its pairs were built for
    run = training_run_create(
        project=project, kind=data["kind"], user=request.user, config=config, base_model=base_model,
        base_version=base_version, snapshot=snapshot)
    return f"{run.kind.capitalize()} training run {run.pk} started."


ACTIONS = {"generate": _generation, "snapshot": _snapshot, "train": _training}


@console_view
def launch(request: HttpRequest, project_id: int, what: str) -> HttpResponse:
    project = console_project(request, project_id, min_role=Role.ADMIN)
    if request.method != "POST" or what not in ACTIONS:
        return redirect("console:runs", project_id=project.pk)
    try:
        messages.success(request, ACTIONS[what](request, project))
    except DomainError as exc:
        messages.error(request, str(exc))
    return redirect("console:runs", project_id=project.pk)


def launcher_forms(project: Project) -> dict[str, forms.Form]:
    return {"generation_form": GenerationForm(project=project), "snapshot_form": SnapshotForm(project=project),
            "training_form": TrainingForm(project=project)}


def _progress(kind: str, run: Any) -> str:
    p = run.progress or {}
    if kind == "generation":
        return f"{p.get('prompts_done', 0)}/{p.get('prompts_total', 0)}"
    if kind == "training":
        return f"{p.get('step', 0)}/{p.get('max_steps', '?')}"
    return ""


@console_view
def runs_status(request: HttpRequest, project_id: int) -> JsonResponse:
    """What the Runs page polls: every recent run's status and progress."""
    project = console_project(request, project_id)
    rows = []
    for kind, model in (("generation", GenerationRun), ("snapshot", DatasetSnapshot), ("training", TrainingRun)):
        for run in model.objects.filter(project=project).order_by("-id")[:50]:
            rows.append({"key": f"{kind}-{run.pk}", "status": run.status, "progress": _progress(kind, run),
                         "finished": run.status in FINISHED})
    for job in project.imports.order_by("-id")[:50]:
        rows.append({"key": f"import-{job.pk}", "status": job.status, "progress": "",
                     "finished": job.status in FINISHED})
    return JsonResponse({"runs": rows, "active": any(not r["finished"] for r in rows)})
