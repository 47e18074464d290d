"""HOST:PORT parsing: every address form peer prints is read back the same."""

from __future__ import annotations

import pytest

from peer.addresses import DEFAULT_LISTEN, is_loopback, join_host, split_address
from peer.errors import UsageError


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:7417", "127.0.0.1", 7417),
        ("localhost:0", "localhost", 0),
        ("[::1]:7417", "::1", 7417),
        ("[fd00::2]:65535", "fd00::2", 65535),
        ("laptop.local:80", "laptop.local", 80),
    ],
)
def test_split_and_join_round_trip(text: str, host: str, port: int) -> None:
    assert split_address(text) == (host, port)
    assert join_host(host, port) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7417",
        ":7417",
        "host:",
        "host:port",
        "host:65536",
        "host:-1",
        "::1:7417",
        "[]:80",
        "host:٣",
    ],
)
def test_malformed_addresses_are_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(UsageError, match="is not HOST:PORT"):
        split_address(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("198.18.0.1", False),
        ("laptop.local", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_default_listen_address_is_loopback() -> None:
    assert is_loopback(split_address(DEFAULT_LISTEN)[0])
