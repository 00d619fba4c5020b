"""Typed exceptions. Every API error carries the HTTP status, the API's `code` and its
`detail` (and the whole parsed body, for per-field messages)."""

from __future__ import annotations

from typing import Any


class OrdinalError(Exception):
    """Base class of everything this client raises."""


class ApiError(OrdinalError):
    """The API answered with an error: `status`, `code` (the API's, e.g. "not_found",
    "confirmation_required", "invalid") and `detail`."""

    def __init__(self, status: int, code: str, detail: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status, self.code, self.detail, self.body = status, code, detail, body


class ValidationError(ApiError):
    """400: the request broke a rule; `body` holds per-field messages when there are any."""


class AuthenticationError(ApiError):
    """401, or 403 without credentials: the token is missing, wrong or expired."""


class PermissionDenied(ApiError):
    """403: the caller's role in the project may not do this."""


class NotFound(ApiError):
    """404: no such object, or it belongs to a project the caller is not in."""


class Conflict(ApiError):
    """409: the request conflicts with what is stored."""


class ConfirmationRequired(Conflict):
    """409 `confirmation_required`: promoting a model whose run may have learned nothing
    needs `confirm=True`; `detail` says why."""


class RateLimited(ApiError):
    """429: too many requests; retry later."""


class ServerError(ApiError):
    """5xx: the server failed."""


class RunFailed(OrdinalError):
    """A run (import, generation, snapshot, training) that was waited on ended failed or
    cancelled; `run` is its last state."""

    def __init__(self, run: Any) -> None:
        super().__init__(f"{type(run).__name__} {run.id} ended {run.status}: {run.error or 'no message'}")
        self.run = run


class ChecksumMismatch(OrdinalError):
    """A downloaded snapshot file's sha256 differs from the manifest's."""


class WaitTimeout(OrdinalError):
    """wait() gave up before the run finished."""


class SignatureError(OrdinalError):
    """A webhook request whose signature or timestamp does not verify."""


def error_for(status: int, body: Any, *, authenticated: bool) -> ApiError:
    detail, code = "", ""
    if isinstance(body, dict):
        detail = str(body.get("detail", "")) or "; ".join(
            f"{field}: {' '.join(map(str, messages)) if isinstance(messages, list) else messages}"
            for field, messages in body.items())
        code = str(body.get("code", ""))
    elif body:
        detail = str(body)[:500]
    if status == 400:
        return ValidationError(status, code or "invalid", detail, body)
    if status == 401 or (status == 403 and code in {"not_authenticated", "authentication_failed"}):
        return AuthenticationError(status, code or "not_authenticated", detail, body)
    if status == 403:
        return PermissionDenied(status, code or "permission_denied", detail, body)
    if status == 404:
        return NotFound(status, code or "not_found", detail, body)
    if status == 409:
        kind = ConfirmationRequired if code == "confirmation_required" else Conflict
        return kind(status, code or "conflict", detail, body)
    if status == 429:
        return RateLimited(status, code or "throttled", detail, body)
    if status >= 500:
        return ServerError(status, code or "server_error", detail, body)
    return ApiError(status, code or "error", detail, body)
