"""LAN discovery: nodes announce their sync port over multicast DNS (DNS-SD) and find
each other with no internet and no configuration.

Each node registers one service of type `_peer._tcp.local.`:

    instance  "<node name> <first 15 letters of the node id>"   (readable in Bonjour browsers)
    SRV       peer-<node id letters>.local. and the sync port
    A/AAAA    the addresses given, or every non-loopback address of the machine
    TXT       v=1  id=<formatted node id>

Discovery only supplies addresses. Anyone on the LAN can announce any id, so trust
still comes from the pin list: the daemon dials a found address only for a pinned id,
and mutual TLS checks the certificate against that pin. Announcements that are
malformed, of another version, or our own are ignored, never an error.

The protocol itself (probing, announcing, caching, goodbyes) is zeroconf's; this module
only maps services to `Found` values.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import ifaddr
from zeroconf import (
    Error as ZeroconfError,
)
from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from peer.addresses import join_host
from peer.errors import UsageError
from peer.identity import format_node_id, parse_node_id
from peer.names import clean_name

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

SERVICE_TYPE = "_peer._tcp.local."
PROTOCOL_VERSION = b"1"
RESOLVE_TIMEOUT_MS = 3000
MAX_NAME_BYTES = 40  # the instance label is at most 63 bytes; the id prefix takes 16
MAX_FOUND = 256  # announcements remembered: anyone on the LAN can announce, so bounded


@dataclass(frozen=True, slots=True)
class Found:
    """A node announced on the LAN: the id it claims, where it listens, its label."""

    node_id: bytes
    address: str
    name: str


def _ignore(found: Found) -> None:
    pass


def remember(table: dict[K, V], key: K, value: V, limit: int) -> None:
    """Set `table[key]` as its newest entry, dropping the oldest beyond `limit`: what a
    LAN announces is not trusted, so it must not grow memory without bound."""
    table.pop(key, None)
    table[key] = value
    while len(table) > limit:
        del table[next(iter(table))]


def txt_properties(node_id: bytes) -> dict[str, str]:
    """The TXT record we announce: protocol version and formatted node id."""
    return {"v": PROTOCOL_VERSION.decode(), "id": format_node_id(node_id)}


def node_id_from_txt(properties: Mapping[bytes, bytes | None]) -> bytes | None:
    """The node id a TXT record announces; None if malformed or of another version."""
    if properties.get(b"v") != PROTOCOL_VERSION:
        return None
    text = properties.get(b"id")
    if text is None:
        return None
    try:
        return parse_node_id(text.decode("ascii"))
    except (UnicodeDecodeError, UsageError):
        return None


def dial_address(addresses: Sequence[str], port: int | None) -> str | None:
    """The HOST:PORT to dial: IPv4 before IPv6, loopback last, never link-local IPv6
    (unusable without its interface) nor an unspecified address."""
    if not port or not 0 < port <= 65535:
        return None
    usable: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not (ip.is_unspecified or ip.is_multicast or (ip.version == 6 and ip.is_link_local)):
            usable.append(ip)
    if not usable:
        return None
    best = min(usable, key=lambda ip: (ip.is_loopback, ip.version))
    return join_host(str(best), port)


def instance_name(node_id: bytes, name: str) -> str:
    """`<name> <id prefix>`: unique by id, readable by name, within one DNS label."""
    label = "".join(" " if c == "." or not c.isprintable() else c for c in name).strip()
    label = label.encode()[:MAX_NAME_BYTES].decode(errors="ignore").strip() or "peer"
    return f"{label} {format_node_id(node_id)[:15]}"


def _checked(interfaces: Sequence[str]) -> list[str]:
    """The interfaces as IP address texts; UsageError naming any that is not one."""
    for text in interfaces:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise UsageError(f"{text!r} is not an IP address (discovery interfaces)") from None
    return list(interfaces)


def local_addresses() -> list[str]:
    """Every address of this machine worth announcing: not loopback, not link-local."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for entry in adapter.ips:
            text = entry.ip if isinstance(entry.ip, str) else entry.ip[0]
            ip = ipaddress.ip_address(text)
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                found.append(text)
    return sorted(set(found))


class Discovery:
    """Announces this node on the LAN and keeps a view of the others announced there.

    `interfaces`: None for every interface (announcing every non-loopback address), or
    a list of this machine's IP addresses to use and announce (tests, multi-homed hosts).
    `on_found` is called, in the event loop, for each new node and whenever a node's
    address changes.
    """

    def __init__(
        self,
        node_id: bytes,
        port: int,
        name: str = "",
        interfaces: Sequence[str] | None = None,
        on_found: Callable[[Found], None] = _ignore,
    ) -> None:
        self.node_id, self.port, self.name = node_id, port, name
        self.interfaces = _checked(interfaces) if interfaces is not None else None
        self.on_found = on_found
        self._found: dict[str, Found] = {}  # by service name
        self._zeroconf: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._announcing: Awaitable[object] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def found(self) -> list[Found]:
        """The nodes announced on the LAN now (announcements seen and not withdrawn)."""
        return list(self._found.values())

    async def start(self) -> None:
        """Register our service and browse for the others; UsageError if the
        interfaces cannot be used (e.g. an address this machine does not have)."""
        if self._zeroconf is not None or self._closed:
            raise UsageError("this LAN discovery was already started (make a new one)")
        addresses = self.interfaces if self.interfaces is not None else local_addresses()
        # IPv6 only where we have an address to announce on it: hosts without IPv6 exist.
        ipv6 = any(":" in address for address in addresses)
        try:
            self._zeroconf = AsyncZeroconf(
                interfaces=self.interfaces if self.interfaces is not None else InterfaceChoice.All,
                ip_version=IPVersion.All if ipv6 else IPVersion.V4Only,
            )
            info = self.service_info(addresses)
            self._announcing = await self._zeroconf.async_register_service(
                info, allow_name_change=True
            )
        except (OSError, ValueError, ZeroconfError) as exc:
            await self.close()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if self.interfaces is None:
                raise UsageError(f"cannot start LAN discovery: {reason}") from exc
            raise UsageError(
                f"cannot start LAN discovery on {', '.join(self.interfaces)}: {reason} "
                "(discovery interfaces must be IP addresses of this machine; empty for all)"
            ) from exc
        self._browser = AsyncServiceBrowser(
            self._zeroconf.zeroconf, SERVICE_TYPE, handlers=[self._on_change]
        )

    def service_info(self, addresses: Sequence[str]) -> ServiceInfo:
        """What we announce: our port on `addresses`, our id in the TXT record."""
        letters = base64.b32encode(self.node_id).decode().rstrip("=").lower()
        return ServiceInfo(
            SERVICE_TYPE,
            f"{instance_name(self.node_id, self.name)}.{SERVICE_TYPE}",
            port=self.port,
            properties=txt_properties(self.node_id),
            server=f"peer-{letters[:16]}.local.",
            parsed_addresses=list(addresses),
        )

    async def close(self) -> None:
        """Withdraw our announcement (goodbye packets) and stop browsing; idempotent."""
        self._closed = True
        announcing, self._announcing = self._announcing, None
        tasks: list[asyncio.Future[Any]] = [*self._tasks]
        self._tasks = set()
        if isinstance(announcing, asyncio.Future):
            tasks.append(announcing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._browser is not None:
            browser, self._browser = self._browser, None
            await browser.async_cancel()
        if self._zeroconf is not None:
            zeroconf, self._zeroconf = self._zeroconf, None
            await zeroconf.async_close()

    def learn(self, service_name: str, info: ServiceInfo) -> None:
        """Take in one resolved service: record it and tell `on_found` if it is a
        new node or a new address; ignore our own and malformed announcements."""
        node_id = node_id_from_txt(info.properties)
        address = dial_address(info.parsed_addresses(), info.port)
        if node_id is None or address is None or node_id == self.node_id:
            if node_id != self.node_id:
                log.debug("ignoring the LAN announcement %r: not a peer v1 node", service_name)
            self._found.pop(service_name, None)  # it may have been valid before
            return
        label = clean_name(service_name.removesuffix("." + SERVICE_TYPE))  # anyone's words
        found = Found(node_id, address, label)
        if self._found.get(service_name) == found:
            return
        remember(self._found, service_name, found, MAX_FOUND)
        try:
            self.on_found(found)
        except Exception:
            log.exception("the discovery callback failed for %s", address)

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """Browser callback (in the event loop, must not block): resolve in a task."""
        if state_change is ServiceStateChange.Removed:
            self._found.pop(name, None)
            return
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, zeroconf: Zeroconf, name: str) -> None:
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS):
                self.learn(name, info)
        except (OSError, ZeroconfError) as exc:
            log.debug("cannot resolve the LAN announcement %r: %s", name, exc)
