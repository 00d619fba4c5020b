"""A local OpenAI-compatible judge on 127.0.0.1 for tests (no network).

It reads the answers out of the judge prompt ("## Answer A\\n..."), asks the test's
`prefer(texts) -> tiers of positions` for a ranking, and answers "RANKING: B > A ...".
`script` lets a test put replies in front of that: ("malformed", text), ("status", 429)
or ("sleep", seconds), served in order, once each."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LABELS = "ABCDEFGHIJKLMNOP"
_ANSWER = re.compile(r"^## Answer ([A-P])\n(.*?)(?=\n\n## Answer [A-P]\n|\n\n# Your reply)", re.S | re.M)


def answers_in(prompt: str) -> list[str]:
    return [text for _, text in _ANSWER.findall(prompt)]


def always_first(texts: list[str]) -> list[list[int]]:
    return [[i] for i in range(len(texts))]


def longest_first(texts: list[str]) -> list[list[int]]:
    return [[i] for i in sorted(range(len(texts)), key=lambda i: -len(texts[i]))]


@dataclass
class JudgeStub:
    url: str
    prefer: Callable[[list[str]], list[list[int]]] = longest_first
    script: list[tuple[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, payload: dict[str, Any]) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append(payload)
            step = self.script.pop(0) if self.script else None
        if step and step[0] == "sleep":
            time.sleep(step[1])
        if step and step[0] == "status":
            return step[1], b'{"error": "slow down"}'
        prompt = payload["messages"][-1]["content"]
        if step and step[0] == "malformed":
            text = step[1]
        else:
            tiers = self.prefer(answers_in(prompt))
            text = "The first listed is most complete.\nRANKING: " + " > ".join(
                " = ".join(LABELS[i] for i in tier) for tier in tiers)
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4}}
        return 200, json.dumps(body).encode()


@contextmanager
def judge_stub() -> Iterator[JudgeStub]:
    class Handler(BaseHTTPRequestHandler):
        stub: JudgeStub

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length", 0))
            status, body = self.stub.reply(json.loads(self.rfile.read(length)))
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out first

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.stub = JudgeStub(url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Handler.stub
    finally:
        server.shutdown()
        server.server_close()
