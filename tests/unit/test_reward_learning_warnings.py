"""Issue #24: a reward run that learned nothing ends done, says so everywhere (the run's
results, the registered version, the API, the Runs and Models pages, `manage.py train`)
and its model is promoted only when someone confirms. The engine is replaced by one that
reports a flat ln 2 loss and a chance accuracy, as the default LoRA run on HH-RLHF did;
the engine's own tests show the learning (tests/engine/test_reward_defaults.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from core.errors import DomainError
from core.runs import Run, run_claim
from labeling.models import AuditEvent, Project
from training.models import DatasetSnapshot, ModelVersion, TrainingMetric, TrainingRun
from training.registry import model_version_promote
from training.runs import training_run_create, training_run_execute

FLAT = {"status": "completed", "global_step": 116, "train_loss": 0.6930, "final_train_loss": 0.6931,
        "eval": {"pairs": 456, "accuracy": 0.529, "mean_margin": 0.001},
        "resolved": {"use_lora": True, "learning_rate": 0.0001}, "held_out": {"source": "file", "pairs": 456}}
LEARNED = {"status": "completed", "global_step": 116, "train_loss": 0.55, "final_train_loss": 0.52,
           "eval": {"pairs": 456, "accuracy": 0.658, "mean_margin": 0.4}}


def engine_reporting(results: dict[str, Any]) -> Any:
    """A stand-in for training.engine.cli.train: logs the run's loss at every 10th step,
    writes a model folder and returns ``results`` (with no verdict of its own)."""

    def train(kind: str, config: dict, train_file: Path, eval_file: Path | None, output: Path,
              on_metrics: Any = None, resume: bool = True) -> dict[str, Any]:
        on_metrics({"event": "start", "step": 0, "max_steps": results["global_step"]})
        for step in range(10, results["global_step"] + 1, 10):
            on_metrics({"event": "log", "step": step, "loss": results["final_train_loss"]})
        (Path(output) / "model").mkdir(parents=True, exist_ok=True)
        (Path(output) / "model" / "model.safetensors").write_bytes(b"weights")
        return {**results, "kind": kind, "history": [], "model_dir": str(Path(output) / "model")}

    return train


@pytest.fixture
def snapshot(project: Project) -> DatasetSnapshot:
    return DatasetSnapshot.objects.create(project=project, kinds=["pairs"], formats=["parquet"],
                                          status=Run.Status.DONE, files={"pairs-train.parquet": {"rows": 1840}})


def train(snapshot: DatasetSnapshot, results: dict[str, Any]) -> TrainingRun:
    run = training_run_create(project=snapshot.project, kind="reward", snapshot=snapshot, config={},
                              enqueue=False)
    with mock.patch("training.engine.cli.train", side_effect=engine_reporting(results)):
        training_run_execute(run_claim(TrainingRun, run.pk))
    run.refresh_from_db()
    return run


def logged_in(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def test_a_run_whose_loss_stays_at_ln_2_ends_done_with_warnings(snapshot, project_admin, as_user) -> None:  # noqa: ANN001
    run = train(snapshot, FLAT)

    assert run.status == Run.Status.DONE
    assert TrainingMetric.objects.filter(run=run, values__loss=0.6931).count() == 11
    warnings = run.results["warnings"]
    assert len(warnings) == 2
    assert "training loss ended at 0.6931, not below ln 2" in warnings[0]
    assert "held-out accuracy 0.529 on 456 pairs is not above chance" in warnings[1]
    version = ModelVersion.objects.get(source_run=run)
    assert version.warnings == warnings and version.metrics["eval_accuracy"] == 0.529
    api = as_user(project_admin)
    assert api.get(f"/api/training-runs/{run.pk}").json()["results"]["warnings"] == warnings
    assert api.get(f"/api/projects/{snapshot.project.pk}/model-versions").json()[0]["warnings"] == warnings
    for page in ("runs", "models"):
        html = logged_in(project_admin).get(f"/console/projects/{snapshot.project.pk}/{page}").content.decode()
        assert "May have learned nothing" in html and "not below ln 2" in html, page
    assert "LoRA, lr 0.0001" in logged_in(project_admin).get(f"/console/projects/{snapshot.project.pk}/runs"
                                                             ).content.decode()


def test_a_run_that_learned_has_no_warnings_and_promotes_at_once(snapshot, project_admin, as_user) -> None:  # noqa: ANN001
    run = train(snapshot, LEARNED)
    version = ModelVersion.objects.get(source_run=run)

    response = as_user(project_admin).post(f"/api/models/{version.pk}/promote", {}, format="json")

    assert run.results["warnings"] == [] and version.warnings == []
    assert response.status_code == 200 and response.json()["is_current"]
    html = logged_in(project_admin).get(f"/console/projects/{snapshot.project.pk}/runs").content.decode()
    assert "May have learned nothing" not in html


def test_the_service_promotes_a_flagged_version_only_when_confirmed(snapshot) -> None:  # noqa: ANN001
    version = ModelVersion.objects.get(source_run=train(snapshot, FLAT))

    with pytest.raises(DomainError, match="may have learned nothing"):
        model_version_promote(version=version, actor=None)
    version.refresh_from_db()
    assert not version.is_current

    model_version_promote(version=version, actor=None, confirm=True)
    version.refresh_from_db()
    assert version.is_current
    event = AuditEvent.objects.get(action="model.promote_reward")
    assert event.after["confirmed_warnings"] == version.warnings


def test_the_api_answers_409_until_the_promotion_is_confirmed(snapshot, project_admin, as_user) -> None:  # noqa: ANN001
    version = ModelVersion.objects.get(source_run=train(snapshot, FLAT))
    url = f"/api/models/{version.pk}/promote"
    api = as_user(project_admin)

    refused = api.post(url, {}, format="json")
    malformed = api.post(url, {"confirm": "yes"}, format="json")
    confirmed = api.post(url, {"confirm": True}, format="json")

    assert refused.status_code == 409 and refused.json()["code"] == "confirmation_required"
    assert "not below ln 2" in refused.json()["detail"]
    assert malformed.status_code == 400
    assert confirmed.status_code == 200 and confirmed.json()["is_current"]


def test_promotion_is_for_admins_of_the_project(snapshot, reviewer, outsider, as_user) -> None:  # noqa: ANN001
    version = ModelVersion.objects.get(source_run=train(snapshot, FLAT))
    url = f"/api/models/{version.pk}/promote"
    console = f"/console/projects/{snapshot.project.pk}/runs"
    body = {"promote": version.pk, "confirm": "1"}

    assert as_user(reviewer).post(url, {"confirm": True}, format="json").status_code == 403
    assert as_user(outsider).post(url, {"confirm": True}, format="json").status_code == 404
    assert logged_in(reviewer).post(console, body).status_code == 403
    assert logged_in(outsider).post(console, body).status_code == 404
    version.refresh_from_db()
    assert not version.is_current


def test_the_console_asks_for_confirmation_before_promoting_a_flagged_version(snapshot, project_admin) -> None:  # noqa: ANN001
    version = ModelVersion.objects.get(source_run=train(snapshot, FLAT))
    url = f"/console/projects/{snapshot.project.pk}/runs"
    admin = logged_in(project_admin)

    asked = admin.post(url, {"promote": version.pk})
    version.refresh_from_db()
    assert asked.status_code == 200 and not version.is_current
    html = asked.content.decode()
    assert "Promote anyway" in html and 'name="confirm" value="1"' in html and "not above chance" in html

    confirmed = admin.post(url, {"promote": version.pk, "confirm": "1"})
    version.refresh_from_db()
    assert confirmed.status_code == 302 and version.is_current


def test_manage_py_train_prints_the_warnings_and_promotes_only_with_confirm(snapshot, capsys) -> None:  # noqa: ANN001
    args = ["train", "--project", snapshot.project.slug, "--kind", "reward", "--snapshot", str(snapshot.pk),
            "--promote"]
    with mock.patch("training.engine.cli.train", side_effect=engine_reporting(FLAT)), \
            pytest.raises(CommandError, match="not promoted: .* may have learned nothing"):
        call_command(*args)
    assert "WARNING: " in capsys.readouterr().out
    assert not ModelVersion.objects.filter(is_current=True).exists()

    with mock.patch("training.engine.cli.train", side_effect=engine_reporting(FLAT)):
        call_command(*args, "--confirm")
    current = ModelVersion.objects.get(is_current=True)
    assert current.version == 2 and current.warnings
    assert math.isclose(current.metrics["final_train_loss"], 0.6931)
