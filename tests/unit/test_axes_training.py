"""One reward model per label axis (issue #21): a reward run names its axis and trains on
a snapshot built for it, the registered version records the axis, RL runs combine per-axis
reward models (Llama 2's rule) with the combination recorded, and the console's reward
models page puts each axis's accuracy beside that axis's agreement ceiling.

Snapshots are rows written here (status done, file counts): these tests check what the
platform decides from them, not the export (tests/unit/test_training_runs.py trains)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from core.errors import DomainError
from labeling.models import AuditEvent, Item, Membership, Role
from labeling.services.projects import project_update
from tests.factories import UserFactory, make_items
from tests.unit.test_axes import _ids_by_text, _members, _rank
from training.console_models import agreement_ceiling
from training.models import DatasetSnapshot, ModelVersion, TrainingRun
from training.registry import model_version_register, worse_than_current
from training.runs import _checked_models, training_run_create

LLAMA2 = {"rule": "llama2", "safety_threshold": 0.15}


def snapshot_row(project, axis: str | None = None) -> DatasetSnapshot:  # noqa: ANN001
    filters = {"include_external": True, **({"axis": axis} if axis else {})}
    files = {"pairs-train.parquet": {"rows": 6}, "pairs-validation.parquet": {"rows": 2},
             "sft-train.parquet": {"rows": 6}}
    return DatasetSnapshot.objects.create(project=project, kinds=["pairs", "sft"], formats=["parquet"],
                                          status="done", filters=filters, files=files)


def reward_version(project, axis: str, accuracy: float = 0.7, snapshot=None) -> ModelVersion:  # noqa: ANN001
    number = ModelVersion.objects.filter(project=project).count() + 1
    return ModelVersion.objects.create(
        project=project, kind="reward", name=f"{project.slug}-reward", version=number, base_model="minilm",
        adapter_path=f"/artifacts/runs/{number}/model", axis=axis, snapshot=snapshot,
        metrics={"eval_accuracy": accuracy, "eval_pairs": 40})


@pytest.fixture
def hh(project):  # noqa: ANN001, ANN201
    return project_update(project=project, actor=None, axes="helpful_harmless")


# --------------------------------------------------------------------------- reward runs name their axis


def test_a_reward_run_learns_the_primary_axis_unless_it_names_another(project, hh) -> None:  # noqa: ANN001
    primary = training_run_create(project=hh, kind="reward", snapshot=snapshot_row(hh), config={}, enqueue=False)
    harmless = training_run_create(project=hh, kind="reward", snapshot=snapshot_row(hh, "harmless"),
                                   config={"axis": "harmless"}, enqueue=False)

    assert primary.config["axis"] == "helpful"
    assert harmless.config["axis"] == "harmless"
    assert AuditEvent.objects.filter(action="training.start", after__axis="harmless").count() == 1


def test_a_project_without_axes_trains_overall_as_before(project) -> None:  # noqa: ANN001
    run = training_run_create(project=project, kind="reward", snapshot=snapshot_row(project), config={},
                              enqueue=False)

    assert run.config["axis"] == "overall"


@pytest.mark.parametrize(("axis", "snapshot_axis", "message"), [
    ("safety", "harmless", "'safety' is not one of this project's axes"),
    (3, None, "3 is not one of"),
    ("harmless", None, "holds the 'helpful' axis's pairs, not 'harmless''s"),
    ("helpful", "harmless", "holds the 'harmless' axis's pairs, not 'helpful''s"),
    (None, "harmless", "holds the 'harmless' axis's pairs, not 'helpful''s"),
])
def test_a_reward_run_on_another_axis_or_snapshot_is_refused(hh, axis, snapshot_axis, message) -> None:  # noqa: ANN001
    config = {} if axis is None else {"axis": axis}
    with pytest.raises(DomainError, match=message):
        training_run_create(project=hh, kind="reward", snapshot=snapshot_row(hh, snapshot_axis), config=config,
                            enqueue=False)


def test_the_api_answers_400_for_a_bad_axis_and_shows_the_versions_axis(as_user, hh, project_admin) -> None:  # noqa: ANN001
    client = as_user(project_admin)
    url = f"/api/projects/{hh.pk}/training-runs"
    snapshot = snapshot_row(hh, "harmless")

    bad = client.post(url, {"kind": "reward", "snapshot": snapshot.pk, "config": {"axis": "helpful"}}, format="json")
    assert bad.status_code == 400 and "not 'helpful''s" in str(bad.json())
    good = client.post(url, {"kind": "reward", "snapshot": snapshot.pk, "config": {"axis": "harmless"}},
                       format="json")
    assert good.status_code == 202 and good.json()["config"]["axis"] == "harmless"

    reward_version(hh, "harmless")
    old = reward_version(hh, "")  # registered before axes: the primary axis
    versions = {v["id"]: v["axis"] for v in client.get(f"/api/projects/{hh.pk}/model-versions").json()}
    assert versions[old.pk] == "helpful" and sorted(versions.values()) == ["harmless", "helpful"]


def test_the_registered_version_records_its_axis(hh, settings, tmp_path: Path) -> None:  # noqa: ANN001
    run = training_run_create(project=hh, kind="reward", snapshot=snapshot_row(hh, "harmless"),
                              config={"axis": "harmless"}, enqueue=False)

    version = model_version_register(run=run, results={"eval": {"accuracy": 0.7, "pairs": 10}})

    assert version.axis == "harmless" and version.metrics["eval_accuracy"] == 0.7


def test_a_model_is_compared_with_the_current_one_of_its_own_axis_only(hh) -> None:  # noqa: ANN001
    current = reward_version(hh, "helpful", 0.9)
    ModelVersion.objects.filter(pk=current.pk).update(is_current=True)

    assert worse_than_current(reward_version(hh, "harmless", 0.6)) is None  # another axis: no verdict
    assert worse_than_current(reward_version(hh, "helpful", 0.6)) == current
    assert worse_than_current(reward_version(hh, "", 0.6)) == current  # blank: the primary axis


def test_each_axis_has_its_own_current_reward_model(hh, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    """Promoting the harmlessness model does not replace the helpfulness one; only the
    primary axis's model re-scores candidates and is the project's reward model."""
    from training.registry import current_model, model_version_promote

    old = reward_version(hh, "", 0.6)  # registered before axes: the primary axis's
    helpful = reward_version(hh, "helpful", 0.7)
    harmless = reward_version(hh, "harmless", 0.8)
    with django_capture_on_commit_callbacks() as rescore:
        model_version_promote(version=old, actor=None)
    assert len(rescore) == 1
    model_version_promote(version=helpful, actor=None)
    with django_capture_on_commit_callbacks() as rescore:
        model_version_promote(version=harmless, actor=None)
    assert rescore == []  # the harmless model scores no candidates

    current = set(ModelVersion.objects.filter(is_current=True).values_list("pk", flat=True))
    assert current == {helpful.pk, harmless.pk}  # the blank one stepped aside for helpful
    assert current_model(hh, "reward") == helpful
    assert current_model(hh, "reward", axis="harmless") == harmless


# --------------------------------------------------------------------------- RL combines per-axis reward models


def test_an_rl_run_combines_one_reward_model_per_axis(hh) -> None:  # noqa: ANN001
    helpful, harmless = reward_version(hh, "helpful"), reward_version(hh, "harmless")

    run = training_run_create(project=hh, kind="rl", snapshot=snapshot_row(hh), enqueue=False, config={
        "reward_models": {"helpful": helpful.pk, "harmless": harmless.pk}, "combination": LLAMA2})

    assert run.config["reward_models"] == {"helpful": helpful.adapter_path, "harmless": harmless.adapter_path}
    # The axes' purposes chose which model is the safety one; recorded in the run config.
    assert run.config["combination"] == {"rule": "llama2", "safety_axis": "harmless", "helpful_axis": "helpful",
                                         "safety_threshold": 0.15}
    assert run.config["reward_model"] == "" and run.reward_version is None
    event = AuditEvent.objects.get(action="training.start")
    assert event.after["reward_models"] == {"helpful": helpful.pk, "harmless": harmless.pk}
    # The worker resolves each folder again from the registry.
    assert _checked_models(run)["reward_models"] == {"helpful": helpful.adapter_path,
                                                     "harmless": harmless.adapter_path}


def test_the_worker_refuses_a_folder_that_is_not_that_axis_model(hh) -> None:  # noqa: ANN001
    helpful, harmless = reward_version(hh, "helpful"), reward_version(hh, "harmless")
    run = training_run_create(project=hh, kind="rl", snapshot=snapshot_row(hh), enqueue=False, config={
        "reward_models": {"helpful": helpful.pk, "harmless": harmless.pk}, "combination": LLAMA2})
    TrainingRun.objects.filter(pk=run.pk).update(config={
        **run.config, "reward_models": {"helpful": harmless.adapter_path, "harmless": harmless.adapter_path}})
    run.refresh_from_db()

    with pytest.raises(DomainError, match="not a registered 'helpful' reward model"):
        _checked_models(run)


@pytest.mark.parametrize(("change", "message"), [
    ({"combination": {"rule": "mean"}}, "rule must be one of llama2"),
    ({"combination": {**LLAMA2, "safety_threshold": 2}}, "between 0 and 1"),
    ({"combination": None}, "needs a combination"),
    ({"reward_models": {"helpful": "H", "toxicity": "S"}}, "axis 'toxicity', not one of"),
    ({"reward_models": {"helpful": "S", "harmless": "S"}}, "learned the 'harmless' axis, not 'helpful'"),
    ({"reward_models": {"helpful": "H", "harmless": 999999}}, "must be the id of a reward model"),
    ({"reward_models": {"helpful": "H"}}, "two or more"),
])
def test_bad_combinations_are_refused(hh, change, message) -> None:  # noqa: ANN001
    ids = {"H": reward_version(hh, "helpful").pk, "S": reward_version(hh, "harmless").pk}
    config = {"reward_models": {"helpful": "H", "harmless": "S"}, "combination": LLAMA2, **change}
    config["reward_models"] = {k: ids.get(v, v) for k, v in config["reward_models"].items()}
    if config["combination"] is None:
        del config["combination"]

    with pytest.raises(DomainError, match=message):
        training_run_create(project=hh, kind="rl", snapshot=snapshot_row(hh), config=config, enqueue=False)


def test_the_api_answers_400_for_an_unknown_rule(as_user, hh, project_admin) -> None:  # noqa: ANN001
    ids = {"helpful": reward_version(hh, "helpful").pk, "harmless": reward_version(hh, "harmless").pk}
    response = as_user(project_admin).post(
        f"/api/projects/{hh.pk}/training-runs",
        {"kind": "rl", "snapshot": snapshot_row(hh).pk,
         "config": {"reward_models": ids, "combination": {"rule": "sum"}}}, format="json")

    assert response.status_code == 400 and "rule must be one of llama2" in str(response.json())
    assert not TrainingRun.objects.exists()


def test_axes_without_purposes_must_be_named(project) -> None:  # noqa: ANN001
    axes = [{"key": "overall"}, {"key": "tone"}]
    project = project_update(project=project, actor=None, axes=axes)
    ids = {"overall": reward_version(project, "overall").pk, "tone": reward_version(project, "tone").pk}
    config = {"reward_models": ids, "combination": LLAMA2}

    with pytest.raises(DomainError, match="combination.safety_axis: name the axis"):
        training_run_create(project=project, kind="rl", snapshot=snapshot_row(project), config=config,
                            enqueue=False)
    named = {**LLAMA2, "safety_axis": "tone", "helpful_axis": "overall"}
    run = training_run_create(project=project, kind="rl", snapshot=snapshot_row(project), enqueue=False,
                              config={**config, "combination": named})
    assert run.config["combination"]["safety_axis"] == "tone"


# --------------------------------------------------------------------------- console: each axis's ceiling


@pytest.fixture
def ranked_hh(as_user, project):  # noqa: ANN001, ANN201
    """Two items ranked by two people who agree on helpfulness on both and on
    harmlessness on one: accepted (the threshold is 0), so both are in a snapshot."""
    project = project_update(project=project, actor=None, axes="helpful_harmless", overlap=2,
                             agreement_threshold=0.0)
    make_items(project, 2)
    for n, person in enumerate(_members(project, 2)):
        for item_number in range(2):
            def build(assignment: dict, flip: bool = n == 1 and item_number == 0) -> dict:
                ids = _ids_by_text(assignment)
                order = sorted(ids)
                harmless = list(reversed(order)) if flip else order
                return {"axes": {"helpful": {"tiers": [[ids[t]] for t in order]},
                                 "harmless": {"tiers": [[ids[t]] for t in harmless]}},
                        "safety": {i: True for i in ids.values()}}
            _rank(as_user(person), project, build)
    assert Item.objects.filter(status=Item.Status.ACCEPTED).count() == 2
    return project


def test_the_ceiling_of_an_axis_is_its_agreement_from_the_labels(ranked_hh) -> None:  # noqa: ANN001
    snapshot = snapshot_row(ranked_hh, "harmless")
    stored = sorted(item.axes["harmless"]["agreement"] for item in Item.objects.all())

    helpful, harmless = agreement_ceiling(snapshot, "helpful"), agreement_ceiling(snapshot, "harmless")

    assert helpful["n"] == 2 and helpful["mean"] == 1.0
    assert harmless["n"] == 2 and harmless["mean"] == pytest.approx(sum(stored) / 2) and harmless["mean"] < 1.0
    assert harmless["ci"][0] < harmless["ci"][1]
    assert agreement_ceiling(snapshot) == helpful  # the primary axis by default


def test_the_reward_models_page_shows_each_axis_beside_its_ceiling(client, ranked_hh) -> None:  # noqa: ANN001
    admin = UserFactory(username="boss")
    Membership.objects.create(user=admin, project=ranked_hh, role=Role.ADMIN)
    reward_version(ranked_hh, "helpful", 0.81, snapshot_row(ranked_hh))
    reward_version(ranked_hh, "harmless", 0.64, snapshot_row(ranked_hh, "harmless"))
    client.force_login(admin)

    html = client.get(reverse("console:reward-models", args=[ranked_hh.pk])).content.decode()

    by_axis = html.split('id="reward-axes"')[1].split("</table>")[0]
    helpful = by_axis.split('data-axis="helpful"')[1].split("</tr>")[0]
    harmless = by_axis.split('data-axis="harmless"')[1].split("</tr>")[0]
    assert "0.810" in helpful and "1.000" in helpful
    assert "0.640" in harmless and "0.500" in harmless
    assert '<td class="axis">Harmless</td>' in html


def test_a_single_axis_project_sees_the_page_as_before(client, project) -> None:  # noqa: ANN001
    admin = UserFactory(username="boss")
    Membership.objects.create(user=admin, project=project, role=Role.ADMIN)
    reward_version(project, "overall", 0.75, snapshot_row(project))
    client.force_login(admin)

    html = client.get(reverse("console:reward-models", args=[project.pk])).content.decode()

    assert "0.750" in html and "reward-axes" not in html and 'class="axis"' not in html
    assert "<th>Axis</th>" not in html
