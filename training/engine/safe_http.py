"""An httpx client that only connects to public addresses, checked when it connects.

The check runs inside the connection pool's network backend: the host is resolved once,
every address it resolves to is checked, and the socket connects to a checked address.
Checking a URL before the request instead would let DNS answer differently between
the check and the connection (rebinding). Refused: loopback, private, link-local
(169.254.169.254, the cloud metadata address, among them), unique-local, shared
(100.64/10), multicast, unspecified, reserved and other non-global addresses,
including IPv4 addresses wrapped in IPv6 (::ffff:127.0.0.1, 6to4, Teredo).
`allow_private=True` turns the check off for an endpoint its operator placed on a
private network on purpose (vLLM serve on the LAN).

Redirects are never followed and proxy variables are ignored: through a proxy, the
proxy would resolve the host and the check would see only the proxy's address.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any


class AddressRefused(Exception):
    """The host resolves to an address this client may not connect to."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"resolves to a {kind} address")
        self.kind = kind


def refused_kind(address: str) -> str | None:
    """Why `address` (an IP literal) is refused, or None when it is a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope id is not part of it
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and (kind := refused_kind(str(embedded))):
            return kind
    for kind, hit in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                      ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                      ("reserved", ip.is_reserved), ("private", ip.is_private)):
        if hit:
            return kind
    return None if ip.is_global else "non-public"


def _network_backend(allow_private: bool) -> Any:
    import httpcore

    class CheckedBackend(httpcore.SyncBackend):
        def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                        local_address: str | None = None, socket_options: Any = None) -> Any:
            try:
                found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise httpcore.ConnectError(f"could not resolve the host: {exc}") from exc
            addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
            if not allow_private:
                for address in addresses:
                    if kind := refused_kind(address):
                        raise AddressRefused(kind)
            error: Exception = httpcore.ConnectError("the host resolves to no address")
            for address in addresses:  # connect to what was checked, never resolve again
                try:
                    return super().connect_tcp(address, port, timeout, local_address,
                                               socket_options)
                except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                    error = exc
            raise error

    return CheckedBackend()


def checked_client(*, allow_private: bool, headers: dict[str, str], timeout: Any,
                   max_connections: int) -> Any:
    """An httpx.Client whose every connection goes through the address check."""
    import httpcore
    import httpx

    transport = httpx.HTTPTransport(trust_env=False)
    # httpx has no public switch for the network backend; its transport keeps the pool in
    # `_pool` (tests/engine/test_openai_backend.py fails if a release changes that).
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=max_connections, network_backend=_network_backend(allow_private))
    return httpx.Client(transport=transport, headers=headers, timeout=timeout,
                        follow_redirects=False, trust_env=False)
