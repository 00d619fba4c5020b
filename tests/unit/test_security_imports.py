"""Issue #15, the import findings. Each test reproduces a finding; each failed on the code
before the fix.

- [x] 4. A bad file crashed the task and left partial data. Now every row problem is an
  invalid row with its line number: JSON nested too deeply, a CSV field over 131,072
  characters, NaN / Infinity, Parquet timestamps (stored as ISO 8601 strings) and values
  JSON cannot hold; a validate-first import stores nothing unless the whole file commits
  (a bad row at the end of 2,500, a failure in the third chunk's write); a file the task
  cannot read, or breaks on, fails its job at once with the reason (attempts == 1, the
  sweep does not retry it).
- [x] 5. Gzip bomb: an endless line stops at IMPORT_MAX_LINE_BYTES, a file inflating past
  IMPORT_MAX_DECOMPRESSED_BYTES stops there, with a clear message, in bounded memory
  (tracemalloc peak) and time.
- [x] 10. Prompt metadata is limited (size, keys, depth) on import and in the model's
  validator; a CSV of 10^6 columns is refused in bounded memory and time; annotators
  receive no metadata from any endpoint or page they reach (reviewers and admins do).
- [x] 11. The upload is deleted when its job ends: done, rejected, failed, cancelled, or
  given up by the sweep; an upload the API refuses before a job exists leaves no file.
"""

from __future__ import annotations

import datetime
import gzip
import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError
from django.test import Client
from django.utils import timezone

from core.runs import Run, runs_sweep_stale
from labeling import importing
from labeling.importing import ImportFileError, prompts_import
from labeling.models import ImportJob, Project, Prompt
from labeling.tasks import import_prompts
from tests.factories import make_items

MiB = 1024 * 1024
MEMORY_BOUND = 64 * MiB
TIME_BOUND_S = 5.0


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n"
                            for row in rows))
    return path


def measured(work: Callable[[], object]) -> tuple[object, int, float]:
    """(result or the exception raised, peak bytes allocated meanwhile, seconds)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        outcome = work()
    except Exception as exc:  # noqa: BLE001 - the caller asserts what it was
        outcome = exc
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return outcome, peak, seconds


# --------------------------------------------------------------------------- 4: row errors


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.csv"])
def test_json_nested_too_deeply_is_a_row_error(project: Project, tmp_path: Path, name: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    if name.endswith(".jsonl"):
        path = write_jsonl(tmp_path / name, [{"prompt": "fine"}, f'{{"prompt": "q", "metadata": {deep}}}',
                                              {"prompt": "after"}])
    else:
        path = tmp_path / name
        path.write_text(f"prompt,metadata\nfine,\nq,{deep}\nafter,\n")

    report = prompts_import(project=project, path=path, skip_invalid=True)

    assert [e["line"] for e in report.errors] == [2 if name.endswith(".jsonl") else 3]
    assert "JSON nested too deeply" in report.errors[0]["reason"]
    assert sorted(p.messages[0]["content"] for p in Prompt.objects.all()) == ["after", "fine"]


def test_a_csv_field_of_200k_characters_is_a_row_error(project: Project, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    big = "first line\n" + "x" * 200_000  # quoted, over two lines: the next row must be found
    path.write_text(f'prompt\nfine\n"{big}"\nafter\n')

    report = prompts_import(project=project, path=path, skip_invalid=True)

    assert report.errors == [{"line": 3, "reason": "prompt is too long (200011 characters; limit 100000)"}]
    assert sorted(p.messages[0]["content"] for p in Prompt.objects.all()) == ["after", "fine"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_row_errors(project: Project, tmp_path: Path, value: str) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl",
                       [{"prompt": "fine"}, f'{{"prompt": "q", "metadata": {{"score": {value}}}}}'])

    report = prompts_import(project=project, path=path)

    assert report.rejected and [e["line"] for e in report.errors] == [2]
    assert "NaN" in report.errors[0]["reason"] or "Infinity" in report.errors[0]["reason"]
    assert Prompt.objects.count() == 0


def test_a_csv_margin_of_nan_is_a_row_error(project: Project, tmp_path: Path) -> None:
    path = tmp_path / "prefs.csv"
    path.write_text("prompt,chosen,rejected,margin\nq,a,b,1.5\nq2,a,b,nan\n")

    report = prompts_import(project=project, path=path)

    assert report.errors == [{"line": 3, "reason": "margin must be a finite number"}]


def test_parquet_timestamps_are_stored_as_iso_strings(project: Project, tmp_path: Path) -> None:
    moment = datetime.datetime(2024, 5, 6, 7, 8, 9)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({
        "prompt": ["q"],
        "collected": [moment],
        "metadata": [{"at": moment, "day": moment.date(), "source": "s"}],
    }), path)

    report = prompts_import(project=project, path=path)

    assert report.errors == [] and report.prompts_added == 1
    assert Prompt.objects.get().metadata == {
        "collected": "2024-05-06T07:08:09", "at": "2024-05-06T07:08:09", "day": "2024-05-06",
        "source": "s"}


def bad_last_row_file(tmp_path: Path, kind: str, rows: int) -> Path:
    if kind == "parquet-binary":
        path = tmp_path / "rows.parquet"
        blobs = [None] * (rows - 1) + [b"\x00\xff"]
        pq.write_table(pa.table({"prompt": [f"q{n}" for n in range(rows)],
                                 "metadata": [{"blob": blob} for blob in blobs]}), path)
        return path
    bad = {"jsonl-surrogate": '{"prompt": "last", "metadata": {"note": "\\ud800"}}',
           "jsonl-nul": '{"prompt": "last \\u0000"}'}[kind]
    return write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q{n}"} for n in range(rows - 1)] + [bad])


@pytest.mark.parametrize("kind", ["parquet-binary", "jsonl-surrogate", "jsonl-nul"])
def test_validate_first_with_one_bad_row_at_the_end_of_2500_stores_nothing(
    project: Project, tmp_path: Path, kind: str,
) -> None:
    # Values the write refused (TypeError from json, or PostgreSQL's jsonb/text) passed the
    # validation pass: the first two chunks of 1,000 committed, then the third failed.
    path = bad_last_row_file(tmp_path, kind, 2500)

    report = prompts_import(project=project, path=path)

    assert report.rejected and report.invalid == 1 and report.errors[0]["line"] == 2500
    assert Prompt.objects.count() == 0


def test_the_validate_first_write_is_all_or_nothing(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q{n}"} for n in range(2500)])
    real_chunk, calls = importing._import_chunk, []

    def third_chunk_fails(*args: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the database went away")
        real_chunk(*args)

    monkeypatch.setattr(importing, "_import_chunk", third_chunk_fails)

    with pytest.raises(RuntimeError):
        prompts_import(project=project, path=path)

    assert len(calls) == 3 and Prompt.objects.count() == 0


# --------------------------------------------------------------------------- 4: the task


def queued_job(project: Project, path: Path, name: str, **fields: object) -> ImportJob:
    return ImportJob.objects.create(project=project, file_path=str(path), original_name=name,
                                    **fields)


def sweep_later(settings) -> dict[str, int]:  # noqa: ANN001
    """The sweep as it runs once the job's heartbeat is long stale."""
    past = timezone.now() - datetime.timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS + 60)
    ImportJob.objects.update(heartbeat_at=past)
    with mock.patch("core.runs.send_run_task"):
        return runs_sweep_stale()


def test_a_file_error_fails_the_job_at_once_with_its_reason(project: Project, tmp_path: Path,
                                                            settings) -> None:  # noqa: ANN001
    settings.IMPORT_MAX_LINE_BYTES = 1024
    path = write_jsonl(tmp_path / "up.upload", [{"prompt": "a"}, {"prompt": "b"},
                                                 {"prompt": "x" * 2000}])
    job = queued_job(project, path, "rows.jsonl")

    import_prompts.delay(job.pk)
    sweep_later(settings)

    job.refresh_from_db()
    assert (job.status, job.attempts) == (Run.Status.FAILED, 1)
    assert "line 3 is longer than 1024 bytes" in job.error and "IMPORT_MAX_LINE_BYTES" in job.error
    assert job.report["rejected"] and job.report["errors"] == [{"line": 3, "reason": job.error}]
    assert job.report["rows"] == 2 and Prompt.objects.count() == 0


def test_a_crash_while_parsing_fails_the_job_at_once(project: Project, tmp_path: Path, settings,  # noqa: ANN001
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importing, "parse_row", mock.Mock(side_effect=TypeError("unexpected shape")))
    job = queued_job(project, write_jsonl(tmp_path / "up.upload", [{"prompt": "a"}]), "rows.jsonl")

    import_prompts.delay(job.pk)
    counts = sweep_later(settings)

    job.refresh_from_db()
    assert (job.status, job.attempts, counts["requeued"]) == (Run.Status.FAILED, 1, 0)
    assert job.error == "the import failed: TypeError: unexpected shape"
    assert job.report["errors"] == [{"line": None, "reason": job.error}]


def test_a_csv_field_too_big_for_csv_fails_no_job(project: Project, tmp_path: Path) -> None:
    path = tmp_path / "up.upload"
    path.write_text(f"prompt\nfine\n{'x' * 200_000}\n")
    job = queued_job(project, path, "rows.csv")

    import_prompts.delay(job.pk)

    job.refresh_from_db()
    assert (job.status, job.attempts) == (Run.Status.FAILED, 1)
    assert job.report["errors"] == [{"line": 3, "reason": "prompt is too long (200000 characters; limit 100000)"}]


# --------------------------------------------------------------------------- 5: gzip bomb


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 250 KB on disk, 256 MiB inflated, not one newline."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.jsonl.gz"
    block = b"a" * MiB
    with gzip.open(path, "wb", compresslevel=6) as fh:
        for _ in range(256):
            fh.write(block)
    return path


def test_a_gzip_bomb_of_one_endless_line_stops_at_the_line_limit(project: Project, bomb: Path) -> None:
    assert bomb.stat().st_size < 2 * MiB

    outcome, peak, seconds = measured(lambda: prompts_import(project=project, path=bomb))

    assert isinstance(outcome, ImportFileError), outcome
    assert "line 1 is longer than 8388608 bytes" in str(outcome) and "IMPORT_MAX_LINE_BYTES" in str(outcome)
    assert peak < MEMORY_BOUND, f"peak {peak / MiB:.0f} MiB"
    assert seconds < TIME_BOUND_S


def test_a_gzip_inflating_past_the_limit_stops_there(project: Project, tmp_path: Path, settings) -> None:  # noqa: ANN001
    settings.IMPORT_MAX_DECOMPRESSED_BYTES = 16 * MiB
    path = tmp_path / "blank.jsonl.gz"
    line = b" " * 1023 + b"\n"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        for _ in range(64):
            fh.write(line * 1024)  # 64 MiB of blank lines in all

    outcome, peak, seconds = measured(lambda: prompts_import(project=project, path=path))

    assert isinstance(outcome, ImportFileError), outcome
    assert "inflates to more than 16777216 bytes" in str(outcome)
    assert "IMPORT_MAX_DECOMPRESSED_BYTES" in str(outcome)
    assert peak < MEMORY_BOUND and seconds < TIME_BOUND_S


def test_a_csv_row_over_the_line_limit_fails_even_across_quoted_newlines(
    project: Project, tmp_path: Path, settings,  # noqa: ANN001
) -> None:
    settings.IMPORT_MAX_LINE_BYTES = 1024
    path = tmp_path / "rows.csv"
    cell = "\n".join("x" * 40 for _ in range(100))  # 4,100 bytes in 100 short lines
    path.write_text(f'prompt\n"{"h" * 900}"\n"{cell}"\n')

    with pytest.raises(ImportFileError, match="a CSV row passes 1024 bytes by line 27"):
        prompts_import(project=project, path=path, skip_invalid=True)


# --------------------------------------------------------------------------- 10: metadata


def test_a_csv_of_a_million_columns_is_refused_in_bounded_memory_and_time(
    project: Project, tmp_path: Path,
) -> None:
    path = tmp_path / "wide.csv"
    columns = 10**6
    path.write_text("prompt," + ",".join(f"c{n}" for n in range(1, columns)) + "\n"
                    + "q," + ",".join("ab" for _ in range(1, columns)) + "\n")

    outcome, peak, seconds = measured(lambda: prompts_import(project=project, path=path))

    assert isinstance(outcome, ImportFileError), outcome
    assert "the CSV header has 1000000 columns" in str(outcome)
    assert peak < MEMORY_BOUND, f"peak {peak / MiB:.0f} MiB"
    assert seconds < TIME_BOUND_S
    assert Prompt.objects.count() == 0


def nested(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"down": value}
    return value


@pytest.mark.parametrize(("metadata", "reason"), [
    ({f"k{n}": n for n in range(100_000)}, "metadata has 100000 keys; the limit is 256"),
    ({"a": [{f"k{n}": n} for n in range(300)]}, "more than 256 keys in all"),
    ({"reference": "x" * 70_000}, "metadata is 70016 bytes as JSON; the limit is 65536"),
    (nested(11), "nested more than 10 levels deep"),
])
def test_metadata_over_its_limits_is_a_row_error(project: Project, tmp_path: Path, metadata: dict,
                                                 reason: str) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "fine", "metadata": nested(10)},
                                                 {"prompt": "q", "metadata": metadata}])

    outcome, peak, seconds = measured(lambda: prompts_import(project=project, path=path))

    assert outcome.rejected and [e["line"] for e in outcome.errors] == [2]
    assert reason in outcome.errors[0]["reason"]
    assert peak < MEMORY_BOUND and seconds < TIME_BOUND_S
    assert Prompt.objects.count() == 0


def test_the_model_validator_applies_the_same_limits(project: Project) -> None:
    prompt = Prompt(project=project, messages=[{"role": "user", "content": "q"}], content_hash="h",
                    metadata={f"k{n}": n for n in range(300)})

    with pytest.raises(ValidationError, match="metadata has 300 keys"):
        prompt.full_clean()


def test_annotators_never_receive_prompt_metadata(project: Project, annotator, reviewer,  # noqa: ANN001
                                                  project_admin, as_user) -> None:  # noqa: ANN001
    item = make_items(project, 1)[0]
    Prompt.objects.filter(pk=item.prompt_id).update(metadata={"reference": "SECRET-REFERENCE-42"})
    api = as_user(annotator)
    page = Client()
    page.force_login(annotator)

    listed = api.get(f"/api/projects/{project.pk}/prompts/")
    one = api.get(f"/api/prompts/{item.prompt_id}/")
    work = api.get(f"/api/projects/{project.pk}/next")
    html = page.get(f"/annotate/{project.slug}/")

    assert listed.status_code == one.status_code == work.status_code == html.status_code == 200
    assert "metadata" not in listed.json()["results"][0] and "metadata" not in one.json()
    for response in (listed, one, work, html):
        assert b"SECRET-REFERENCE-42" not in response.content
    for user in (reviewer, project_admin):
        assert as_user(user).get(f"/api/prompts/{item.prompt_id}/").json()["metadata"] == {
            "reference": "SECRET-REFERENCE-42"}
        assert as_user(user).get(f"/api/projects/{project.pk}/prompts/").json()["results"][0][
            "metadata"] == {"reference": "SECRET-REFERENCE-42"}


# --------------------------------------------------------------------------- 11: uploads


def upload(client, project: Project, name: str, content: bytes) -> dict:  # noqa: ANN001
    response = client.post(f"/api/projects/{project.pk}/imports",
                           {"file": SimpleUploadedFile(name, content)}, format="multipart")
    assert response.status_code == 202, response.content
    return client.get(f"/api/imports/{response.json()['id']}").json()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("name", "content", "status"), [
    ("rows.jsonl", b'{"prompt": "q"}\n', "done"),
    ("rows.jsonl", b'{"prompt": ""}\n', "failed"),  # rejected: an invalid row
    ("rows.parquet", b"not parquet at all", "failed"),  # the file cannot be read
])
def test_the_upload_is_deleted_when_the_job_ends(as_user, project, project_admin, settings,  # noqa: ANN001
                                                 name: str, content: bytes, status: str) -> None:
    job = upload(as_user(project_admin), project, name, content)

    assert job["status"] == status
    assert list(settings.UPLOAD_ROOT.iterdir()) == []


def test_the_upload_of_a_job_cancelled_while_queued_is_deleted(project: Project, settings) -> None:  # noqa: ANN001
    settings.UPLOAD_ROOT.mkdir(parents=True)
    path = write_jsonl(settings.UPLOAD_ROOT / "c.upload", [{"prompt": "q"}])
    job = queued_job(project, path, "rows.jsonl", status=Run.Status.CANCELLED)

    import_prompts.delay(job.pk)

    assert not path.exists() and Prompt.objects.count() == 0


def test_the_upload_of_a_run_the_sweep_gives_up_is_deleted(project: Project, settings) -> None:  # noqa: ANN001
    settings.UPLOAD_ROOT.mkdir(parents=True)
    path = write_jsonl(settings.UPLOAD_ROOT / "lost.upload", [{"prompt": "q"}])
    job = queued_job(project, path, "rows.jsonl", status=Run.Status.RUNNING,
                     attempts=settings.RUN_MAX_ATTEMPTS)

    counts = sweep_later(settings)

    job.refresh_from_db()
    assert counts["failed"] == 1 and job.status == Run.Status.FAILED
    assert not path.exists()


def test_a_running_job_keeps_its_upload(project: Project, settings) -> None:  # noqa: ANN001
    settings.UPLOAD_ROOT.mkdir(parents=True)
    path = write_jsonl(settings.UPLOAD_ROOT / "busy.upload", [{"prompt": "q"}])
    job = queued_job(project, path, "rows.jsonl", status=Run.Status.RUNNING, attempts=1)

    import_prompts.delay(job.pk)  # a duplicate message: another worker holds the claim

    assert path.exists()


@pytest.mark.django_db(transaction=True)
def test_an_upload_refused_before_a_job_exists_leaves_no_file(as_user, project, project_admin,  # noqa: ANN001
                                                              settings) -> None:  # noqa: ANN001
    client = as_user(project_admin)
    failing = mock.patch.object(ImportJob.objects, "create", side_effect=DatabaseError("disk full"))

    with failing, pytest.raises(DatabaseError):
        client.post(f"/api/projects/{project.pk}/imports",
                    {"file": SimpleUploadedFile("rows.jsonl", b'{"prompt": "q"}\n')}, format="multipart")

    assert list(settings.UPLOAD_ROOT.iterdir()) == []
