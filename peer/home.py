"""A node's home directory: where its keys, identity and store live.

    HOME/host.key    the host's Ed25519 signing key (32 bytes, mode 0600)
    HOME/tls.key     the node's TLS key (ECDSA P-256, PEM, mode 0600)
    HOME/tls.crt     the node's self-signed certificate; its hash is the node id
    HOME/sync.key    the sync key as one line of text (mode 0600); absent on a relay
    HOME/node.json   the node's name
    HOME/config.toml settings of `peer serve` (optional; see peer/config.py)
    HOME/serve.json  where a running `peer serve` listens (for `peer invite`, programs)
    HOME/serve.lock  held (flock) by the running `peer serve`: one daemon per home
    HOME/peer.sock   the running daemon's local API (Unix socket, mode 0600)
    HOME/peer.db     the record store (SQLite, WAL)

Secret files are created with mode 0600 from the start (never chmod after writing,
which would leave a window where another user could read them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from peer.crypto import SigningKey, SyncKey, generate_tls_identity
from peer.errors import AlreadyInitialized, KeyFormatError, NotInitialized, UsageError
from peer.identity import node_id_of


def default_home(environ: Mapping[str, str]) -> Path:
    """`$PEER_HOME`, else the platform's per-user data directory."""
    if environ.get("PEER_HOME"):
        return Path(environ["PEER_HOME"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "peer"
    if sys.platform == "win32" and environ.get("APPDATA"):
        return Path(environ["APPDATA"]) / "peer"
    data = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "peer"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this node is: its signing key, its sync key (None on a relay), its name."""

    signing: SigningKey
    sync: SyncKey | None
    name: str
    tls_key: bytes
    tls_certificate: bytes

    @property
    def host(self) -> bytes:
        return self.signing.host

    @property
    def node_id(self) -> bytes:
        return node_id_of(self.tls_certificate)


@dataclass(frozen=True, slots=True)
class Serving:
    """Where a running daemon listens: sync port, pairing port, local socket; its pid."""

    address: str
    pairing_address: str
    socket: str
    pid: int


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Home:
    """Paths and files of one home directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host_key = root / "host.key"
        self.sync_key = root / "sync.key"
        self.tls_key = root / "tls.key"
        self.tls_certificate = root / "tls.crt"
        self.node_file = root / "node.json"
        self.config_file = root / "config.toml"
        self.serve_file = root / "serve.json"
        self.database = root / "peer.db"

    def exists(self) -> bool:
        return self.host_key.exists()

    def create(self, name: str, sync: SyncKey | None) -> Identity:
        """Make a new identity here; refuses to overwrite an existing one."""
        if self.exists():
            raise AlreadyInitialized(f"{self.root} already holds a peer identity")
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"cannot create the home {self.root}: {exc.strerror}") from exc
        signing = SigningKey.generate()
        write_secret(self.host_key, signing.to_bytes())
        if sync is not None:
            write_secret(self.sync_key, (sync.to_text() + "\n").encode())
        self.node_file.write_text(json.dumps({"name": name}) + "\n")
        return Identity(signing, sync, name, *self._tls())

    def load(self) -> Identity:
        """The identity stored here; NotInitialized if there is none."""
        if not self.exists():
            raise NotInitialized(f"no peer identity in {self.root}: run `peer init` first")
        signing = SigningKey.from_bytes(self.host_key.read_bytes())
        return Identity(signing, self.load_sync_key(), self._name(), *self._tls())

    def _tls(self) -> tuple[bytes, bytes]:
        """The TLS key and certificate, made on first use (also for older homes)."""
        if not self.tls_certificate.exists():
            key, certificate = generate_tls_identity()
            write_secret(self.tls_key, key)
            self.tls_certificate.write_bytes(certificate)
        return self.tls_key.read_bytes(), self.tls_certificate.read_bytes()

    def load_sync_key(self) -> SyncKey | None:
        if not self.sync_key.exists():
            return None
        try:
            return SyncKey.from_text(self.sync_key.read_text())
        except KeyFormatError as exc:
            raise KeyFormatError(f"{self.sync_key} is damaged: {exc}") from exc

    def record_serving(self, serving: Serving) -> None:
        fields = {
            "address": serving.address,
            "pairing_address": serving.pairing_address,
            "socket": serving.socket,
            "pid": serving.pid,
        }
        self.serve_file.write_text(json.dumps(fields) + "\n")

    def serving(self) -> Serving | None:
        """Where the running `peer serve` of this home listens, if one runs."""
        try:
            fields = json.loads(self.serve_file.read_text())
            serving = Serving(
                str(fields["address"]),
                str(fields["pairing_address"]),
                str(fields["socket"]),
                int(fields["pid"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return serving if _alive(serving.pid) else None

    @contextlib.contextmanager
    def lock_serving(self) -> Iterator[None]:
        """Hold the home's daemon lock: a second `peer serve` of one home is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(
                    f"a `peer serve` already runs for {self.root}; stop it first"
                ) from None
            try:
                yield
            finally:
                self.serve_file.unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing releases the lock

    def replace_sync_key(self, sync: SyncKey) -> None:
        write_secret(self.sync_key, (sync.to_text() + "\n").encode())

    def _name(self) -> str:
        try:
            name = json.loads(self.node_file.read_text()).get("name", "")
        except (OSError, ValueError, AttributeError):
            return ""
        return str(name)


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` to a new file readable by its owner only, atomically."""
    temp = path.with_name(path.name + ".tmp")
    temp.unlink(missing_ok=True)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
