"""LAN discovery: what a node announces, what it takes from others' announcements, and
two real nodes finding each other over multicast DNS between two network namespaces.

The namespace test makes its own namespaces joined by a veth pair (addresses from the
benchmarking range 198.18.0.0/15 and the documentation range 2001:db8::/32), so no
packet reaches the host's network; it needs root and `ip`, and is skipped otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from zeroconf import ServiceInfo, ServiceStateChange

from peer.discovery import (
    MAX_FOUND,
    SERVICE_TYPE,
    Discovery,
    Found,
    dial_address,
    instance_name,
    node_id_from_txt,
    txt_properties,
)
from peer.errors import UsageError
from peer.identity import format_node_id

ME = bytes(range(32))
OTHER = bytes(range(1, 33))
HELPER = Path(__file__).with_name("discovery_node.py")


def announcement(
    properties: dict[str, str] | dict[bytes, bytes], addresses: list[str], port: int = 7417
) -> ServiceInfo:
    return ServiceInfo(
        SERVICE_TYPE,
        f"laptop.{SERVICE_TYPE}",
        port=port,
        properties=properties,
        server="laptop.local.",
        parsed_addresses=addresses,
    )


# -- the TXT record -------------------------------------------------------------------------


def test_our_txt_record_reads_back_as_our_id() -> None:
    properties = {k.encode(): v.encode() for k, v in txt_properties(ME).items()}
    assert properties == {b"v": b"1", b"id": format_node_id(ME).encode()}
    assert node_id_from_txt(properties) == ME


@pytest.mark.parametrize(
    "properties",
    [
        {},
        {b"v": b"1"},
        {b"id": format_node_id(OTHER).encode()},
        {b"v": b"2", b"id": format_node_id(OTHER).encode()},
        {b"v": None, b"id": format_node_id(OTHER).encode()},
        {b"v": b"1", b"id": None},
        {b"v": b"1", b"id": b"not-a-node-id"},
        {b"v": b"1", b"id": format_node_id(OTHER).encode()[:-1] + b"A"},  # fails its check
        {b"v": b"1", b"id": b"\xff\xfe"},
    ],
)
def test_malformed_or_other_version_txt_records_are_ignored(
    properties: dict[bytes, bytes | None],
) -> None:
    assert node_id_from_txt(properties) is None


def test_node_ids_are_read_in_any_case_and_without_dashes() -> None:
    text = format_node_id(OTHER).replace("-", "").lower().encode()
    assert node_id_from_txt({b"v": b"1", b"id": text}) == OTHER


# -- addresses and names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        (["198.18.0.2"], "198.18.0.2:7417"),
        (["2001:db8::2", "198.18.0.2"], "198.18.0.2:7417"),
        (["2001:db8::2"], "[2001:db8::2]:7417"),
        (["fe80::1", "2001:db8::2"], "[2001:db8::2]:7417"),
        (["127.0.0.1", "198.18.0.2"], "198.18.0.2:7417"),
        (["127.0.0.1"], "127.0.0.1:7417"),
        (["fe80::1"], None),
        (["0.0.0.0"], None),
        ([], None),
    ],
)
def test_the_address_to_dial(addresses: list[str], expected: str | None) -> None:
    assert dial_address(addresses, 7417) == expected


@pytest.mark.parametrize("port", [None, 0, 70000])
def test_no_address_without_a_port(port: int | None) -> None:
    assert dial_address(["198.18.0.2"], port) is None


def test_instance_names_fit_one_dns_label() -> None:
    prefix = format_node_id(ME)[:15]
    assert instance_name(ME, "laptop") == f"laptop {prefix}"
    assert instance_name(ME, "") == f"peer {prefix}"
    assert instance_name(ME, "a.b") == f"a b {prefix}"
    long = instance_name(ME, "é" * 100)
    assert len(long.encode()) <= 63
    assert long.endswith(prefix)


# -- taking in announcements ----------------------------------------------------------------


def test_a_new_node_is_reported_and_an_address_change_reported_again() -> None:
    seen: list[Found] = []
    discovery = Discovery(ME, 7417, "me", on_found=seen.append)
    other = txt_properties(OTHER)
    discovery.learn(f"laptop.{SERVICE_TYPE}", announcement(other, ["198.18.0.2"]))
    discovery.learn(f"laptop.{SERVICE_TYPE}", announcement(other, ["198.18.0.2"]))
    assert seen == [Found(OTHER, "198.18.0.2:7417", "laptop")]
    discovery.learn(f"laptop.{SERVICE_TYPE}", announcement(other, ["198.18.0.3"], port=7500))
    assert seen[1:] == [Found(OTHER, "198.18.0.3:7500", "laptop")]
    assert discovery.found() == [seen[1]]


def test_a_flood_of_announcements_is_bounded_to_the_newest() -> None:
    """Anyone on the LAN can announce: a flood of ids must not grow memory."""
    discovery = Discovery(ME, 7417)
    ids = [bytes([n % 256, n // 256]) * 16 for n in range(MAX_FOUND + 50)]
    for n, node_id in enumerate(ids):
        name = f"n{n}.{SERVICE_TYPE}"
        discovery.learn(name, announcement(txt_properties(node_id), ["198.18.0.2"]))
    kept = [found.node_id for found in discovery.found()]
    assert kept == ids[-MAX_FOUND:]


def test_our_own_malformed_and_unreachable_announcements_are_ignored() -> None:
    seen: list[Found] = []
    discovery = Discovery(ME, 7417, on_found=seen.append)
    name = f"laptop.{SERVICE_TYPE}"
    discovery.learn(name, announcement(txt_properties(ME), ["198.18.0.1"]))
    discovery.learn(name, announcement({"v": "2", "id": format_node_id(OTHER)}, ["198.18.0.2"]))
    discovery.learn(name, announcement({"v": "1", "id": "garbage"}, ["198.18.0.2"]))
    discovery.learn(name, announcement(txt_properties(OTHER), ["fe80::1"]))
    assert seen == []
    assert discovery.found() == []


def test_a_withdrawn_or_spoiled_announcement_leaves_the_view() -> None:
    discovery = Discovery(ME, 7417)
    name = f"laptop.{SERVICE_TYPE}"
    discovery.learn(name, announcement(txt_properties(OTHER), ["198.18.0.2"]))
    discovery.learn(name, announcement({"v": "2", "id": format_node_id(OTHER)}, ["198.18.0.2"]))
    assert discovery.found() == []
    discovery.learn(name, announcement(txt_properties(OTHER), ["198.18.0.2"]))
    discovery._on_change(None, SERVICE_TYPE, name, ServiceStateChange.Removed)  # type: ignore[arg-type]
    assert discovery.found() == []


def test_a_failing_callback_does_not_stop_discovery() -> None:
    def broken(found: Found) -> None:
        raise RuntimeError("bug in the daemon")

    discovery = Discovery(ME, 7417, on_found=broken)
    discovery.learn(f"laptop.{SERVICE_TYPE}", announcement(txt_properties(OTHER), ["198.18.0.2"]))
    assert [f.node_id for f in discovery.found()] == [OTHER]


async def test_close_is_idempotent_and_safe_before_start() -> None:
    discovery = Discovery(ME, 7417)
    await discovery.close()
    await discovery.close()


def test_interfaces_must_be_ip_addresses() -> None:
    with pytest.raises(UsageError, match="'eth0' is not an IP address"):
        Discovery(ME, 7417, interfaces=["eth0"])


# -- two nodes in two network namespaces ----------------------------------------------------

TIMEOUT_S = 20.0


async def _start(ns: str, node_id: bytes, port: int, name: str, interface: str) -> Any:
    args = [node_id.hex(), str(port), name, interface, str(TIMEOUT_S)]
    process = await asyncio.create_subprocess_exec(
        *["ip", "netns", "exec", ns, sys.executable, str(HELPER), *args],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return process


async def _first_found(process: Any) -> list[dict[str, str]]:
    """The lines the helper prints, up to and including its first found node."""
    lines: list[dict[str, str]] = []
    for _ in range(20):
        raw = await asyncio.wait_for(process.stdout.readline(), TIMEOUT_S)
        if not raw:
            stderr = await process.stderr.read()
            raise AssertionError(f"the discovery helper exited: {stderr.decode()[-2000:]}")
        lines.append(json.loads(raw))
        if "node_id" in lines[-1]:
            return lines
    raise AssertionError(f"no node found: {lines}")


@pytest.mark.parametrize(
    ("interface_a", "interface_b", "address_of_a", "address_of_b"),
    [
        ("all", "198.18.0.2", "198.18.0.1:7001", "198.18.0.2:7002"),
        ("2001:db8::1", "2001:db8::2", "[2001:db8::1]:7001", "[2001:db8::2]:7002"),
    ],
    ids=["ipv4-all-interfaces", "ipv6"],
)
async def test_two_nodes_find_each_other_on_a_lan(
    lan: tuple[str, str], interface_a: str, interface_b: str, address_of_a: str, address_of_b: str
) -> None:
    ns_a, ns_b = lan
    a = await _start(ns_a, ME, 7001, "alpha", interface_a)
    b = await _start(ns_b, OTHER, 7002, "beta", interface_b)
    try:
        found_by_a, found_by_b = await asyncio.gather(_first_found(a), _first_found(b))
    finally:
        for process in (a, b):
            process.stdin.close()
        for process in (a, b):
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
    assert found_by_a[-1] == {
        "node_id": OTHER.hex(),
        "address": address_of_b,
        "name": f"beta {format_node_id(OTHER)[:15]}",
    }
    assert found_by_b[-1] == {
        "node_id": ME.hex(),
        "address": address_of_a,
        "name": f"alpha {format_node_id(ME)[:15]}",
    }
    for process in (a, b):
        assert process.returncode == 0
        assert await process.stderr.read() == b""  # no warning, no traceback


async def test_an_address_this_machine_lacks_is_refused_in_words(lan: tuple[str, str]) -> None:
    process = await _start(lan[0], ME, 7001, "alpha", "198.18.0.9")
    _, stderr = await asyncio.wait_for(process.communicate(b""), TIMEOUT_S)
    assert process.returncode != 0
    assert "UsageError: cannot start LAN discovery on 198.18.0.9: " in stderr.decode()
