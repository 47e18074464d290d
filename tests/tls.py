"""TLS helpers for the security tests: certificates a hostile node could present, raw
channels with any credentials (or none), every RPC attempted on one channel, and the
`peer` CLI with gRPC's own logging kept to errors (`tests.cli.Server` serves with mutual
TLS).

Every call has a deadline and every wait is bounded.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio

from peer import codec
from peer.crypto import TLS_SERVER_NAME, Author
from peer.records import Head, Range, Record
from peer.trust import Credentials
from peer.v1 import sync_pb2 as pb
from tests import cli
from tests.cli import cli_env

CALL_TIMEOUT_S = 5.0
RPCS = ("GetIndex", "PullRecords", "PushRecords", "Subscribe")
OK = "OK"
_WIDE_FROM = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_WIDE_UNTIL = datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC)


# -- certificates -----------------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def subject_of(certificate_pem: bytes) -> x509.Name:
    return x509.load_pem_x509_certificate(certificate_pem).subject


def unique_name(prefix: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{prefix}-{os.urandom(8).hex()}")])


def certificate(
    *,
    public: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    issuer: x509.Name,
    not_before: datetime.datetime = _WIDE_FROM,
    not_after: datetime.datetime = _WIDE_UNTIL,
) -> bytes:
    """A certificate for `public`'s key, signed by `signer`, with the SAN every node uses."""
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_SERVER_NAME)]), False)
        .sign(signer, hashes.SHA256())
    )
    return built.public_bytes(serialization.Encoding.PEM)


def expired_credentials() -> Credentials:
    """A fresh key with a self-signed certificate that expired in 2001 (unique subject)."""
    key = new_key()
    name = unique_name("expired")
    pem = certificate(
        public=key,
        signer=key,
        subject=name,
        issuer=name,
        not_after=datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC),
    )
    return Credentials(key_pem(key), pem)


def minted_credentials(pinned: Credentials) -> dict[str, Credentials]:
    """Certificates made with a pinned node's private key, none of them pinned [M6].

    - self-signed: the pinned key, a new subject and serial, self-signed;
    - issued: a new key whose certificate is *signed by* the pinned key, with the
      pinned certificate's subject as issuer (a chain to the pin: TLS accepts it);
    - twin: the pinned key, the pinned subject and issuer, only the serial differs.
    """
    p_key = load_key(pinned.key)
    p_name = subject_of(pinned.certificate)
    fresh = new_key()
    own = unique_name("minted")
    return {
        "self-signed with P's key": Credentials(
            pinned.key, certificate(public=p_key, signer=p_key, subject=own, issuer=own)
        ),
        "issued by P's key": Credentials(
            key_pem(fresh),
            certificate(public=fresh, signer=p_key, subject=unique_name("x"), issuer=p_name),
        ),
        "twin of P (new serial)": Credentials(
            pinned.key, certificate(public=p_key, signer=p_key, subject=p_name, issuer=p_name)
        ),
    }


# -- raw channels -----------------------------------------------------------------------


def tls_channel(
    target: str, server_certificate: bytes, own: Credentials | None = None
) -> aio.Channel:
    """A channel trusting only `server_certificate`; presenting `own`, or no certificate."""
    if own is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=server_certificate)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=server_certificate,
            private_key=own.key,
            certificate_chain=own.certificate,
        )
    options = [("grpc.ssl_target_name_override", TLS_SERVER_NAME)]
    return aio.secure_channel(target, credentials, options=options)


def push_batch(author: Author, tag: str, count: int) -> tuple[list[Record], dict[bytes, bytes]]:
    """A valid, signed batch of `author`'s records with its key: it would be stored if
    the receiver accepted the call."""
    now = time.time_ns()
    records = author.write(tag, Head(0), [now] * count, [b"push %d" % n for n in range(count)])
    return records, {author.host: author.signing.public_key}


def _method(name: str) -> str:
    return f"/{codec.SERVICE_NAME}/{name}"


RAW = {"request_serializer": None, "response_deserializer": None}  # bytes in, bytes out


async def attempt_every_rpc(
    channel: aio.Channel, pull: list[Range], push: tuple[list[Record], dict[bytes, bytes]]
) -> dict[str, str | grpc.StatusCode]:
    """Each RPC once on `channel`: OK, or the status code it failed with."""
    results: dict[str, str | grpc.StatusCode] = {}
    get_index = channel.unary_unary(_method("GetIndex"), **RAW)
    try:
        codec.decode_index(
            await get_index(codec.encode_get_index_request(), timeout=CALL_TIMEOUT_S)
        )
        results["GetIndex"] = OK
    except aio.AioRpcError as exc:
        results["GetIndex"] = exc.code()

    pull_call = channel.unary_stream(_method("PullRecords"), **RAW)(
        codec.encode_pull_request(pull, 0), timeout=CALL_TIMEOUT_S
    )
    try:
        async for raw in pull_call:
            codec.decode_batch(pb.PullRecordsResponse, raw)
        results["PullRecords"] = OK
    except aio.AioRpcError as exc:
        results["PullRecords"] = exc.code()

    async def requests() -> AsyncIterator[bytes]:
        yield codec.encode_batch(pb.PushRecordsRequest, *push)

    push_call = channel.stream_unary(_method("PushRecords"), **RAW)
    try:
        added, _ = codec.decode_push_response(await push_call(requests(), timeout=CALL_TIMEOUT_S))
        results["PushRecords"] = OK if added == len(push[0]) else f"added {added}"
    except aio.AioRpcError as exc:
        results["PushRecords"] = exc.code()

    subscribe = channel.unary_stream(_method("Subscribe"), **RAW)(
        codec.encode_subscribe_request({}), timeout=CALL_TIMEOUT_S
    )
    try:
        results["Subscribe"] = "EOF"
        async for raw in subscribe:  # the first message is enough
            codec.decode_batch(pb.SubscribeResponse, raw)
            results["Subscribe"] = OK
            break
    except aio.AioRpcError as exc:
        results["Subscribe"] = exc.code()
    finally:
        subscribe.cancel()
    return results


# -- the CLI ------------------------------------------------------------------------------


def peer(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return cli.peer(home, *args, stdin=stdin, env=cli_env())


def ok(home: Path, *args: str, stdin: str | None = None) -> str:
    return cli.ok(home, *args, stdin=stdin, env=cli_env())


def ok_json(home: Path, *args: str, stdin: str | None = None) -> Any:
    return json.loads(ok(home, *args, "--json", stdin=stdin))
