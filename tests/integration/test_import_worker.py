"""Imports through the API, processed by a real Celery worker on Redis and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from labeling.models import Candidate, ImportJob, Item, Prompt
from labeling.runs import Run, runs_sweep_stale
from tests.integration.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROWS = [{"prompt": f"Question {n}?", "candidates": [f"yes {n}", f"no {n}", f"maybe {n}"]}
        for n in range(50)]


def jsonl(rows: list) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def upload(client, project, content: bytes, name: str = "rows.jsonl") -> int:  # noqa: ANN001
    response = client.post(f"/api/projects/{project.pk}/imports",
                           {"file": SimpleUploadedFile(name, content)}, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def finished(job_id: int) -> bool:
    return ImportJob.objects.get(pk=job_id).is_finished


def test_worker_imports_an_upload_and_reimport_adds_nothing(
    celery_worker, as_user, project, project_admin,  # noqa: ANN001
) -> None:
    client = as_user(project_admin)

    first = upload(client, project, jsonl(ROWS))
    wait_until(lambda: finished(first), what="first import")
    second = upload(client, project, jsonl(ROWS))
    wait_until(lambda: finished(second), what="second import")

    reports = [ImportJob.objects.get(pk=i) for i in (first, second)]
    assert [job.status for job in reports] == ["done", "done"], celery_worker.output()[-2000:]
    assert reports[0].report["prompts_added"] == 50 and reports[0].report["items_added"] == 50
    assert reports[1].report["prompts_added"] == 0 and reports[1].report["prompts_skipped"] == 50
    assert (Prompt.objects.count(), Candidate.objects.count(), Item.objects.count()) == (50, 150, 50)


def test_concurrent_imports_of_one_file_never_duplicate(
    celery_worker, project, project_admin,  # noqa: ANN001
) -> None:
    from labeling.importing import prompts_import

    # One import through the worker while this process imports the same file directly.
    from tests.conftest import client_for

    job_id = upload(client_for(project_admin), project, jsonl(ROWS))
    path = Path(ImportJob.objects.get(pk=job_id).file_path)
    local = path.with_suffix(".copy")
    local.write_bytes(path.read_bytes())
    prompts_import(project=project, path=local)
    wait_until(lambda: finished(job_id), what="worker import")

    assert (Prompt.objects.count(), Candidate.objects.count(), Item.objects.count()) == (50, 150, 50)


def test_stale_run_is_requeued_by_the_sweep_and_completed(
    celery_worker, project, project_admin, settings,  # noqa: ANN001
) -> None:
    path = settings.UPLOAD_ROOT / "orphan.upload"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jsonl(ROWS[:5]))
    # A run whose worker died mid-way: RUNNING, one attempt used, heartbeat long gone.
    job = ImportJob.objects.create(
        project=project, file_path=str(path), original_name="orphan.jsonl",
        status=Run.Status.RUNNING, attempts=1,
        heartbeat_at=timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS + 60),
    )

    counts = runs_sweep_stale()
    wait_until(lambda: finished(job.pk), what="requeued import")

    job.refresh_from_db()
    assert counts["requeued"] == 1
    assert job.status == Run.Status.DONE and job.attempts == 2
    assert Prompt.objects.count() == 5
