"""The house rule: imports inside peer/ flow one way, and no modules import each other.

The layers, lowest first (the brief's order: errors → records → crypto/store → codec →
sync/service/client → daemon → cli). A module may import its own layer's modules only
inside its own package, and any module of a lower layer; nothing else. Imports made
only for type checking (under `if TYPE_CHECKING:`) count too: they are the same
dependency. The test walks peer/ with `ast`, so a new module must be given a layer here
before it can land: that is the point.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PEER = Path(__file__).resolve().parents[1] / "peer"

# Each module (or package: every module in it) and its layer. Modules of one layer do
# not import each other, except inside one package.
LAYERS: dict[str, int] = {
    # no peer imports at all
    "errors": 0,
    "clock": 0,
    "progress": 0,
    "v1": 0,
    # pure data and rules
    "records": 1,
    "addresses": 1,
    "identity": 1,
    "policy": 1,
    "tree": 2,
    "relay": 1,
    "kinds": 2,
    "settings": 3,
    "alarms": 2,
    "status": 3,
    "pairing": 2,
    "names": 1,
    "inputs": 1,
    "doorbell": 1,
    "handoff": 1,
    "locate": 1,
    "commit": 2,
    "segment": 2,
    # the only owners of their dependency: cryptography, then SQLite
    "crypto": 3,
    "store": 4,
    "roster": 4,
    # what sits on one store and its keys
    "home": 5,
    "trust": 5,
    "batches": 5,
    "watch": 5,
    "feed": 6,
    "apps": 5,
    "config": 6,
    # the wire, and what the sync engine needs of a peer
    "codec": 6,
    "remote": 7,
    "inbound": 7,
    "node": 7,
    "outbound": 8,
    # sync, service, client
    "sync": 9,
    "service": 9,
    "client": 9,
    "discovery": 9,
    "mesh": 10,
    "api": 10,
    "peers": 8,
    "devices": 8,
    "pair": 10,
    "introduce": 10,
    "sync_now": 11,
    # the daemon
    "daemon": 11,
    # the CLI (a package: common and render below the command groups, main above them)
    "cli": 12,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PEER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in sorted(PEER.rglob("*.py"))
        if "v1" not in path.relative_to(PEER).parts
    }


def imported(path: Path, known: set[str]) -> Iterator[str]:
    """The peer modules a file imports (`from peer import x` names module peer.x)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("peer."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not (node.module == "peer" or node.module.startswith("peer.")):
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                yield candidate if candidate in known else node.module


def layer_of(module: str) -> tuple[str, int]:
    """The entry of LAYERS a module belongs to: its top-level name under peer."""
    top = module.split(".")[1] if module.count(".") else ""
    assert top in LAYERS, f"{module} has no layer: give it one in tests/test_layers.py"
    return top, LAYERS[top]


def edges() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    graph: dict[str, set[str]] = {}
    for module, path in found.items():
        if module == "peer":
            continue
        targets = {t for t in imported(path, known) if t not in (module, "peer")}
        graph[module] = {t for t in targets if t.startswith("peer.")}
    return graph


def test_every_module_has_a_layer() -> None:
    missing = [m for m in modules() if m != "peer" and m.split(".")[1] not in LAYERS]
    assert not missing, f"give these a layer in tests/test_layers.py: {missing}"


def test_imports_flow_down_the_layers() -> None:
    wrong: list[str] = []
    for module, targets in edges().items():
        own, rank = layer_of(module)
        for target in targets:
            other, target_rank = layer_of(target)
            if target_rank > rank or (target_rank == rank and other != own):
                wrong.append(f"{module} (layer {rank}) imports {target} (layer {target_rank})")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    graph = edges()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


GRPC_USERS = {"codec", "service", "client"}  # and the generated code, peer/v1


def test_only_codec_service_and_client_import_grpc() -> None:
    """grpc stays behind three doors; everything else speaks domain types."""
    users: set[str] = set()
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n == "grpc" or n.startswith(("grpc.", "grpc_")) for n in names):
                users.add(module)
    outside = sorted(m for m in users if m.split(".")[1] not in GRPC_USERS)
    assert not outside, f"grpc imported outside codec, service and client: {outside}"


def test_the_rule_catches_a_wrong_edge(tmp_path: Path) -> None:
    """The walk sees both import forms, so an upward import cannot hide."""
    source = tmp_path / "m.py"
    source.write_text("from peer import daemon\nimport peer.cli\nfrom peer.store import Store\n")
    known = {"peer.daemon", "peer.cli", "peer.store"}
    assert set(imported(source, known)) == {"peer.daemon", "peer.cli", "peer.store"}
