"""Erasing a prompt: afterwards no table and no file holds its text; annotator figures
equal a fresh recompute; every snapshot that held it is marked, its files deleted, and
its download answers 410 Gone with a link to rebuild; a rebuild leaves it out; model
versions trained on it are flagged; snapshots that never held it are untouched."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from core.errors import DomainError
from erasure.models import ErasureRecord
from erasure.services import erasure_hash
from erasure.services.prompts import prompt_erase
from labeling.models import (
    AnnotatorQuality,
    AuditEvent,
    Candidate,
    ExternalPreference,
    Item,
    Membership,
    Project,
    Prompt,
    Ranking,
)
from labeling.selectors.dashboard import project_agreement_summary
from labeling.services.items import items_create_for_prompt
from labeling.services.quality import quality_refresh
from tests.factories import CandidateFactory, PromptFactory, UserFactory, make_items
from tests.unit.test_snapshots import build
from training.models import CandidateScore, DatasetSnapshot, HubPush, ModelVersion
from training.runs import training_run_create

SECRET = "Nightingale"  # in the prompt and every answer; nowhere else


@pytest.fixture
def labelled(db: None) -> Project:
    project = Project.objects.create(name="Sim", slug="sim", is_demo=True, overlap=3)
    make_items(project, 5, k=3)
    return project


def add_secret_prompt(project: Project) -> Prompt:
    prompt = PromptFactory(project=project, messages=[
        {"role": "user", "content": f"What is the launch code of Project {SECRET}?"}])
    ids = [CandidateFactory(prompt=prompt, text=f"{SECRET} answer {n}", model_name="m").pk for n in range(3)]
    items_create_for_prompt(project=project, prompt_id=prompt.pk, candidate_ids=ids)
    ExternalPreference.objects.create(project=project, prompt=prompt, chosen_id=ids[0], rejected_id=ids[1],
                                      source="hh", dedupe_key="x1")
    return prompt


def annotate(project: Project) -> None:
    call_command("simulate_annotators", "--project", project.slug, "--create", "3", "--noise", "0.1",
                 stdout=io.StringIO())


def database_dump() -> str:
    out = io.StringIO()
    call_command("dumpdata", stdout=out)
    return out.getvalue()


def artifact_text(root: Path) -> str:
    """Every file under the artifact root as text; Parquet (compressed) read as rows."""
    parts = []
    for path in root.rglob("*"):
        if path.suffix == ".parquet":
            parts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
        elif path.is_file():
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


def stored_quality(project: Project) -> list[tuple]:
    return sorted(AnnotatorQuality.objects.filter(project=project).values_list(
        "annotator_id", "period", "rankings", "loo_agreement", "tie_rate", "position_bias"))


@pytest.fixture
def world(labelled: Project) -> dict:
    """A snapshot built before the prompt existed, one that holds it, a reward model
    trained on that one and its scores of the prompt's answers."""
    annotate(labelled)
    clean = build(labelled, kinds=["pairs"], formats=["jsonl"])
    prompt = add_secret_prompt(labelled)
    call_command("simulate_annotators", "--project", labelled.slug, "--noise", "0.1", stdout=io.StringIO())
    assert Item.objects.get(prompt=prompt).status == "accepted"
    holding = build(labelled, kinds=["pairs", "sft", "dpo", "raw"], formats=["jsonl", "parquet"],
                    filters={"include_external": True})
    parquet_only = build(labelled, kinds=["pairs"], formats=["parquet"])  # compressed: read as rows
    version = ModelVersion.objects.create(project=labelled, kind="reward", name="rm", version=1,
                                          base_model="tiny", snapshot=holding)
    for candidate in Candidate.objects.filter(prompt=prompt):
        CandidateScore.objects.create(candidate=candidate, model_version=version, score=0.5)
    HubPush.objects.create(project=labelled, snapshot=holding, repo_id="org/data", status="done")
    quality_refresh(project=labelled)
    admin = UserFactory(username="padmin")
    Membership.objects.create(user=admin, project=labelled, role="admin")
    return {"project": labelled, "prompt": prompt, "clean": clean, "holding": holding, "parquet_only": parquet_only,
            "version": version, "admin": admin}


def test_after_erasure_no_table_or_file_holds_the_prompt(world, as_user, settings) -> None:  # noqa: ANN001
    project, prompt, holding = world["project"], world["prompt"], world["holding"]
    assert SECRET in database_dump() and SECRET in artifact_text(settings.ARTIFACT_ROOT)
    rankings_before = Ranking.objects.filter(item__project=project).count()
    accepted_before = project_agreement_summary(project=project)["items"]["accepted"]
    admin = as_user(world["admin"])

    preview = admin.get(f"/api/prompts/{prompt.pk}/erasure").json()
    wrong = admin.post(f"/api/prompts/{prompt.pk}/erasure", {"confirm": prompt.pk + 1}, format="json")
    kept = Prompt.objects.filter(pk=prompt.pk).exists()
    erased = admin.post(f"/api/prompts/{prompt.pk}/erasure", {"confirm": prompt.pk}, format="json")

    assert wrong.status_code == 400 and kept
    assert erased.status_code == 200, erased.content
    assert preview["snapshots"] == [holding.pk, world["parquet_only"].pk]
    assert preview["model_versions"] == [world["version"].pk]
    assert preview["counts"] == {"candidates": 3, "items": 1, "assignments": 3, "rankings": 3,
                                 "demonstrations": 0, "external_preferences": 1, "reward_scores": 3,
                                 "hub_copies_to_delete_by_hand": 1}
    assert SECRET.lower() not in database_dump().lower()
    assert SECRET.lower() not in artifact_text(settings.ARTIFACT_ROOT).lower()
    assert Ranking.objects.filter(item__project=project).count() == rankings_before - 3
    # Statistics: what is stored equals a fresh recompute over what is left.
    stored = stored_quality(project)
    quality_refresh(project=project)
    assert stored == stored_quality(project) and stored
    assert project_agreement_summary(project=project)["items"]["accepted"] == accepted_before - 1
    # The snapshot that held it: marked, files gone, 410 with a rebuild link.
    holding.refresh_from_db()
    assert holding.contains_erased and not Path(holding.path).exists()
    gone = admin.get(f"/api/datasets/{holding.pk}/files/pairs-train.jsonl")
    assert gone.status_code == 410
    assert gone.json()["rebuild"] == f"/api/datasets/{holding.pk}/rebuild"
    assert gone["Link"] == f'</api/datasets/{holding.pk}/rebuild>; rel="rebuild"'
    assert admin.get(f"/api/datasets/{holding.pk}").json()["contains_erased"] is True
    # The one built before the prompt existed is untouched.
    clean = world["clean"]
    clean.refresh_from_db()
    assert not clean.contains_erased
    assert admin.get(f"/api/datasets/{clean.pk}/files/pairs-train.jsonl").status_code == 200
    # The model trained on it is flagged, not deleted; nothing new trains on the snapshot.
    assert ModelVersion.objects.get(pk=world["version"].pk).trained_on_erased
    with pytest.raises(DomainError, match="rebuild"):
        training_run_create(project=project, kind="reward", snapshot=holding, config={})
    # The record and the audit row hold no text.
    record = ErasureRecord.objects.get()
    assert record.subject_hashes == {"content_hash": erasure_hash(prompt.content_hash)}
    assert (record.snapshots, record.model_versions) == ([holding.pk, world["parquet_only"].pk],
                                                         [world["version"].pk])
    assert AuditEvent.objects.filter(action="prompt.erase", target_id=str(prompt.pk),
                                     actor=world["admin"]).count() == 1


def test_a_rebuild_makes_a_new_snapshot_without_the_prompt(world, as_user, settings,  # noqa: ANN001
                                                          django_capture_on_commit_callbacks) -> None:
    holding, admin = world["holding"], as_user(world["admin"])
    admin.post(f"/api/prompts/{world['prompt'].pk}/erasure", {"confirm": world["prompt"].pk}, format="json")

    with django_capture_on_commit_callbacks(execute=True):  # the (eager) build runs at commit
        rebuilt = admin.post(f"/api/datasets/{holding.pk}/rebuild")
    again = admin.post(f"/api/datasets/{world['clean'].pk}/rebuild")

    assert rebuilt.status_code == 202, rebuilt.content
    new = admin.get(f"/api/datasets/{rebuilt.json()['id']}").json()
    assert new["status"] == "done" and not new["contains_erased"]
    assert (new["kinds"], new["formats"], new["filters"]) == (holding.kinds, holding.formats, holding.filters)
    assert new["counts"]["pairs-train"] < holding.counts["pairs-train"]
    assert new["counts"]["pairs-train"] == world["clean"].counts["pairs-train"]
    assert SECRET.lower() not in artifact_text(settings.ARTIFACT_ROOT).lower()
    assert again.status_code == 400  # nothing erased in it: nothing to rebuild


def test_only_the_projects_admins_erase_its_prompts(world, as_user, reviewer, outsider) -> None:  # noqa: ANN001
    prompt = world["prompt"]
    Membership.objects.create(user=reviewer, project=world["project"], role="reviewer")

    assert as_user(reviewer).post(f"/api/prompts/{prompt.pk}/erasure", {"confirm": prompt.pk},
                                  format="json").status_code == 403
    assert as_user(outsider).get(f"/api/prompts/{prompt.pk}/erasure").status_code == 404
    assert as_user(reviewer).post(f"/api/datasets/{world['holding'].pk}/rebuild").status_code == 403
    assert Prompt.objects.filter(pk=prompt.pk).exists()


def test_cli_shows_then_erases(world) -> None:  # noqa: ANN001
    prompt = world["prompt"]
    shown = io.StringIO()
    call_command("erase_prompt", str(prompt.pk), stdout=shown)
    assert "nothing changed" in shown.getvalue()
    assert f"[{world['holding'].pk}, {world['parquet_only'].pk}]" in shown.getvalue()
    assert Prompt.objects.filter(pk=prompt.pk).exists()

    call_command("erase_prompt", str(prompt.pk), "--yes", stdout=io.StringIO())
    assert not Prompt.objects.filter(pk=prompt.pk).exists()
    assert AuditEvent.objects.get(action="prompt.erase", actor=None).note == "origin: cli"


def test_a_snapshot_being_built_is_cancelled_and_leaves_no_files(world) -> None:  # noqa: ANN001
    from core.runs import run_claim
    from training.snapshots import snapshot_build, snapshot_create, snapshot_dir

    project, prompt = world["project"], world["prompt"]
    building = run_claim(DatasetSnapshot, snapshot_create(project=project, kinds=["pairs"], formats=["jsonl"],
                                                          enqueue=False).pk)
    assert building.status == "running"

    record = prompt_erase(prompt=prompt, actor=None)
    snapshot_build(building)  # the worker goes on: it stops at its first step

    building.refresh_from_db()
    assert building.pk in record.snapshots
    assert (building.status, building.contains_erased) == ("cancelled", True)
    assert not snapshot_dir(building).exists()
