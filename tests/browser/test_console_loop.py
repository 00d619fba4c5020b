"""Issue #16's "done when": an admin runs the whole loop in the console by clicking, on a
fresh database: create a project with a guideline, upload prompts with one bad line (the
dry run shows it), import, generate K=4 with the built-in tiny model, (annotators rank:
simulate_annotators on the project, marked as a test project), build a pairs + sft
snapshot, train a reward model and a policy, see held-out accuracy beside the agreement
ceiling, promote both, upload the next round and generate it from the promoted policy (the
form's default): its new items carry reward-model scores. Every new page passes axe's
serious/critical checks; screenshots of each are kept under test-artifacts/.

Celery is eager in browser tests, so each run executes inside the request that starts it
(the page then shows it done); on a real deployment the same pages poll a worker."""

from __future__ import annotations

import json
import re

import pytest
from django.core.management import call_command

from guidelines.services import guidelines_sync
from labeling.models import AuditEvent, Item, Membership, Project
from tests.browser.conftest import axe_violations, describe_violations, screenshot
from tests.browser.test_annotate import login
from tests.factories import UserFactory
from training.models import CandidateScore, GenerationRun, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)

TOPICS = ["bread", "tea", "rivers", "cats", "maps", "stars", "rain", "boats"]


def check_axe(page, name: str) -> None:  # noqa: ANN001
    screenshot(page, f"loop-{name}")
    violations = axe_violations(page)
    assert violations == [], f"{name}: {describe_violations(violations)}"


def prompts_file(tmp_path, name: str, topics: list[str], *, bad_line: bool) -> str:  # noqa: ANN001
    lines = [json.dumps({"prompt": f"Tell me about {topic}."}) for topic in topics]
    if bad_line:
        lines.insert(2, json.dumps({"prompt": ["not", "a", "string"]}))
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def upload(page, tmp_path, name: str, topics: list[str], *, bad_line: bool) -> None:  # noqa: ANN001
    page.click("aside a:has-text('Upload')")
    page.set_input_files("input[name=file]", prompts_file(tmp_path, name, topics, bad_line=bad_line))
    submit(page, "Check file (dry run)", r".*/upload/\d+$")
    assert page.locator("#job-status").inner_text() == "done"


def submit(page, button: str, url: str = r".*") -> None:  # noqa: ANN001
    """Click a form's button and wait for the page it leads to (often the same URL)."""
    with page.expect_navigation(url=re.compile(url)):
        page.click(f"button:has-text('{button}')")


def test_an_admin_runs_the_whole_loop_in_the_console(page, live_server, tiny_model, settings, tmp_path) -> None:  # noqa: ANN001
    settings.TORCH_NUM_THREADS = 1
    page.set_default_timeout(180_000)
    guidelines_sync()  # the operator's deploy step (make demo and the images run it)
    admin = UserFactory(username="admin", is_staff=True)
    UserFactory(username="rita")  # an existing account, added as a reviewer below
    login(page, live_server, admin)

    # 1. Create the project with its guideline.
    page.goto(f"{live_server.url}/console/")
    page.click("#new-project")
    page.fill("#id_name", "Loop")
    page.fill("#id_slug", "loop")
    page.fill("#id_k", "1")  # an invalid value first: the error shows inline
    submit(page, "Create project")
    assert page.locator("#id_k_error").is_visible()
    page.fill("#id_k", "4")
    page.select_option("#id_assignment_strategy", "uncertain_first")
    page.select_option("#id_guideline", index=1)  # the shipped default guideline
    check_axe(page, "project-new")
    submit(page, "Create project", r".*/console/projects/\d+/upload$")
    project = Project.objects.get(slug="loop")
    assert project.guideline is not None and project.assignment_strategy == "uncertain_first"

    # 2. Upload with one bad line: the dry run shows it; import the valid rows.
    check_axe(page, "upload")
    upload(page, tmp_path, "round1.jsonl", TOPICS, bad_line=True)
    assert page.locator("#invalid-rows tbody tr").count() == 1
    assert page.locator("#invalid-rows tbody td").first.inner_text() == "3"
    assert project.prompts.count() == 0  # nothing written by the dry run
    check_axe(page, "upload-dry-run")
    page.check("#skip_invalid")
    submit(page, "Import", r".*/upload/\d+$")
    assert "8 prompts" in page.locator("#job-summary").inner_text()
    check_axe(page, "upload-imported")

    # 3. Members: add an existing user as a reviewer.
    page.click("aside a:has-text('Members')")
    page.fill("#id_add-username", "rita")
    page.select_option("#id_add-role", "reviewer")
    submit(page, "Add member")
    assert Membership.objects.get(project=project, user__username="rita").role == "reviewer"
    submit(page, "Create invite link")
    assert "/accounts/invite/" in page.input_value("#invite-url")
    check_axe(page, "members")

    # 4. Generate K=4 with the built-in tiny model (the default: nothing is promoted yet).
    page.click("aside a:has-text('Runs')")
    assert page.input_value("#id_source") == "builtin:builtin-tiny"
    page.fill("#generation-form #id_k", "4")
    page.fill("#id_max_new_tokens", "12")
    check_axe(page, "runs")
    submit(page, "Start generation", r".*/runs$")
    first = GenerationRun.objects.get()
    assert first.status == "done", first.error
    assert project.items.count() == len(TOPICS)

    # 5. Annotators rank (simulated, as the issue allows on a test project).
    Project.objects.filter(pk=project.pk).update(is_demo=True)
    call_command("simulate_annotators", "--project", "loop", "--create", "3", "--noise", "0.2")
    assert project.items.filter(status="accepted").count() >= 4

    # 6. Build a pairs + sft snapshot, train a reward model and a policy.
    page.reload()
    page.check("#snapshot-form input[value=sft]")
    page.fill("#id_validation_fraction", "0.4")
    submit(page, "Build snapshot", r".*/runs$")
    assert page.locator("[data-run^='snapshot-']").first.inner_text() == "done"
    page.select_option("#id_kind", "reward")
    page.select_option("#id_preset", "quick")
    page.fill("#id_max_steps", "3")
    submit(page, "Start training", r".*/runs$")
    page.select_option("#id_kind", "sft")
    page.fill("#id_max_steps", "3")
    submit(page, "Start training", r".*/runs$")
    runs = list(TrainingRun.objects.order_by("id"))
    assert [(r.kind, r.status) for r in runs] == [("reward", "done"), ("sft", "done")], (
        [r.error for r in runs], page.locator(".messages").all_inner_texts())
    check_axe(page, "runs-trained")

    # 7. Accuracy beside the agreement ceiling; promote (a 3-step run asks to confirm).
    page.click("aside a:has-text('Reward models')")
    reward = ModelVersion.objects.get(kind="reward")
    row = page.locator(f"tr[data-version='{reward.pk}']")
    assert re.search(r"\d\.\d{3}", row.locator(".accuracy").inner_text())
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", row.locator(".ceiling").inner_text())
    check_axe(page, "reward-models")
    with page.expect_navigation():
        row.locator("button:has-text('Promote')").click()
    if page.locator("button:has-text('Promote anyway')").count():
        check_axe(page, "promote-confirm")
        submit(page, "Promote anyway", r".*/reward-models$")
    reward.refresh_from_db()
    assert reward.is_current
    policy = ModelVersion.objects.get(kind="policy")
    page.click("aside a:has-text('Runs')")
    with page.expect_navigation():
        page.locator(f"form:has(input[name=promote][value='{policy.pk}']) button").click()
    if page.locator("button:has-text('Promote anyway')").count():
        submit(page, "Promote anyway")
    policy.refresh_from_db()
    assert policy.is_current

    # 8. The next round: new prompts, generated from the promoted policy (the default).
    upload(page, tmp_path, "round2.jsonl", ["bees", "clocks"], bad_line=False)
    submit(page, "Import", r".*/upload/\d+$")
    page.click("aside a:has-text('Runs')")
    assert page.input_value("#id_source") == f"policy:{policy.pk}"
    page.fill("#generation-form #id_k", "4")
    page.fill("#id_max_new_tokens", "12")
    submit(page, "Start generation", r".*/runs$")
    second = GenerationRun.objects.exclude(pk=first.pk).get()
    assert second.status == "done" and second.policy == policy, second.error
    new_items = Item.objects.filter(project=project, candidates__dedupe_key__startswith=f"run:{second.pk}:").distinct()
    assert new_items.count() == 2
    for item in new_items:
        ids = set(item.candidates.values_list("id", flat=True))
        assert set(CandidateScore.objects.filter(model_version=reward, candidate__in=ids)
                   .values_list("candidate_id", flat=True)) == ids
    screenshot(page, "loop-runs-round2")
    actions = set(AuditEvent.objects.filter(actor=admin).values_list("action", flat=True))
    assert {"project.create", "import.dry_run", "import.start", "member.add", "invite.create",
            "generation.start", "snapshot.create", "training.start", "model.promote_reward",
            "model.promote_policy"} <= actions
    assert page.js_errors == []
