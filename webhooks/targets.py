"""Where webhooks may send: URLs on the hosts the operator lists in WEBHOOK_ALLOWED_HOSTS.
Checked when a hook is saved and again before every attempt (the address check itself
happens when the connection is made: training/engine/safe_http.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings


def host_allowed(host: str) -> bool:
    """Whether WEBHOOK_ALLOWED_HOSTS lets a webhook name `host` (".example.com" allows
    example.com and its sub-domains, as Django's ALLOWED_HOSTS does)."""
    host = host.lower().rstrip(".")
    for entry in settings.WEBHOOK_ALLOWED_HOSTS:
        entry = entry.lower()
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def url_problem(url: str) -> str | None:
    """Why a webhook may not send to `url`, or None."""
    if not settings.WEBHOOK_ALLOWED_HOSTS:
        return "webhooks are off: the operator lists the hosts they may reach in WEBHOOK_ALLOWED_HOSTS"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "use an http(s) URL with a host"
    if parts.username or parts.password or parts.fragment:
        return "a webhook URL carries no credentials or fragment (the signature authenticates it)"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "a URL has no spaces or control characters"
    if not host_allowed(parts.hostname):
        return (f"{parts.hostname} is not among the hosts webhooks may reach "
                f"({', '.join(settings.WEBHOOK_ALLOWED_HOSTS)}); the operator sets WEBHOOK_ALLOWED_HOSTS")
    return None
