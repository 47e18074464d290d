"""A node's home directory: where its keys, identity and store live.

    HOME/host.key    the host's Ed25519 signing key (32 bytes, mode 0600)
    HOME/tls.key     the node's TLS key (ECDSA P-256, PEM, mode 0600)
    HOME/tls.crt     the node's self-signed certificate; its hash is the node id
    HOME/sync.key    the sync key as one line of text (mode 0600); absent on a relay
    HOME/keyring     the sync keys it replaced (`peer key rotate`), one a line (0600)
    HOME/enc.key     the device's X25519 key: rotated keys are wrapped for it (0600)
    HOME/node.json   the node's name
    HOME/config.toml settings of `peer serve` (optional; see peer/config.py)
    HOME/serve.json  where a running `peer serve` listens (for `peer invite`, programs)
    HOME/serve.lock  held (flock) by the running `peer serve`: one daemon per home
    HOME/peer.sock   the running daemon's local API (Unix socket, mode 0600)
    HOME/peer.wake   its doorbell: a datagram after a commit by another process (0600)
    HOME/peer.hook   its hand-off socket: the shell hook's entries (0600; peer.handoff)
    HOME/peer.db     the record store (SQLite, WAL; SQLite keeps its WAL and shared-memory
                     index beside it, named after it)

A home is private to its user: the KV and history views in peer.db are decrypted, so
another local user reading any file here reads secrets. The rules:

  - Every file peer writes here is created 0600 from the start, whatever the umask
    (never chmod after writing, which would leave a window where another user could
    read it). The store makes peer.db 0600 before SQLite opens it, and SQLite gives
    the files it keeps beside the database (WAL, shared memory, journal) its mode.
  - Creating or initialising a home (`peer init`, `peer join` into a new home) makes
    the directory 0700 and tightens peer's files already in it to 0600 (a directory
    made with `mkdir` under a 022 umask is 0755); a directory owned by another user is
    refused, since its owner could read or replace our keys.
  - Opening a home never changes modes: a home made by an older peer, or loosened by
    hand, is reported by `peer status`, `peer verify` and `peer serve` (`exposed()`:
    one warning per path, naming the chmod that fixes it), and fixed by the user.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from peer.errors import AlreadyInitialized, KeyFormatError, NotInitialized, UsageError
from peer.locate import SERVE_FILE, serving_fields

if TYPE_CHECKING:  # imported where used: the history search reads a home, not its keys
    from peer.crypto import EncryptionKey, SigningKey, SyncKey


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
        from peer.identity import node_id_of  # here: the shell hook loads a home, not this

        return node_id_of(self.tls_certificate)


@dataclass(frozen=True, slots=True)
class Serving:
    """Where a running daemon listens: sync port, pairing port, local socket; its pid."""

    address: str
    pairing_address: str
    socket: str
    pid: int


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
OPEN_TO_OTHERS = 0o077  # any group or other permission bit
FILE_NAMES = (  # every file peer keeps in a home (checked by `exposed`, tightened at init)
    "host.key",
    "sync.key",
    "keyring",
    "enc.key",
    "tls.key",
    "tls.crt",
    "node.json",
    "config.toml",
    "serve.json",
    "serve.lock",
    "peer.sock",
    "peer.wake",
    "peer.hook",
)
STORE_FILES = "peer.db*"  # the database and the files SQLite keeps beside it


class Home:
    """Paths and files of one home directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host_key = root / "host.key"
        self.sync_key = root / "sync.key"
        self.keyring = root / "keyring"
        self.encryption_key_file = root / "enc.key"
        self.tls_key = root / "tls.key"
        self.tls_certificate = root / "tls.crt"
        self.node_file = root / "node.json"
        self.config_file = root / "config.toml"
        self.serve_file = root / SERVE_FILE
        self.database = root / "peer.db"
        self.tightened: list[str] = []  # what `create` made private, for the CLI to say

    def exists(self) -> bool:
        return self.host_key.exists()

    def create(self, name: str, sync: SyncKey | None) -> Identity:
        """Make a new identity here; refuses to overwrite an existing one."""
        if self.exists():
            raise AlreadyInitialized(f"{self.root} already holds a peer identity")
        from peer.crypto import SigningKey

        self.tightened = self.make_private()
        signing = SigningKey.generate()
        write_private(self.host_key, signing.to_bytes())
        if sync is not None:
            write_private(self.sync_key, (sync.to_text() + "\n").encode())
        write_private(self.node_file, (json.dumps({"name": name}) + "\n").encode())
        return Identity(signing, self.load_sync_key(), name, *self._tls())

    def make_private(self) -> list[str]:
        """Create the home 0700, or make an existing one of ours 0700 and peer's files
        in it 0600; a note for each mode changed. Refuses a directory of another user."""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
            owner = self.root.stat().st_uid
        except OSError as exc:
            raise UsageError(f"cannot create the home {self.root}: {exc.strerror}") from exc
        if owner != os.geteuid():
            raise UsageError(
                f"{self.root} belongs to another user (uid {owner}), who could read or "
                "replace its keys; choose a home directory you own"
            )
        notes = [_tighten(self.root, PRIVATE_DIR)]
        notes += [_tighten(path, PRIVATE_FILE) for path in self.files()]
        return [note for note in notes if note]

    def files(self) -> list[Path]:
        """Peer's files that exist in this home (the store's: all named peer.db*)."""
        named = [path for path in map(self.root.joinpath, FILE_NAMES) if path.exists()]
        return named + sorted(self.root.glob(STORE_FILES))

    def exposed(self) -> list[str]:
        """A warning, with its fix, for the home and each of its files that another user
        may read or write (no mode is changed: see the module's docstring)."""
        warnings: list[str] = []
        for path, private in [(self.root, PRIVATE_DIR), *((p, PRIVATE_FILE) for p in self.files())]:
            mode = _mode(path)
            if mode is not None and mode & OPEN_TO_OTHERS:
                what = "the home " if path == self.root else ""
                warnings.append(
                    f"{what}{path} is open to other users (mode {mode:04o}): "
                    f"run `chmod {private:o} {path}`"
                )
        return warnings

    def load(self) -> Identity:
        """The identity stored here; NotInitialized if there is none."""
        if not self.exists():
            raise NotInitialized(f"no peer identity in {self.root}: run `peer init` first")
        from peer.crypto import SigningKey

        signing = SigningKey.from_bytes(self.host_key.read_bytes())
        return Identity(signing, self.load_sync_key(), self._name(), *self._tls())

    def _tls(self) -> tuple[bytes, bytes]:
        """The TLS key and certificate, made on first use (also for older homes)."""
        if not self.tls_certificate.exists():
            from peer.crypto import generate_tls_identity

            key, certificate = generate_tls_identity()
            write_private(self.tls_key, key)
            write_private(self.tls_certificate, certificate)
        return self.tls_key.read_bytes(), self.tls_certificate.read_bytes()

    def load_sync_key(self) -> SyncKey | None:
        """The current sync key, holding the keys it replaced and the roster's public
        key as older keys (so every record of the roster, and of before a rotation,
        opens)."""
        if not self.sync_key.exists():
            return None
        from peer.crypto import ROSTER_KEY, SyncKey

        older: list[SyncKey] = []
        try:
            current = SyncKey.from_text(self.sync_key.read_text())
            if self.keyring.exists():
                older = [SyncKey.from_text(line) for line in self.keyring.read_text().split()]
        except KeyFormatError as exc:
            raise KeyFormatError(f"{self.sync_key} or its keyring is damaged: {exc}") from exc
        return SyncKey(current.secret, older=(*older, ROSTER_KEY))

    def encryption_key(self) -> EncryptionKey:
        """This device's X25519 key, made on first use (also for older homes)."""
        from peer.crypto import EncryptionKey

        if not self.encryption_key_file.exists():
            write_private(self.encryption_key_file, EncryptionKey.generate().to_bytes())
        return EncryptionKey.from_bytes(self.encryption_key_file.read_bytes())

    def record_serving(self, serving: Serving) -> None:
        fields = {
            "address": serving.address,
            "pairing_address": serving.pairing_address,
            "socket": serving.socket,
            "pid": serving.pid,
        }
        write_private(self.serve_file, (json.dumps(fields) + "\n").encode())

    def serving(self) -> Serving | None:
        """Where the running `peer serve` of this home listens, if one runs."""
        fields = serving_fields(self.serve_file)
        if fields is None:
            return None
        try:
            return Serving(
                str(fields["address"]),
                str(fields["pairing_address"]),
                str(fields["socket"]),
                int(fields["pid"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    @contextlib.contextmanager
    def lock_serving(self) -> Iterator[None]:
        """Hold the home's daemon lock: a second `peer serve` of one home is refused."""
        self.root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        fd = os.open(self.root / "serve.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
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
        """Write `sync` as the current key, and the keys it holds as older to the
        keyring (first, so a crash between the two loses no key)."""
        from peer.crypto import ROSTER_KEY

        older = [key.to_text() for key in sync.older if key.key_id != ROSTER_KEY.key_id]
        if older or self.keyring.exists():
            write_private(self.keyring, "".join(line + "\n" for line in older).encode())
        write_private(self.sync_key, (sync.to_text() + "\n").encode())

    def _name(self) -> str:
        try:
            name = json.loads(self.node_file.read_text()).get("name", "")
        except (OSError, ValueError, AttributeError):
            return ""
        return str(name)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a new file readable by its owner only, atomically (a mode given
    to open(2) is only ever narrowed by the umask, so 0600 holds under any umask)."""
    # a name of its own: the daemon and a command may replace one file at once (a key
    # rotation in the CLI while the daemon takes the same key from the roster)
    temp = path.with_name(f"{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _tighten(path: Path, private: int) -> str:
    """chmod `path` to `private` if it differs; a note if it was open to others."""
    mode = _mode(path)
    if mode is None or mode == private:
        return ""
    try:
        path.chmod(private)
    except OSError as exc:
        raise UsageError(f"cannot make {path} private: {exc.strerror}") from exc
    if not mode & OPEN_TO_OTHERS:
        return ""
    return f"{path} was open to other users (mode {mode:04o}); it is now {private:04o}"
