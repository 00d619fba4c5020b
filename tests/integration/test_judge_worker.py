"""A judge run on a real worker (the generate queue, Redis, PostgreSQL) against the local
OpenAI-compatible stub: every item ranked once, in two orders, nothing duplicated when
the task is delivered twice."""

from __future__ import annotations

import json

import pytest

from config.celery import app
from core.runs import Run, send_run_task
from judges.models import JudgeRanking, JudgeRun
from judges.services import judge_create, judge_run_create
from labeling.models import Item
from labeling.services.items import items_create_for_prompt
from tests.factories import CandidateFactory, PromptFactory
from tests.integration.conftest import Worker, wait_until
from tests.judge_stub import judge_stub

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_judge_runs_go_to_the_generate_queue() -> None:
    assert app.amqp.router.route({}, "judges.tasks.generate_judgements")["queue"].name == "generate"


def test_a_worker_judges_every_item_once(project, tmp_path, settings) -> None:  # noqa: ANN001
    for n in range(5):
        prompt = PromptFactory(project=project)
        ids = [CandidateFactory(prompt=prompt, text=f"{'x' * (i + 1)} {n}").pk for i in range(3)]
        items_create_for_prompt(project=project, prompt_id=prompt.pk, candidate_ids=ids)
    with judge_stub() as stub:
        endpoints = {"stub": {"base_url": stub.url, "allow_private": True}}
        settings.GENERATION_ENDPOINTS = endpoints
        worker = Worker(tmp_path / "worker.log", {"GENERATION_ENDPOINTS": json.dumps(endpoints)})
        try:
            judge = judge_create(project=project, actor=None, name="j", kind="endpoint", endpoint="stub",
                                 model="judge-model")
            run = judge_run_create(judge=judge, actor=None)
            wait_until(lambda: JudgeRun.objects.get(pk=run.pk).is_finished, timeout=120, what="the judge run")
            send_run_task(JudgeRun.task_name, run.pk)  # a duplicate message: the claim makes it a no-op
            wait_until(lambda: sum("generate_judgements" in line and "succeeded" in line
                                   for line in worker.output().splitlines()) == 2, timeout=60,
                       what="the duplicate message to be handled")
        finally:
            worker.stop()
    run.refresh_from_db()
    assert run.status == Run.Status.DONE, run.error + worker.output()[-2000:]
    assert JudgeRanking.objects.filter(judge=judge, status="ranked").count() == Item.objects.count() == 5
    assert len(stub.requests) == 10
