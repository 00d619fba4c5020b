"""The connection: base URL, token, one httpx.Client, and the mapping of error answers to
typed exceptions. Resources (projects, runs, models) are in ordinal_client.resources."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ordinal_client.errors import error_for

if TYPE_CHECKING:
    from ordinal_client.resources import (
        GenerationRun,
        HubPush,
        ImportJob,
        ModelVersion,
        Project,
        Snapshot,
        TrainingRun,
        Webhook,
    )

USER_AGENT = "ordinal-client/0.1"


class Ordinal:
    """A client of one Ordinal server.

    >>> ordinal = Ordinal("https://ordinal.example.com", token="...")   # doctest: +SKIP

    `token` defaults to $ORDINAL_TOKEN and `url` to $ORDINAL_URL. Make a token on the
    site's /accounts/tokens/ page (or `Ordinal.sign_in` with a password, where the server
    keeps local passwords). Use it as a context manager, or call `close()`."""

    def __init__(self, url: str | None = None, *, token: str | None = None, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        base = url or os.environ.get("ORDINAL_URL", "")
        if not base:
            raise ValueError("give the server's URL (or set ORDINAL_URL)")
        self.url = base.rstrip("/")
        self.token = token if token is not None else os.environ.get("ORDINAL_TOKEN") or None
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport,
                                 follow_redirects=False)

    @classmethod
    def sign_in(cls, url: str, username: str, password: str, **kwargs: Any) -> Ordinal:
        """A client holding a new token for `username` (POST /api/auth/token)."""
        with httpx.Client(base_url=url.rstrip("/"), timeout=30.0) as http:
            response = http.post("/api/auth/token", json={"username": username, "password": password})
        if response.status_code != 200:
            raise error_for(response.status_code, _body(response), authenticated=False)
        return cls(url, token=response.json()["token"], **kwargs)

    def __enter__(self) -> Ordinal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ raw requests

    def request(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None,
                files: Any = None, data: Any = None) -> Any:
        """One API call; the parsed JSON answer (None for 204), or a typed ApiError."""
        response = self.http.request(method, path, json=json_body, params=params, files=files, data=data)
        if response.status_code >= 400:
            raise error_for(response.status_code, _body(response), authenticated=bool(self.token))
        return None if response.status_code == 204 or not response.content else response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json_body=body)

    def paginate(self, path: str, *, page_size: int = 200, **params: Any) -> Iterator[dict[str, Any]]:
        """Every row of a paginated list endpoint, page by page."""
        offset = 0
        while True:
            page = self.get(path, limit=page_size, offset=offset, **params)
            yield from page["results"]
            offset += len(page["results"])
            if not page.get("next") or not page["results"]:
                return

    @contextmanager
    def stream(self, path: str) -> Iterator[httpx.Response]:
        """A streamed GET (file downloads); errors raise as for `request`."""
        with self.http.stream("GET", path) as response:
            if response.status_code >= 400:
                response.read()
                raise error_for(response.status_code, _body(response), authenticated=bool(self.token))
            yield response

    # ------------------------------------------------------------------ entry points

    def projects(self) -> list[Project]:
        from ordinal_client.resources import Project

        return [Project.from_api(self, row) for row in self.paginate("/api/projects/")]

    def project(self, key: int | str) -> Project:
        """A project by id, or by slug (searched among the caller's projects)."""
        from ordinal_client.errors import NotFound
        from ordinal_client.resources import Project

        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            return Project.from_api(self, self.get(f"/api/projects/{int(key)}/"))
        for row in self.paginate("/api/projects/"):
            if row["slug"] == key:
                return Project.from_api(self, row)
        raise NotFound(404, "not_found", f"no project with slug {key!r} among yours")

    def import_job(self, job_id: int) -> ImportJob:
        from ordinal_client.resources import ImportJob

        return ImportJob.fetch(self, job_id)

    def generation_run(self, run_id: int) -> GenerationRun:
        from ordinal_client.resources import GenerationRun

        return GenerationRun.fetch(self, run_id)

    def snapshot(self, snapshot_id: int) -> Snapshot:
        from ordinal_client.resources import Snapshot

        return Snapshot.fetch(self, snapshot_id)

    def training_run(self, run_id: int) -> TrainingRun:
        from ordinal_client.resources import TrainingRun

        return TrainingRun.fetch(self, run_id)

    def hub_push(self, push_id: int) -> HubPush:
        from ordinal_client.resources import HubPush

        return HubPush.fetch(self, push_id)

    def webhook(self, hook_id: int) -> Webhook:
        from ordinal_client.resources import Webhook

        return Webhook.from_api(self, self.get(f"/api/webhooks/{hook_id}"))

    def promote(self, version: int | ModelVersion, *, confirm: bool = False) -> ModelVersion:
        """Make a model version its project's current one. A version whose run may have
        learned nothing raises ConfirmationRequired unless `confirm=True`."""
        from ordinal_client.resources import ModelVersion

        version_id = version if isinstance(version, int) else version.id
        return ModelVersion.from_api(self, self.post(f"/api/models/{version_id}/promote", {"confirm": confirm}))


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:500]


def jsonl_bytes(rows: Iterable[Mapping[str, Any]]) -> io.BytesIO:
    """Rows as a JSONL file in memory (what the import endpoint takes)."""
    buffer = io.BytesIO()
    for row in rows:
        buffer.write(json.dumps(dict(row), ensure_ascii=False).encode("utf-8") + b"\n")
    buffer.seek(0)
    return buffer


def file_name(path: str | os.PathLike[str]) -> str:
    return Path(path).name
