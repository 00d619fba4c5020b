"""AI judges measured like people: on the demo-simulated project (three simulated
annotators, one careless), a judge that sees each answer's latent quality agrees with
the careful annotators and not with the careless one, who still stands out among the
people; a registered reward model as judge; the API and the console pages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from core.runs import Run, run_claim
from guidelines.services import guidelines_sync
from judges.metrics import judge_figures
from judges.models import Judge, JudgeRanking, JudgeRun
from judges.services import judge_create, judge_run_create, judge_run_execute
from labeling.demo import demo_simulated_project
from labeling.models import AnnotatorQuality, Candidate, Project, Role
from labeling.services.quality import quality_refresh
from labeling.simulate import latent_quality
from tests.factories import MembershipFactory, UserFactory
from tests.judge_stub import JudgeStub, judge_stub


@pytest.fixture
def stub(settings) -> Iterator[JudgeStub]:  # noqa: ANN001
    with judge_stub() as running:
        settings.GENERATION_ENDPOINTS = {"stub": {"base_url": running.url, "allow_private": True}}
        yield running


@pytest.fixture
def simulated(db: None) -> Project:
    guidelines_sync()
    project = demo_simulated_project()
    quality_refresh(project=project)
    return project


def run_judge(judge: Judge) -> JudgeRun:
    run = judge_run_create(judge=judge, actor=None, enqueue=False)
    judge_run_execute(run_claim(JudgeRun, run.pk))
    run.refresh_from_db()
    assert run.status == Run.Status.DONE, run.error
    return run


def test_on_the_simulated_project_the_judge_agrees_with_careful_annotators_and_the_careless_one_stands_out(
        stub, simulated) -> None:  # noqa: ANN001
    quality = {}
    for text, candidate_id in Candidate.objects.filter(prompt__project=simulated).values_list("text", "id"):
        quality.setdefault(text, latent_quality(candidate_id))
    # A judge that sees the answers' true quality (what the simulated people perceive with noise).
    stub.prefer = lambda texts: [[i] for i in sorted(range(len(texts)), key=lambda i: -quality[texts[i]])]
    judge = judge_create(project=simulated, actor=None, name="oracle", kind="endpoint", endpoint="stub",
                         model="judge-model")

    run_judge(judge)

    figures = judge_figures(judge)["all"]
    users = dict(simulated.memberships.values_list("user__username", "user_id"))
    agreement = {name: figures.per_annotator[users[name]]["agreement"]
                 for name in ("sim-annotator1", "sim-annotator2", "sim-annotator3")}
    careless = agreement.pop("sim-annotator3")
    assert all(careless < careful - 0.1 for careful in agreement.values()), (careless, agreement)
    assert figures.consensus_agreement["mean"] > 0.7 and figures.consensus_agreement["ci"] is not None
    assert figures.human_human["n"] == figures.judge_human["n"] > 20
    # The judge's rankings change nothing of the people's own figures: the careless one still stands out.
    before = {q.annotator.username: q.loo_agreement
              for q in AnnotatorQuality.objects.filter(project=simulated, period="all").select_related("annotator")}
    quality_refresh(project=simulated)
    after = {q.annotator.username: q.loo_agreement
             for q in AnnotatorQuality.objects.filter(project=simulated, period="all").select_related("annotator")}
    assert after == before and min(after, key=after.get) == "sim-annotator3"
    # ... and the console shows the judge's agreement with each of them.
    admin = UserFactory(username="sim-admin")
    MembershipFactory(user=admin, project=simulated, role=Role.ADMIN)
    client = Client()
    client.force_login(admin)
    page = client.get(f"/console/projects/{simulated.pk}/judges").content.decode()
    assert "Agreement of oracle with each annotator" in page
    for name, value in [*agreement.items(), ("sim-annotator3", careless)]:
        assert f"{name}</th><td>{figures.per_annotator[users[name]]['items']}</td><td>{value:.3f}" in page
    annotators = client.get(f"/console/projects/{simulated.pk}/annotators").content.decode()
    assert "AI judge (v1)" in annotators and "oracle" in annotators
    dashboard = client.get(f"/console/projects/{simulated.pk}/").content.decode()
    assert "Judge–human agreement next to human–human agreement" in dashboard


def test_a_registered_reward_model_ranks_by_its_scores(simulated, tiny_model, settings) -> None:  # noqa: ANN001
    from training.artifacts import artifact_local
    from training.engine.reward import RewardScorer
    from training.models import DatasetSnapshot, ModelVersion, TrainingRun
    from training.runs import training_run_create, training_run_execute
    from training.snapshots import snapshot_build, snapshot_create

    settings.TORCH_NUM_THREADS = 1
    snapshot = snapshot_create(project=simulated, kinds=["pairs"], formats=["parquet"], enqueue=False)
    snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
    snapshot.refresh_from_db()
    run = training_run_create(project=simulated, kind="reward", snapshot=snapshot, enqueue=False,
                              config={"max_steps": 2, "per_device_train_batch_size": 4, "max_length": 128,
                                      "logging_steps": 1, "save_steps": 100})
    training_run_execute(run_claim(TrainingRun, run.pk))
    version = ModelVersion.objects.get(source_run=run)
    judge = judge_create(project=simulated, actor=None, name="rm", kind="reward_model", reward_version=version)

    judge_run = run_judge(judge)

    rows = list(JudgeRanking.objects.filter(judge=judge).select_related("item__prompt"))
    assert len(rows) == simulated.items.count() and all(r.status == "ranked" for r in rows)
    scorer = RewardScorer.load(artifact_local(version.adapter_path))
    row = rows[0]
    ids = [c for tier in row.tiers for c in tier]
    texts = dict(Candidate.objects.filter(pk__in=ids).values_list("id", "text"))
    scores = scorer.score([row.item.prompt.messages] * len(ids), [texts[c] for c in ids])
    assert ids == [c for _, c in sorted(zip(scores, ids, strict=True), key=lambda p: -p[0])]
    assert 0 <= row.confidence <= 1 and judge_run.progress["items_per_s"] > 0
    assert judge_figures(judge)["all"].judge_human["n"] > 0


def test_a_reward_model_of_another_project_is_refused(simulated, project) -> None:  # noqa: ANN001
    from core.errors import DomainError
    from training.models import ModelVersion

    version = ModelVersion.objects.create(project=project, kind="reward", name="x", version=1, base_model="m")
    with pytest.raises(DomainError, match="registered reward model of this project"):
        judge_create(project=simulated, actor=None, name="rm", kind="reward_model", reward_version=version)


def test_api_admins_configure_and_run_reviewers_read(stub, as_user, project, project_admin, reviewer,
                                                     outsider, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    url = f"/api/projects/{project.pk}/judges"
    body = {"name": "j", "kind": "endpoint", "endpoint": "stub", "model": "judge-model"}

    assert as_user(reviewer).post(url, body, format="json").status_code == 403
    assert as_user(outsider).post(url, body, format="json").status_code == 404
    refused = as_user(project_admin).post(url, {**body, "endpoint": "https://evil.example/v1"}, format="json")
    assert refused.status_code == 400 and "unknown endpoint" in refused.json()["detail"]
    unknown = as_user(project_admin).post(url, {**body, "base_url": "https://evil.example/v1"}, format="json")
    assert unknown.status_code == 400
    created = as_user(project_admin).post(url, body, format="json")
    assert created.status_code == 201, created.json()
    judge_id = created.json()["id"]
    assert as_user(reviewer).get(url).json()[0]["name"] == "j"
    changed = as_user(project_admin).patch(f"/api/judges/{judge_id}", {"temperature": 0.5}, format="json")
    assert changed.json()["version"] == 2
    with django_capture_on_commit_callbacks(execute=True):
        started = as_user(project_admin).post(f"/api/judges/{judge_id}/runs", {}, format="json")
    assert started.status_code == 202  # eager Celery in unit tests: the task ran
    run = as_user(reviewer).get(f"/api/judge-runs/{started.json()['id']}").json()
    assert run["status"] == "done"
    assert as_user(reviewer).post(f"/api/judge-runs/{run['id']}/cancel").status_code == 403
    assert as_user(reviewer).get(f"/api/judges/{judge_id}/figures").status_code == 200
    assert as_user(outsider).get(f"/api/judges/{judge_id}/rankings").status_code == 404


def test_a_local_model_judge_runs_and_its_unparsable_answers_are_kept_as_skips(project, tiny_model, settings) -> None:  # noqa: ANN001
    from tests.factories import make_items

    settings.TORCH_NUM_THREADS = 1
    [item] = make_items(project, 1, k=2)
    judge = judge_create(project=project, actor=None, name="tiny", kind="local", model="builtin-tiny",
                         max_tokens=8, temperature=1.0)

    run = run_judge(judge)

    row = JudgeRanking.objects.get(judge=judge, item=item)
    # The built-in tiny model writes no RANKING line: asked twice, then a skip with both answers kept.
    assert row.status == "skipped" and row.judgements[0]["attempts"] == 2
    assert len(row.judgements[0]["texts"]) == 2 and row.completion_tokens > 0
    assert run.progress["skipped"] == 1


def test_an_admin_pauses_a_judge_in_the_console_and_a_reviewer_cannot(stub, project, project_admin, reviewer) -> None:  # noqa: ANN001
    judge = judge_create(project=project, actor=None, name="j", kind="endpoint", endpoint="stub", model="m")
    url = f"/console/projects/{project.pk}/judges"
    as_reviewer = Client()
    as_reviewer.force_login(reviewer)
    assert as_reviewer.post(url, {"pause": judge.pk}).status_code == 403
    as_admin = Client()
    as_admin.force_login(project_admin)

    assert as_admin.post(url, {"pause": judge.pk}).status_code == 302

    assert not Judge.objects.get(pk=judge.pk).active
    assert "Activate j" in as_admin.get(url).content.decode()
    from labeling.models import AuditEvent

    assert AuditEvent.objects.filter(action="judge.update", actor=project_admin).exists()
