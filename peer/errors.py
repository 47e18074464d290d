"""Every error peer raises on purpose, as one documented tree.

    PeerError                      base; `retryable` says whether trying again may help
    ├── UsageError                 the user asked for something impossible (bad flag, bad text)
    │   ├── NotInitialized         no identity in this home: run `peer init`
    │   ├── ConfigError            config.toml, a PEER_* variable or a flag holds a bad value
    │   │   └── SettingError       a settings section refuses a value (the keys at fault)
    │   └── AlreadyInitialized     `peer init` on a home that already has an identity
    ├── NotFound                   the key or history entry asked for does not exist
    ├── InvalidRecord              a field is out of its bounds (malformed input)
    ├── IntegrityError             a record or batch breaks a rule of the log
    │   ├── GapError             ↻ a batch would leave a hole; carries the idx expected
    │   ├── ForgeryError           chain link or signature does not verify
    │   ├── UnknownHost            no public key known for the host of a record
    │   ├── ForkDetected         ↻ a different authentic record at an occupied idx
    │   └── LogFrozen            ↻ the log holds fork evidence; nothing more is accepted
    ├── CryptoError                the sync key cannot open a record
    │   ├── WrongKey               sealed with another sync key (names both key ids)
    │   └── DecryptionFailed       the ciphertext or its metadata was altered
    ├── KeyFormatError             a key text or key file is not a peer key
    ├── StoreError               ↻ the database failed (disk full, I/O error, locked)
    │   ├── StoreFull            ↻ the disk (or the database's size cap) is full
    │   └── SchemaTooNew           the database was written by a newer peer
    ├── ProtocolError              a peer sent a malformed or out-of-bounds message
    │   └── Unsupported            the peer does not know the call (an older version)
    ├── LimitExceeded            ↻ a peer asked for more than a limit allows (streams, size)
    │   └── Throttled            ↻ a caller over its request rate, or cut off for a while
    ├── PeerRefused              ↻ a peer would not serve us (not trusted, or it is failing)
    └── PeerUnavailable          ↻ a peer cannot be reached or the connection broke
        └── PeerTimeout          ↻ a call to a peer ran past its deadline

↻ marks the retryable classes: a later attempt may succeed with nobody acting, so the
mesh retries after a doubling backoff. The others wait for someone to act (upgrade
peer, import the key, fix the data or the command line), so the mesh waits its
longest backoff at once; a call from the peer or LAN discovery still wakes it.

Each class's docstring says when it happens and what to do; messages are written for
the user and never contain Python type names. Causes are chained with `raise ... from`.
The class names cross the wire (trailing metadata `peer-error`, docs/protocol.md §11).
"""

from __future__ import annotations


class PeerError(Exception):
    """Base of every error peer raises on purpose."""

    # May a later attempt succeed with nobody acting? The mesh backs off doubling if so,
    # and waits its longest backoff at once if not (docs/protocol.md §9.1).
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(PeerError):
    """The request cannot be done as asked; fix the command line or input."""


class NotInitialized(UsageError):
    """The home directory has no identity yet; run `peer init` first."""


class ConfigError(UsageError):
    """A setting is invalid; the message names its source (file, variable, flag) and the fix."""


class SettingError(ConfigError):
    """A value, or a pair of values, a section refuses. `keys` are the dotted keys at
    fault, in the order to blame them; `sourced` a key whose source the message adds
    (`peer.config` names the source; a ConfigError to everyone else)."""

    def __init__(
        self, message: str, keys: tuple[str, ...] = (), sourced: str | None = None
    ) -> None:
        super().__init__(message)
        self.keys = keys
        self.sourced = sourced


class AlreadyInitialized(UsageError):
    """`peer init` found an identity already; use another `--home` or keep this one."""


class NotFound(PeerError):
    """The KV key or history entry asked for does not exist (or was deleted)."""


class InvalidRecord(PeerError):
    """A record field is outside its bounds; the sender produced malformed data."""


class IntegrityError(PeerError):
    """A record or batch breaks a rule of the log; it was not stored."""


class GapError(IntegrityError):
    """A batch does not start where the stored log ends; resend from `expected_idx`."""

    retryable = True

    def __init__(self, message: str, expected_idx: int) -> None:
        super().__init__(message)
        self.expected_idx = expected_idx


class ForgeryError(IntegrityError):
    """A chain link or signature does not verify: the data was forged or damaged."""


class UnknownHost(IntegrityError):
    """No public key is known for a record's host; the sender must include it."""


class ForkDetected(IntegrityError):
    """The host signed two different records at one idx; evidence kept, log frozen."""

    retryable = True  # the session ends; the next one leaves the frozen log out


class LogFrozen(IntegrityError):
    """The log holds fork evidence, so it accepts and relays nothing more."""

    retryable = True  # frozen meanwhile: the next session leaves it out


class CryptoError(PeerError):
    """The sync key cannot open a record."""


class WrongKey(CryptoError):
    """The record was sealed with another sync key: import the right one with `peer key`."""

    def __init__(self, record_key_id: str, node_key_id: str, *, message: str = "") -> None:
        """`message` replaces the text made of the ids: a WrongKey that a peer reported
        arrives as its text alone (the ids are in it, and empty here)."""
        made = (
            f"this record was written with key {record_key_id}; this node holds key {node_key_id}"
        )
        super().__init__(message or made)
        self.record_key_id = record_key_id
        self.node_key_id = node_key_id


class DecryptionFailed(CryptoError):
    """Authentication failed: payload, key or metadata were altered after sealing."""


class KeyFormatError(PeerError):
    """A key text or key file is not a peer key (typo, truncated, wrong kind)."""


class StoreError(PeerError):
    """The database failed; the message says why (disk full, I/O error, locked)."""

    retryable = True


class StoreFull(StoreError):
    """The disk, or the size cap of the database, is full: free space; writes resume."""


class SchemaTooNew(StoreError):
    """The database was written by a newer peer; upgrade peer to open it."""

    retryable = False


class ProtocolError(PeerError):
    """A peer sent a malformed or out-of-bounds message; it was discarded."""


class Unsupported(ProtocolError):
    """The peer does not know the call: it runs an older version (the caller falls
    back to what that version has, where there is such a thing)."""


class LimitExceeded(PeerError):
    """A caller exceeded a limit (concurrent streams, message size); retry later."""

    retryable = True


class Throttled(LimitExceeded):
    """A caller over its request rate, or cut off for a while: answered slowly, so that
    a flood costs the flooder time rather than costing this node CPU."""


class PeerRefused(PeerError):
    """A peer refused to serve us; the message says why and what to do."""

    # A pin on the other side, or its reading our certificate, ends it with nothing to
    # wake us; and a connection reset in the TLS handshake reads the same as a refusal.
    retryable = True


class PeerUnavailable(PeerError):
    """A peer cannot be reached, or the connection broke; sync resumes next time."""

    retryable = True


class PeerTimeout(PeerUnavailable):
    """A call to a peer ran past its deadline."""
