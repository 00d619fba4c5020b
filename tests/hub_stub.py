"""A local stand-in for the Hugging Face Hub's upload API (the Hub itself is unreachable
here): create a repository, tell huggingface_hub to send every file inline ("regular"
upload mode, no LFS or Xet), and accept one commit. Keeps what it received, so a test
can rebuild the repository's files and check the token."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HubStub:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.repos: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.cards: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                stub.requests.append(("GET", self.path, dict(self.headers.items())))
                stub.reply(self, 404, {"error": "not here"})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.requests.append(("POST", self.path, dict(self.headers.items())))
                stub.handle_post(self, body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle_post(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        path = request.path.split("?")[0]
        if path == "/api/repos/create":
            data = json.loads(body)
            repo = f"{data.get('organization') or 'me'}/{data['name']}"
            self.repos[repo] = data
            return self.reply(request, 200, {"url": f"{self.url}/datasets/{repo}", "name": repo})
        if path == "/api/validate-yaml":
            return self.validate_card(request, json.loads(body)["content"])
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            return self.reply(request, 200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            repo = path.split("/api/datasets/", 1)[1].split("/commit/")[0]
            received = self.files.setdefault(repo, {})
            for line in body.decode().splitlines():
                entry = json.loads(line)
                if entry["key"] == "file":
                    received[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
            return self.reply(request, 200, {"commitUrl": f"{self.url}/datasets/{repo}/commit/abc123",
                                             "commitOid": "abc123" + "0" * 34})
        return self.reply(request, 404, {"error": f"no route {path}"})

    def validate_card(self, request: BaseHTTPRequestHandler, content: str) -> None:
        """What the Hub checks of a dataset card's YAML header, in short: it parses, and
        each config names its data files by split."""
        import yaml

        try:
            header = yaml.safe_load(content.split("---\n")[1]) if content.startswith("---\n") else {}
            configs = header.get("configs", [])
            ok = all(c["config_name"] and all(f["split"] and f["path"] for f in c["data_files"]) for c in configs)
        except (yaml.YAMLError, KeyError, TypeError, IndexError, AttributeError) as exc:
            return self.reply(request, 400, {"errors": [{"message": str(exc)}]})
        if not ok:
            return self.reply(request, 400, {"errors": [{"message": "bad configs"}]})
        self.cards.append(header)
        return self.reply(request, 200, {"errors": [], "warnings": []})

    @staticmethod
    def reply(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)
