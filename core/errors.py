"""The one exception type for broken domain rules; the API maps it to its HTTP status and
code (core/api.py), pages show its message."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the domain was broken; the message is shown to the user."""

    code = "invalid"
    http_status = 400
