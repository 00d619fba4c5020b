"""The model registry and closing the loop: a finished run's model is registered as a
ModelVersion (policies also merged for generation); promoting a version makes it the
project's current policy or reward model in one transaction (a version whose run may
have learned nothing only when confirmed); the current reward model scores new
candidates and orders the `uncertain_first` queue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max, Q

from core.audit import audit
from core.errors import DomainError
from labeling.axes import axes_from_config
from labeling.models import Candidate, Item, Project
from training.artifacts import artifact_local, artifact_publish
from training.models import CandidateScore, DatasetSnapshot, ModelVersion, TrainingRun
from training.snapshots import snapshot_local_dir
from webhooks.events import event_emit
from webhooks.models import EventType


def model_version_register(*, run: TrainingRun, results: dict[str, Any]) -> ModelVersion:
    """Record the run's final model; policies also get merged weights for generation."""
    kind = ModelVersion.Kind.REWARD if run.kind == TrainingRun.Kind.REWARD else ModelVersion.Kind.POLICY
    name = f"{run.project.slug}-{kind}"
    adapter = Path(run.artifact_path) / "model"
    merged = ""
    if kind == ModelVersion.Kind.POLICY and run.config.get("use_lora", True):
        merged = str(_merge_policy(run, adapter))
    # Uploaded before it is registered: a registered version is always fetchable.
    for folder in filter(None, (str(adapter), merged)):
        artifact_publish(folder)
    with transaction.atomic():
        number = (ModelVersion.objects.filter(project=run.project, name=name)
                  .aggregate(n=Max("version"))["n"] or 0) + 1
        metrics = {k: v for k, v in results.items() if isinstance(v, int | float | str)}
        if (results.get("eval") or {}).get("accuracy") is not None:
            metrics["eval_accuracy"] = results["eval"]["accuracy"]
            metrics["eval_pairs"] = results["eval"]["pairs"]
        return ModelVersion.objects.create(
            project=run.project, kind=kind, name=name, version=number,
            base_model=run.base_model, adapter_path=str(adapter), merged_path=merged,
            metrics=metrics, source_run=run, snapshot=run.snapshot,
            guideline_versions=_manifest_versions(run.snapshot),
            axis=str(run.config.get("axis") or "") if kind == ModelVersion.Kind.REWARD else "",
            warnings=list(results.get("warnings") or []),
        )


def _manifest_versions(snapshot: DatasetSnapshot) -> list[int]:
    manifest = snapshot_local_dir(snapshot) / "manifest.json"
    return json.loads(manifest.read_text()).get("guideline_versions", []) if manifest.exists() else []


def _merge_policy(run: TrainingRun, adapter: Path) -> Path:
    """Merge the LoRA adapter into its base so any generation backend can load it."""
    from training.engine.cli import config_class
    from training.engine.trainer_config import load_causal_lm

    target = Path(run.artifact_path) / "merged"
    config = config_class("sft").from_dict({"model": str(adapter)})
    model, tokenizer, _ = load_causal_lm(config, merge_adapter=True)
    model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


RESCORE_TASK = "training.tasks.generate_item_scores"  # on the generate queue (config/celery.py)
RESCORE_CHUNK = 256


class PromotionNeedsConfirmation(DomainError):
    """The version's run may have learned nothing; promote it only when confirmed (HTTP 409)."""

    code = "confirmation_required"
    http_status = 409

    def __init__(self, version: ModelVersion, worse_than: ModelVersion | None = None) -> None:
        reasons = []
        if version.warnings:
            reasons.append(f"{version} may have learned nothing: {'; '.join(version.warnings)}")
        if worse_than is not None:
            reasons.append(f"{version} is worse than the current {worse_than} on held-out accuracy "
                           f"({version.metrics.get('eval_accuracy'):.3f} < "
                           f"{worse_than.metrics.get('eval_accuracy'):.3f})")
        super().__init__(". ".join(reasons) + ". Promote it anyway only with confirmation "
                         "(API: {\"confirm\": true}).")
        self.warnings = list(version.warnings)
        self.worse_than = worse_than


def worse_than_current(version: ModelVersion) -> ModelVersion | None:
    """The current reward model of the same axis when `version` scores below it on
    held-out accuracy."""
    if version.kind != ModelVersion.Kind.REWARD or version.metrics.get("eval_accuracy") is None:
        return None
    current = current_model(version.project, version.kind, axis=version.axis, exclude=version)
    if current is None or current.metrics.get("eval_accuracy") is None:
        return None
    return current if version.metrics["eval_accuracy"] < current.metrics["eval_accuracy"] else None


@transaction.atomic
def model_version_promote(*, version: ModelVersion, actor: AbstractBaseUser | None,
                          confirm: bool = False) -> ModelVersion:
    """Make `version` the project's current model of its kind (one transaction). A version
    with warnings (its run may have learned nothing) needs ``confirm``; the audit event
    records what was confirmed. So does a reward model worse than the current one on
    held-out accuracy."""
    worse_than = worse_than_current(version)
    if (version.warnings or worse_than is not None) and not confirm:
        raise PromotionNeedsConfirmation(version, worse_than)
    # One current reward model per axis (a harmlessness model does not replace the
    # helpfulness one); a version registered before axes counts as the primary axis's.
    currents = ModelVersion.objects.select_for_update().filter(
        _same_slot(version.project, version.kind, version.axis), project=version.project,
        kind=version.kind, is_current=True).exclude(pk=version.pk)
    previous = currents.order_by("-id").first()
    currents.update(is_current=False)
    ModelVersion.objects.filter(pk=version.pk).update(is_current=True)
    version.refresh_from_db()
    audit(actor=actor, project=version.project, action=f"model.promote_{version.kind}",
          target=version, before={"current": str(previous) if previous else None},
          after={"current": str(version), **({"confirmed_warnings": version.warnings} if version.warnings else {}),
                 **({"confirmed_worse_than": str(worse_than)} if worse_than is not None else {})})
    if version.kind == ModelVersion.Kind.REWARD and _is_primary(version.project, version.axis):
        # Re-score the open items with the new model (the RM column, uncertain_first): the
        # primary axis's reward model is the one that scores candidates.
        from core.runs import send_run_task

        version_id = version.pk
        transaction.on_commit(lambda: send_run_task(RESCORE_TASK, version_id))
    event_emit(project=version.project, type=EventType.MODEL_PROMOTED,
               path=f"/api/projects/{version.project_id}/model-versions",
               data={"model_version": version.pk, "kind": version.kind, "name": version.name,
                     "version": version.version, "previous": previous.pk if previous else None})
    return version


def _is_primary(project: Project, axis: str) -> bool:
    return axis in ("", axes_from_config(project.axes)[0].key)


def _same_slot(project: Project, kind: str, axis: str) -> Q:
    """The versions that compete with one of this kind and axis for "current": policies
    all together, reward models per axis (blank, from before axes, is the primary axis)."""
    if kind != ModelVersion.Kind.REWARD:
        return Q()
    if _is_primary(project, axis):
        return Q(axis__in=["", axes_from_config(project.axes)[0].key])
    return Q(axis=axis)


def current_model(project: Project, kind: str, *, axis: str = "",
                  exclude: ModelVersion | None = None) -> ModelVersion | None:
    """The current policy, or the current reward model of `axis` (default: the primary
    axis's, the one that scores candidates, routes items and is RL's default reward)."""
    versions = ModelVersion.objects.filter(_same_slot(project, kind, axis), project=project,
                                           kind=kind, is_current=True)
    if exclude is not None:
        versions = versions.exclude(pk=exclude.pk)
    return versions.order_by("-id").first()


def candidates_score(*, version: ModelVersion, candidate_ids: list[int]) -> int:
    """Score candidates with a reward model and refresh their items' uncertainty (the
    gap between the two best scores: small means the model can't tell them apart)."""
    from training.engine.reward import RewardScorer

    candidates = list(Candidate.objects.filter(pk__in=candidate_ids).select_related("prompt"))
    if not candidates:
        return 0
    scorer = RewardScorer.load(artifact_local(version.adapter_path))
    scores = scorer.score([c.prompt.messages for c in candidates], [c.text for c in candidates])
    CandidateScore.objects.bulk_create(
        [CandidateScore(candidate=c, model_version=version, score=s)
         for c, s in zip(candidates, scores, strict=True)],
        update_conflicts=True, unique_fields=["candidate", "model_version"], update_fields=["score"],
    )
    by_candidate = dict(CandidateScore.objects.filter(model_version=version).filter(
        candidate__items__in=Item.objects.filter(candidates__in=candidate_ids)
    ).values_list("candidate_id", "score"))
    for item in Item.objects.filter(candidates__in=candidate_ids).distinct().prefetch_related(
            "item_candidates"):
        top = sorted((by_candidate[ic.candidate_id] for ic in item.item_candidates.all()
                      if ic.candidate_id in by_candidate), reverse=True)
        if len(top) >= 2:
            Item.objects.filter(pk=item.pk).update(uncertainty=top[0] - top[1])
    return len(scores)


def undecided_items_rescore(*, version: ModelVersion) -> int:
    """After a reward model is promoted: score the candidates of the project's undecided
    items (open, complete, disputed) with it, chunk by chunk, refreshing each item's
    uncertainty. Does nothing once another version is current; a candidate already scored
    by this version is skipped, so a redelivered task only finishes the rest."""
    undecided = Item.objects.filter(project=version.project, status__in=[
        Item.Status.OPEN, Item.Status.COMPLETE, Item.Status.DISPUTED])
    todo = list(Candidate.objects.filter(items__in=undecided).exclude(scores__model_version=version)
                .distinct().order_by("id").values_list("id", flat=True))
    scored = 0
    for start in range(0, len(todo), RESCORE_CHUNK):
        if not ModelVersion.objects.filter(pk=version.pk, is_current=True).exists():
            break
        scored += candidates_score(version=version, candidate_ids=todo[start:start + RESCORE_CHUNK])
    return scored


HEAD_TO_HEAD_MAX_PAIRS = 5000


def compare_with_current(*, version: ModelVersion, validation_file: Path) -> dict[str, Any] | None:
    """Head to head on the new reward model's held-out pairs (worker side): both it and the
    project's current reward model score every pair; a "win" is a pair the new model orders
    as the labels do and the current one does not. Stored in the version's metrics as
    `vs_current` (the models page shows it). None when there is no current model to compare."""
    import pyarrow.parquet as pq

    from training.engine.reward import RewardScorer

    current = current_model(version.project, ModelVersion.Kind.REWARD, axis=version.axis, exclude=version)
    if current is None or not str(validation_file).endswith(".parquet"):
        return None
    rows = pq.read_table(validation_file, columns=["prompt", "chosen", "rejected"]).to_pylist()
    rows = rows[:HEAD_TO_HEAD_MAX_PAIRS]
    if not rows:
        return None
    prompts = [r["prompt"] for r in rows]

    def right(model_dir: str) -> list[bool]:
        scorer = RewardScorer.load(artifact_local(model_dir))
        chosen = scorer.score(prompts, [r["chosen"] for r in rows])
        rejected = scorer.score(prompts, [r["rejected"] for r in rows])
        return [c > r for c, r in zip(chosen, rejected, strict=True)]

    new, old = right(version.adapter_path), right(current.adapter_path)
    wins = sum(n and not o for n, o in zip(new, old, strict=True))
    losses = sum(o and not n for n, o in zip(new, old, strict=True))
    result = {"version": current.pk, "name": str(current), "pairs": len(rows), "wins": wins, "losses": losses,
              "win_rate": wins / (wins + losses) if wins + losses else None,
              "accuracy": sum(new) / len(rows), "current_accuracy": sum(old) / len(rows)}
    ModelVersion.objects.filter(pk=version.pk).update(metrics={**version.metrics, "vs_current": result})
    return result
