"""HOST:PORT text, the one form addresses take in flags, config, status and discovery.

IPv6 hosts are written in brackets (`[::1]:7417`), so the port is always what follows
the last colon and the host never has to be guessed.
"""

from __future__ import annotations

import ipaddress

from peer.errors import UsageError

MAX_PORT = 65535
DEFAULT_LISTEN = "127.0.0.1:7417"  # `peer serve` without --listen: this machine only


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) as (host, port), with a clear error when malformed."""
    host, sep, port = address.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    malformed = not sep or not host or not port.isascii() or not port.isdigit()
    malformed = malformed or len(port) > 5  # int() of 4300+ digits fails on its own
    if malformed or int(port) > MAX_PORT or (":" in host and not bracketed):
        shown = address if len(address) <= 60 else address[:59] + "…"
        raise UsageError(
            f"{shown!r} is not HOST:PORT with a port from 0 to {MAX_PORT} "
            "(an IPv6 host goes in brackets: [::1]:7417)"
        )
    return host, int(port)


def join_host(host: str, port: int) -> str:
    """The HOST:PORT text of a host and a port, bracketing an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an IP address) is this machine only: where plaintext
    may listen, and where announcing on the LAN would be pointless."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(address: str) -> None:
    """Plaintext is only for this machine: refuse any non-loopback address."""
    host, _ = split_address(address)
    if not is_loopback(host):
        raise UsageError(
            f"--insecure is only allowed on a loopback address (127.0.0.1, ::1), not {host}"
        )
