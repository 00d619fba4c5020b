"""The OpenAI-compatible backend against a stub HTTP server on 127.0.0.1 (no network).

Each test scripts the stub's answers: a list of (status, headers, body, delay) replies,
served in order, the last one repeated. The stub lives on a loopback address, which the
backend refuses unless told `allow_private=True`: the tests that talk to it say so.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from training.engine.backends import load_backend
from training.engine.openai_backend import OpenAIBackend
from training.engine.safe_http import refused_kind
from training.engine.sampling import BackendError, BackendUnavailable, SamplingParams, candidate_seed, sample

PARAMS = SamplingParams(k=3, max_new_tokens=16, seed=7, stop=("\n\n",), system_prompt="Be brief.")
HELLO = [{"role": "user", "content": "Hello"}]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # None: a valid completion with the request's n choices
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Stub:
    url: str
    replies: list[Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self, request: dict[str, Any]) -> Reply:
        with self.lock:
            self.requests.append(request)
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def completion(payload: dict[str, Any]) -> dict[str, Any]:
    n = payload.get("n", 1)
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": f"answer {i} seed {payload['seed']}"},
            "finish_reason": "stop" if i % 2 == 0 else "length",
        }
        for i in range(n)
    ]
    return {"choices": choices, "usage": {"prompt_tokens": 11, "completion_tokens": 5 * n}}


class Handler(BaseHTTPRequestHandler):
    stub: Stub

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = self.stub.next_reply(
            {
                "path": self.path,
                "payload": payload,
                "auth": self.headers.get("Authorization"),
                "at": time.monotonic(),
            }
        )
        time.sleep(reply.delay)
        body = json.dumps(completion(payload) if reply.body is None else reply.body).encode()
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout test)
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[Stub]:
    handler = type("StubHandler", (Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    handler.stub = Stub(url=f"http://127.0.0.1:{server.server_address[1]}/v1", replies=[Reply()])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield handler.stub
    server.shutdown()
    server.server_close()


def backend(stub: Stub, **options: Any) -> OpenAIBackend:
    defaults = {
        "base_url": stub.url,
        "api_key": "sk-test",
        "allow_private": True,
        "backoff_base": 0.01,
        "max_retries": 2,
        "timeout": 5.0,
    }
    return load_backend("openai", "stub-model", **{**defaults, **options})


def test_one_request_per_prompt_with_n_k(stub: Stub) -> None:
    results = sample([HELLO, HELLO], PARAMS, backend(stub), seeds=[101, 202])

    assert [len(r.samples) for r in results] == [3, 3]
    assert [s.index for s in results[0].samples] == [0, 1, 2]
    assert {s.seed for s in results[1].samples} == {202}
    assert results[0].samples[1].text == "answer 1 seed 101"
    assert [s.finish_reason for s in results[0].samples] == ["stop", "length", "stop"]
    assert results[0].samples[0].prompt_tokens == 11
    assert results[0].samples[0].completion_tokens is None  # usage sums the n choices
    sent = stub.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["auth"] == "Bearer sk-test"
    assert sent["payload"]["messages"] == [{"role": "system", "content": "Be brief."}, *HELLO]
    assert {k: sent["payload"][k] for k in ("model", "n", "max_tokens", "stop", "temperature")} == {
        "model": "stub-model",
        "n": 3,
        "max_tokens": 16,
        "stop": ["\n\n"],
        "temperature": 1.0,
    }


def test_k_separate_requests_when_n_is_not_supported(stub: Stub) -> None:
    [result] = sample([HELLO], PARAMS, backend(stub, n_per_request=False), seeds=[5])

    assert sorted(r["payload"]["n"] for r in stub.requests) == [1, 1, 1]
    assert [s.seed for s in result.samples] == [candidate_seed(5, j) for j in range(3)]
    assert [s.index for s in result.samples] == [0, 1, 2]
    assert result.samples[0].completion_tokens == 5


def test_retries_after_429_honouring_retry_after(stub: Stub) -> None:
    stub.replies[:] = [Reply(429, {"error": "slow down"}, {"Retry-After": "1"}), Reply()]

    [result] = sample([HELLO], PARAMS, backend(stub))

    assert len(result.samples) == 3
    assert len(stub.requests) == 2
    assert stub.requests[1]["at"] - stub.requests[0]["at"] >= 0.9


def test_timeout_is_retried_then_reported(stub: Stub) -> None:
    stub.replies[:] = [Reply(delay=1.0)]

    with pytest.raises(BackendUnavailable, match="timeout") as error:
        sample([HELLO], PARAMS, backend(stub, timeout=0.2, max_retries=1))

    assert "2 attempts" in str(error.value)
    assert len(stub.requests) == 2


def test_server_error_is_retried_then_reported(stub: Stub) -> None:
    stub.replies[:] = [Reply(500, {"error": "boom"})]

    with pytest.raises(BackendUnavailable, match="HTTP 500"):
        sample([HELLO], PARAMS, backend(stub, max_retries=2))

    assert len(stub.requests) == 3


def test_server_error_then_success_recovers(stub: Stub) -> None:
    stub.replies[:] = [Reply(503, {"error": "busy"}), Reply(502, {}), Reply()]

    [result] = sample([HELLO], PARAMS, backend(stub, max_retries=2))

    assert len(result.samples) == 3


def test_unreachable_endpoint_is_a_clear_error() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = load_backend("openai", "m", base_url=f"http://127.0.0.1:{port}/v1", endpoint="dead",
                        allow_private=True, max_retries=1, backoff_base=0.01)

    with pytest.raises(BackendError, match="could not reach endpoint 'dead'"):
        sample([HELLO], PARAMS, dead)


def test_rejected_prompt_is_skipped_with_the_status_not_the_body(stub: Stub) -> None:
    stub.replies[:] = [Reply(400, {"error": {"message": "maximum context length is 4096 tokens"}}), Reply()]
    one_at_a_time = backend(stub, concurrency=1, endpoint="vllm")

    first, second = sample([HELLO, HELLO], PARAMS, one_at_a_time)

    assert first.skipped and "HTTP 400 from endpoint 'vllm'" in first.skipped
    assert "maximum context length" not in first.skipped
    assert first.samples == []
    assert len(second.samples) == 3


def test_auth_error_is_not_retried(stub: Stub) -> None:
    stub.replies[:] = [Reply(401, {"error": "bad key"})]

    with pytest.raises(BackendError, match="HTTP 401") as error:
        sample([HELLO], PARAMS, backend(stub))

    assert not isinstance(error.value, BackendUnavailable)  # a configuration error: don't retry
    assert len(stub.requests) == 1


def test_server_ignoring_n_is_reported(stub: Stub) -> None:
    stub.replies[:] = [Reply(body=completion({"n": 1, "seed": 0}))]

    with pytest.raises(BackendError, match="n_per_request=False"):
        sample([HELLO], PARAMS, backend(stub))


def test_the_environments_key_is_never_sent(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")

    sample([HELLO], PARAMS, load_backend("openai", "m", base_url=stub.url, allow_private=True))

    assert stub.requests[0]["auth"] is None


def test_no_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")

    with pytest.raises(BackendError, match="base_url"):
        load_backend("openai", "m")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_is_refused_after_resolution(stub: Stub, host: str) -> None:
    port = stub.url.split(":")[2].split("/")[0]
    inside = load_backend("openai", "m", base_url=f"http://{host}:{port}/v1", api_key="sk-test",
                          endpoint="inside", max_retries=2, backoff_base=0.01)

    with pytest.raises(BackendError, match="endpoint 'inside' resolves to a loopback address") as error:
        sample([HELLO], PARAMS, inside)

    assert not isinstance(error.value, BackendUnavailable)  # not worth retrying
    assert stub.requests == []


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1%1", "link-local"), ("fc00::1", "private"),
    ("fd00:ec2::254", "private"), ("100.100.100.200", "non-public"), ("0.0.0.0", "unspecified"),  # noqa: S104
    ("::", "unspecified"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local"), ("2002:7f00:1::", "loopback"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo wrapping 127.0.0.1
    ("8.8.8.8", None), ("1.1.1.1", None), ("2606:4700:4700::1111", None),
])
def test_which_addresses_are_refused(address: str, kind: str | None) -> None:
    assert refused_kind(address) == kind


def test_redirects_are_not_followed(stub: Stub) -> None:
    stub.replies[:] = [Reply(302, {}, {"Location": "http://169.254.169.254/latest/meta-data/"})]

    with pytest.raises(BackendError, match="HTTP 302 from endpoint 'up'"):
        sample([HELLO], PARAMS, backend(stub, endpoint="up"))

    assert len(stub.requests) == 1


def test_answers_bodies_stay_out_of_errors(stub: Stub) -> None:
    stub.replies[:] = [Reply(500, {"error": "SECRET-INTERNAL-BODY"}, {"Retry-After": "0"})]

    with pytest.raises(BackendUnavailable) as error:
        sample([HELLO], PARAMS, backend(stub, endpoint="up"))

    assert "HTTP 500 from endpoint 'up'" in str(error.value)
    assert "SECRET" not in str(error.value) and stub.url not in str(error.value)


def test_proxy_variables_are_ignored(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    [result] = sample([HELLO], PARAMS, backend(stub, max_retries=0))

    assert len(result.samples) == 3 and len(stub.requests) == 1
