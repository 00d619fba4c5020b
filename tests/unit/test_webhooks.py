"""Webhooks: registration (admins only, hosts the operator allows, audited), delivery to a
local receiver that verifies the signature, retries with backoff for a failing one, the
address check, and redelivery under the same event id."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client
from django.utils import timezone
from ordinal_client.webhooks import verify_signature

from labeling.models import AuditEvent
from webhooks.delivery import deliveries_resend_due, delivery_attempt, retry_delay
from webhooks.events import event_emit
from webhooks.models import Webhook, WebhookDelivery, WebhookEvent
from webhooks.services import webhook_create


class Receiver:
    """A local HTTP receiver: answers with the next code of `codes` (the last one
    repeats) and keeps every request's headers and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.codes = [200]
        self.answer = b"ok"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                code = receiver.codes.pop(0) if len(receiver.codes) > 1 else receiver.codes[0]
                self.send_response(code)
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def event_ids(self) -> list[str]:
        return [headers["X-Ordinal-Event-Id"] for headers, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:  # noqa: ANN001 - pytest-django
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on loopback: the operator allows it here
    settings.WEBHOOK_RETRY_SECONDS = 30
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def hook(project, project_admin, receiver: Receiver) -> Webhook:  # noqa: ANN001
    return webhook_create(project=project, url=receiver.url, events=["snapshot.ready", "model.promoted"],
                          actor=project_admin)


def emit(project, django_capture_on_commit_callbacks, type: str = "snapshot.ready") -> WebhookEvent:  # noqa: ANN001
    with django_capture_on_commit_callbacks(execute=True):  # the (eager) delivery task runs at commit
        event = event_emit(project=project, type=type, data={"snapshot": 7}, path="/api/datasets/7")
    assert event is not None
    return event


def make_due(delivery: WebhookDelivery) -> None:
    """Time passes: the delivery's next attempt is due."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


# --------------------------------------------------------------------------- delivery


def test_a_local_receiver_verifies_the_signature_of_a_delivered_event(
        project, hook: Webhook, receiver: Receiver, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    event = emit(project, django_capture_on_commit_callbacks)

    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    verified = verify_signature(hook.secret, body, headers)
    assert verified["id"] == str(event.event_id) == headers["X-Ordinal-Event-Id"]
    assert verified["type"] == "snapshot.ready" and headers["X-Ordinal-Event"] == "snapshot.ready"
    assert verified["data"] == {"snapshot": 7} and verified["link"].endswith("/api/datasets/7")
    assert verified["project"] == {"id": project.pk, "slug": project.slug}
    delivery = WebhookDelivery.objects.get(hook=hook, event=event)
    assert delivery.status == "succeeded" and delivery.attempts == 1 and delivery.last_status_code == 200
    assert delivery.log.get().latency_ms is not None


def test_a_signature_made_with_another_secret_or_too_old_is_refused(
        project, hook: Webhook, receiver: Receiver, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    from ordinal_client import SignatureError

    emit(project, django_capture_on_commit_callbacks)
    headers, body = receiver.requests[0]

    with pytest.raises(SignatureError):
        verify_signature("0" * 64, body, headers)
    with pytest.raises(SignatureError):
        verify_signature(hook.secret, body.replace(b"7", b"8"), headers)
    with pytest.raises(SignatureError, match="away"):
        verify_signature(hook.secret, body, headers, now=int(headers["X-Ordinal-Timestamp"]) + 301)


def test_an_event_no_hook_listens_to_stores_nothing(project, hook: Webhook, django_capture_on_commit_callbacks
                                                    ) -> None:  # noqa: ANN001
    with django_capture_on_commit_callbacks(execute=True):
        event = event_emit(project=project, type="item.disputed", data={"item": 1}, path="/api/items/1/agreement")
    assert event is None
    assert not WebhookEvent.objects.exists()


def test_a_failing_receiver_gets_retries_with_exponential_backoff_then_the_delivery_fails(
        project, hook: Webhook, receiver: Receiver, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    receiver.codes = [500]
    event = emit(project, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(hook=hook, event=event)
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_status_code == 500
    first_wait = delivery.next_attempt_at - timezone.now()
    assert timedelta(seconds=25) < first_wait <= timedelta(seconds=30)

    assert delivery_attempt(delivery.pk) is None  # not due yet: nothing is sent
    assert len(receiver.requests) == 1

    make_due(delivery)
    delivery = delivery_attempt(delivery.pk)
    assert delivery.attempts == 2 and delivery.status == "pending"
    assert timedelta(seconds=55) < delivery.next_attempt_at - timezone.now() <= timedelta(seconds=60)
    assert retry_delay(3) == timedelta(seconds=120)

    make_due(delivery)
    delivery = delivery_attempt(delivery.pk)
    assert delivery.status == "failed" and delivery.attempts == 3  # WEBHOOK_MAX_ATTEMPTS
    assert len(receiver.requests) == 3 and len(set(receiver.event_ids())) == 1
    assert [a.status_code for a in delivery.log.order_by("number")] == [500, 500, 500]


def test_a_retry_after_failures_succeeds_with_the_same_event_id(
        project, hook: Webhook, receiver: Receiver, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    receiver.codes = [503, 200]
    event = emit(project, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(hook=hook, event=event)

    make_due(delivery)
    delivery = delivery_attempt(delivery.pk)

    assert delivery.status == "succeeded" and delivery.attempts == 2
    assert receiver.event_ids() == [str(event.event_id)] * 2
    bodies = {body for _, body in receiver.requests}
    assert len(bodies) == 1  # the same bytes every time


def test_a_duplicate_task_sends_nothing_more(project, hook: Webhook, receiver: Receiver,
                                             django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    event = emit(project, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(hook=hook, event=event)

    assert delivery_attempt(delivery.pk) is None
    assert len(receiver.requests) == 1


def test_redelivery_resends_the_same_event_id_and_never_duplicates_the_delivery(
        project, project_admin, hook: Webhook, receiver: Receiver, django_capture_on_commit_callbacks,
        as_user) -> None:  # noqa: ANN001
    event = emit(project, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(hook=hook, event=event)

    with django_capture_on_commit_callbacks(execute=True):
        response = as_user(project_admin).post(f"/api/webhook-deliveries/{delivery.pk}/redeliver")

    assert response.status_code == 202, response.content
    assert response.json()["event_id"] == str(event.event_id)
    assert receiver.event_ids() == [str(event.event_id)] * 2
    assert WebhookDelivery.objects.filter(hook=hook).count() == 1
    assert WebhookEvent.objects.count() == 1
    assert AuditEvent.objects.filter(action="webhook.redeliver", project=project).count() == 1


def test_the_log_keeps_at_most_200_bytes_of_an_answer(project, hook: Webhook, receiver: Receiver,
                                                       django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    receiver.answer = b"x" * 100_000
    event = emit(project, django_capture_on_commit_callbacks)

    attempt = WebhookDelivery.objects.get(hook=hook, event=event).log.get()
    assert attempt.response_excerpt == "x" * 200


def test_without_allow_private_a_loopback_target_is_refused_at_connect_time(
        project, hook: Webhook, receiver: Receiver, settings, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    settings.WEBHOOK_ALLOW_PRIVATE = False

    event = emit(project, django_capture_on_commit_callbacks)

    delivery = WebhookDelivery.objects.get(hook=hook, event=event)
    assert receiver.requests == []
    assert "refused" in delivery.last_error and "loopback" in delivery.last_error
    assert delivery.last_status_code is None


def test_a_host_the_operator_removed_stops_receiving(project, hook: Webhook, receiver: Receiver, settings,
                                                     django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.com"]

    event = emit(project, django_capture_on_commit_callbacks)

    delivery = WebhookDelivery.objects.get(hook=hook, event=event)
    assert receiver.requests == [] and delivery.status == "failed"
    assert "WEBHOOK_ALLOWED_HOSTS" in delivery.last_error


def test_the_sweep_resends_a_delivery_whose_task_was_lost(project, hook: Webhook, receiver: Receiver) -> None:  # noqa: ANN001
    event = event_emit(project=project, type="snapshot.ready", data={}, path="/")  # its commit never comes
    delivery = WebhookDelivery.objects.get(hook=hook, event=event)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=5))

    assert deliveries_resend_due() == 1

    assert receiver.event_ids() == [str(event.event_id)]


# --------------------------------------------------------------------------- registration


@pytest.mark.parametrize("url, problem", [
    ("https://evil.example.net/hook", "not among the hosts"),
    ("ftp://127.0.0.1/hook", "http(s)"),
    ("https://user:pw@127.0.0.1/hook", "credentials"),
    ("https://127.0.0.1:99999/hook", "valid URL"),
])
def test_a_url_outside_the_operators_list_is_refused(project, project_admin, as_user, receiver: Receiver,
                                                     url: str, problem: str) -> None:  # noqa: ANN001
    response = as_user(project_admin).post(f"/api/projects/{project.pk}/webhooks",
                                           {"url": url, "events": ["snapshot.ready"]}, format="json")

    assert response.status_code == 400 and problem in response.json()["detail"]
    assert not Webhook.objects.exists()


def test_with_no_allowed_hosts_webhooks_are_off(project, project_admin, as_user, settings) -> None:  # noqa: ANN001
    settings.WEBHOOK_ALLOWED_HOSTS = []

    response = as_user(project_admin).post(f"/api/projects/{project.pk}/webhooks",
                                           {"url": "https://hooks.example.com/x", "events": ["snapshot.ready"]},
                                           format="json")

    assert response.status_code == 400 and "WEBHOOK_ALLOWED_HOSTS" in response.json()["detail"]


def test_an_admin_creates_updates_and_deletes_a_hook_each_audited(project, project_admin, as_user,
                                                                   settings) -> None:  # noqa: ANN001
    settings.WEBHOOK_ALLOWED_HOSTS = [".example.com"]
    api = as_user(project_admin)

    created = api.post(f"/api/projects/{project.pk}/webhooks",
                       {"url": "https://hooks.example.com/ordinal", "events": ["model.promoted", "import.finished"]},
                       format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert len(body["secret"]) == 64 and body["events"] == ["import.finished", "model.promoted"]
    assert "secret" not in api.get(f"/api/webhooks/{body['id']}").json()
    assert "secret" not in api.get(f"/api/projects/{project.pk}/webhooks").json()[0]

    patched = api.patch(f"/api/webhooks/{body['id']}", {"active": False}, format="json")
    assert patched.status_code == 200 and patched.json()["active"] is False
    assert patched.json()["url"] == "https://hooks.example.com/ordinal"
    assert api.patch(f"/api/webhooks/{body['id']}", {"url": "https://elsewhere.org/"},
                     format="json").status_code == 400
    assert api.delete(f"/api/webhooks/{body['id']}").status_code == 204

    actions = list(AuditEvent.objects.filter(project=project, action__startswith="webhook.")
                   .order_by("id").values_list("action", flat=True))
    assert actions == ["webhook.create", "webhook.update", "webhook.delete"]
    assert not Webhook.objects.exists()


def test_an_unknown_event_type_is_refused(project, project_admin, as_user, receiver: Receiver) -> None:  # noqa: ANN001
    response = as_user(project_admin).post(f"/api/projects/{project.pk}/webhooks",
                                           {"url": receiver.url, "events": ["item.created"]}, format="json")

    assert response.status_code == 400 and "events" in response.json()


# --------------------------------------------------------------------------- access


def webhook_urls(project, hook: Webhook, delivery: WebhookDelivery) -> list[tuple[str, str]]:  # noqa: ANN001
    return [("get", f"/api/projects/{project.pk}/webhooks"), ("post", f"/api/projects/{project.pk}/webhooks"),
            ("get", f"/api/webhooks/{hook.pk}"), ("patch", f"/api/webhooks/{hook.pk}"),
            ("delete", f"/api/webhooks/{hook.pk}"), ("get", f"/api/webhooks/{hook.pk}/deliveries"),
            ("post", f"/api/webhook-deliveries/{delivery.pk}/redeliver")]


def test_webhook_api_is_for_admins_403_for_a_reviewer_404_for_another_project(
        project, reviewer, outsider, hook: Webhook, as_user, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    event = emit(project, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(event=event)
    body = {"url": hook.url, "events": ["snapshot.ready"]}

    for method, url in webhook_urls(project, hook, delivery):
        as_reviewer = getattr(as_user(reviewer), method)(url, body, format="json")
        as_outsider = getattr(as_user(outsider), method)(url, body, format="json")
        assert as_reviewer.status_code == 403, (method, url)
        assert as_outsider.status_code == 404, (method, url)
    assert Webhook.objects.count() == 1 and WebhookDelivery.objects.get().attempts == 1


def test_the_console_pages_are_for_admins(project, project_admin, reviewer, outsider, hook: Webhook) -> None:  # noqa: ANN001
    pages = [f"/console/projects/{project.pk}/webhooks", f"/console/webhooks/{hook.pk}"]
    for user, expected in ((reviewer, 403), (outsider, 404), (project_admin, 200)):
        client = Client()
        client.force_login(user)
        for page in pages:
            assert client.get(page).status_code == expected, (user.username, page)
            assert client.post(page, {"delete": "1"}).status_code in {expected, 302}, (user.username, page)
    assert Webhook.objects.filter(pk=hook.pk).exists() is False  # the admin's POST deleted it


def test_the_console_shows_the_secret_once_and_the_delivery_log(
        project, project_admin, receiver: Receiver, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    client = Client()
    client.force_login(project_admin)

    created = client.post(f"/console/projects/{project.pk}/webhooks",
                          {"url": receiver.url, "events": ["snapshot.ready"], "description": "CI"})
    assert created.status_code == 302
    hook = Webhook.objects.get()
    first = client.get(created["Location"]).content.decode()
    assert hook.secret in first
    emit(project, django_capture_on_commit_callbacks)
    again = client.get(created["Location"]).content.decode()
    assert hook.secret not in again
    assert "succeeded" in again and "snapshot.ready" in again and " ms" in again

    delivery = WebhookDelivery.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/console/webhooks/{hook.pk}", {"redeliver": str(delivery.pk)})
    assert len(receiver.requests) == 2 and len(set(receiver.event_ids())) == 1
    assert AuditEvent.objects.filter(action="webhook.create", project=project).exists()


def test_a_request_cannot_choose_the_secret(project, project_admin, as_user, receiver: Receiver) -> None:  # noqa: ANN001
    response = as_user(project_admin).post(f"/api/projects/{project.pk}/webhooks",
                                           {"url": receiver.url, "events": ["snapshot.ready"], "secret": "mine"},
                                           format="json")

    assert response.status_code == 400 and "unknown field" in str(response.json()["secret"])
    assert not Webhook.objects.exists()
