"""Keys, sealing, signatures and chains, TLS identities: the only user of `cryptography`.

- `keys`: the sync key one user's devices share, and each host's Ed25519 signing key
  (the host id is derived from its public half).
- `sealing`: a fresh content key per record seals its payload (AES-256-GCM, the
  record's metadata as associated data), wrapped with the sync key; `Author` writes a
  host's own records: sealed, chained and signed.
- `chain`: the record hash is SHA-256 of `records.hash_input`; `prev` links each record
  to the hash of the one before. The host signs the hash (Ed25519) of every record at
  idx = k*SIGN_EVERY - 1 and of the last record of every append, so one verified
  signature authenticates everything before it and any batch can end on a signature;
  and what a receiver checks of keys, signatures and chains.
- `tls`: a node's TLS key and self-signed certificate, and what a pinned one must be.
- `wrapping`: the roster's keys, and a rotated sync key wrapped for each device.

`tls` is imported on first use of one of its names: it pulls in X.509, and most
processes (the shell hook's, every CLI command that only reads or writes the store)
never open a TLS connection (7 ms of the hook's 36 ms of imports).
"""

from typing import TYPE_CHECKING, Any

from peer.crypto.chain import (
    RUN_PAYLOAD_BYTES,
    SIGN_BYTES,
    SIGN_EVERY,
    ChainCheck,
    check_host_key,
    host_key_problem,
    must_sign,
    record_hash,
    verify_chain,
    verify_segment,
    verify_signature,
)
from peer.crypto.keys import KEY_ID_LEN, KEY_TEXT_PREFIX, SYNC_KEY_LEN, SigningKey, SyncKey, host_id
from peer.crypto.sealing import (
    MAX_PLAINTEXT,
    WRAPPED_KEY_LEN,
    Author,
    Sealed,
    open_or_why,
    open_record,
    record_key_id,
    seal,
)
from peer.crypto.wrapping import (
    ENCRYPTION_KEY_LEN,
    ROSTER_KEY,
    WRAPPED_SYNC_KEY_LEN,
    EncryptionKey,
    unwrap_sync_key,
    wrap_sync_key,
)

if TYPE_CHECKING:
    from peer.crypto.tls import (
        TLS_SERVER_NAME,
        check_node_certificate,
        generate_tls_identity,
        sign_with_tls_key,
        verify_tls_signature,
    )

_TLS_NAMES = {
    "TLS_SERVER_NAME",
    "check_node_certificate",
    "generate_tls_identity",
    "sign_with_tls_key",
    "verify_tls_signature",
}


def __getattr__(name: str) -> Any:
    if name in _TLS_NAMES:
        from peer.crypto import tls

        return getattr(tls, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENCRYPTION_KEY_LEN",
    "KEY_ID_LEN",
    "KEY_TEXT_PREFIX",
    "MAX_PLAINTEXT",
    "ROSTER_KEY",
    "RUN_PAYLOAD_BYTES",
    "SIGN_BYTES",
    "SIGN_EVERY",
    "SYNC_KEY_LEN",
    "TLS_SERVER_NAME",
    "WRAPPED_KEY_LEN",
    "WRAPPED_SYNC_KEY_LEN",
    "Author",
    "ChainCheck",
    "EncryptionKey",
    "Sealed",
    "SigningKey",
    "SyncKey",
    "check_host_key",
    "check_node_certificate",
    "generate_tls_identity",
    "host_id",
    "host_key_problem",
    "must_sign",
    "open_or_why",
    "open_record",
    "record_hash",
    "record_key_id",
    "seal",
    "sign_with_tls_key",
    "unwrap_sync_key",
    "verify_chain",
    "verify_segment",
    "verify_signature",
    "verify_tls_signature",
    "wrap_sync_key",
]
