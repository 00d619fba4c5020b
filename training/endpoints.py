"""Generation endpoints: the operator's list in settings.GENERATION_ENDPOINTS, the only
places the openai backend sends prompts and API keys.

A run names an endpoint; it never carries a URL or a key. The web checks the name when
the run is created, and the worker looks the name up again when it executes the run, so
an endpoint the operator removed (or re-pointed) in the meantime is what counts. Each
endpoint's key is read from its own variable on the worker, and goes to that endpoint
only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core.errors import DomainError

logger = logging.getLogger(__name__)
MAX_MODEL_NAME = 200


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    api_key_env: str
    models: tuple[str, ...]
    allow_private: bool


def endpoints_configured() -> dict[str, Endpoint]:
    return {
        name: Endpoint(name=name, base_url=entry["base_url"],
                       api_key_env=entry.get("api_key_env", ""),
                       models=tuple(entry.get("models", ())),
                       allow_private=bool(entry.get("allow_private", False)))
        for name, entry in settings.GENERATION_ENDPOINTS.items()
    }


def endpoint_choose(name: str) -> Endpoint:
    """The endpoint a new run names: `name`, or the only one configured when it is empty."""
    configured = endpoints_configured()
    if not configured:
        raise DomainError("no generation endpoints are configured: the operator lists them "
                          "in GENERATION_ENDPOINTS")
    if not name and len(configured) == 1:
        return next(iter(configured.values()))
    if name not in configured:
        said = f"unknown endpoint {name!r}" if name else "name an endpoint"
        raise DomainError(f"{said}; the configured endpoints are {', '.join(sorted(configured))}")
    return configured[name]


def endpoint_check_model(endpoint: Endpoint, model: str) -> None:
    """The model name a run asks the endpoint for: bounded, and on its list when it has one."""
    if not model or len(model) > MAX_MODEL_NAME or not model.isprintable():
        raise DomainError(f"the openai backend needs the name of a model endpoint "
                          f"{endpoint.name!r} serves (at most {MAX_MODEL_NAME} characters)")
    if endpoint.models and model not in endpoint.models:
        raise DomainError(f"endpoint {endpoint.name!r} serves {', '.join(endpoint.models)}; "
                          f"not {model!r}")


def endpoint_backend_options(name: str, model: str) -> dict[str, Any]:
    """The engine options of a run's endpoint, looked up now (on the worker)."""
    endpoint = endpoints_configured().get(name)
    if endpoint is None:
        raise DomainError(f"endpoint {name!r} is no longer configured (GENERATION_ENDPOINTS)"
                          if name else "this run names no endpoint; start a new run that does")
    endpoint_check_model(endpoint, model)
    key = ""
    if endpoint.api_key_env:
        key = os.environ.get(endpoint.api_key_env, "")
        if not key:
            logger.error("endpoint %r: %s is not set on this worker", name, endpoint.api_key_env)
            raise DomainError(f"the API key of endpoint {name!r} is not set on this worker")
    return {"base_url": endpoint.base_url, "api_key": key, "endpoint": name,
            "allow_private": endpoint.allow_private}
