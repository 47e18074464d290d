"""What docs/protocol.md §9.4 ("Writing a client") promises a client writer: a node's
services and their methods can be read through server reflection, as grpcurl reads
them. grpcurl is not here; grpcio-reflection's own client
(ProtoReflectionDescriptorDatabase) asks the same questions, over mutual TLS with the
files the doc names (a pinned node's HOME/tls.crt and HOME/tls.key, the server's
tls.crt as the only root, server name `peer`) and in plaintext on loopback
(`peer serve --insecure`).

The reflection client is synchronous: it runs in a thread while the node's grpc.aio
server runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor_pb2 import MethodDescriptorProto
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from peer.crypto import TLS_SERVER_NAME
from peer.home import Home
from peer.identity import node_id_of
from peer.node import Node
from peer.service import RunningServer, start_server
from peer.store import TrustedPeer

CALL_TIMEOUT_S = 5.0
SYNC_SERVICE = "peer.v1.SyncService"
# grpcurl's `list`, as §9.4 shows it (pairing has its own port; grpcurl asks for
# reflection v1 first and falls back to v1alpha, the one grpcio-reflection serves)
SERVICES = {SYNC_SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
# name: (request, response, client streaming, server streaming), as in sync.proto
SYNC_METHODS = {
    "GetIndex": ("peer.v1.GetIndexRequest", "peer.v1.GetIndexResponse", False, False),
    "PullRecords": ("peer.v1.PullRecordsRequest", "peer.v1.PullRecordsResponse", False, True),
    "PushRecords": ("peer.v1.PushRecordsRequest", "peer.v1.PushRecordsResponse", True, False),
    "Subscribe": ("peer.v1.SubscribeRequest", "peer.v1.SubscribeResponse", False, True),
    "Follow": ("peer.v1.FollowRequest", "peer.v1.FollowResponse", True, True),
}


@dataclass
class Served:
    """A node serving as `peer serve` does, and the home of a node it pinned."""

    server_home: Path
    client_home: Path
    running: RunningServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"


async def _serve(tmp_path: Path, tls: bool) -> AsyncIterator[Served]:
    nas = await Node.init(Home(tmp_path / "nas"), "nas")
    laptop = await Node.init(Home(tmp_path / "laptop"), "laptop")
    await laptop.close()
    certificate = (tmp_path / "laptop" / "tls.crt").read_bytes()
    await nas.trust.add(TrustedPeer(node_id_of(certificate), "laptop", "", certificate))
    credentials = nas.credentials if tls else None
    running = await start_server(nas.store, "nas", "127.0.0.1:0", credentials=credentials)
    try:
        yield Served(tmp_path / "nas", tmp_path / "laptop", running)
    finally:
        await running.stop(grace=0.2)
        await nas.close()


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[Served]:
    async for served in _serve(tmp_path, tls=True):
        yield served


@pytest.fixture
async def plaintext(tmp_path: Path) -> AsyncIterator[Served]:
    async for served in _serve(tmp_path, tls=False):
        yield served


def pinned_channel(served: Served, server_name: str | None = TLS_SERVER_NAME) -> grpc.Channel:
    """grpcurl -cacert SERVER/tls.crt -cert CLIENT/tls.crt -key CLIENT/tls.key
    -servername peer HOST:PORT: the server's certificate as the only root."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(served.server_home / "tls.crt").read_bytes(),
        private_key=(served.client_home / "tls.key").read_bytes(),
        certificate_chain=(served.client_home / "tls.crt").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(served.target, credentials, options=options)


def reflected(channel: grpc.Channel) -> tuple[set[str], dict[str, tuple[str, str, bool, bool]]]:
    """grpcurl's `list` and `describe peer.v1.SyncService`: the services, and the
    methods of SyncService with their types and streaming kinds."""
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    sync = DescriptorPool(database).FindServiceByName(SYNC_SERVICE)
    methods = {}
    for method in sync.methods:
        shape = MethodDescriptorProto()
        method.CopyToProto(shape)
        methods[method.name] = (
            method.input_type.full_name,
            method.output_type.full_name,
            shape.client_streaming,
            shape.server_streaming,
        )
    return services, methods


def reflect_over_mtls(served: Served) -> tuple[set[str], dict[str, tuple[str, str, bool, bool]]]:
    with pinned_channel(served) as channel:
        return reflected(channel)


def reflect_in_plaintext(
    served: Served,
) -> tuple[set[str], dict[str, tuple[str, str, bool, bool]]]:
    with grpc.insecure_channel(served.target) as channel:
        return reflected(channel)


async def test_reflection_over_mtls_lists_the_services_and_describes_sync(
    mtls: Served,
) -> None:
    services, methods = await asyncio.to_thread(reflect_over_mtls, mtls)
    assert services == SERVICES
    assert methods == SYNC_METHODS


async def test_reflection_in_plaintext_on_loopback_says_the_same(plaintext: Served) -> None:
    services, methods = await asyncio.to_thread(reflect_in_plaintext, plaintext)
    assert services == SERVICES
    assert methods == SYNC_METHODS


def health_code(served: Served, server_name: str | None) -> grpc.StatusCode:
    with pinned_channel(served, server_name) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        try:
            health.Check(health_pb2.HealthCheckRequest(service=SYNC_SERVICE), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_the_server_name_peer_is_what_the_certificate_names(mtls: Served) -> None:
    """Without `-servername peer` the handshake fails: the certificate names `peer`,
    not the address dialled."""
    assert await asyncio.to_thread(health_code, mtls, TLS_SERVER_NAME) == grpc.StatusCode.OK
    assert await asyncio.to_thread(health_code, mtls, None) == grpc.StatusCode.UNAVAILABLE
