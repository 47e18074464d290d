"""The roster: one person's devices, as a replicated log of signed membership events.

Every member writes its events to its own log of the reserved tag `peer.roster`, so the
ordinary sync moves them and the record signatures authenticate them. This package is
pure: the events and their byte layout (`events`, docs/protocol.md §14.2) and the
merge rule (`fold`, §14.3), which turns any set of events into one roster state. The
same events give the same state on every device, whatever order they arrived in:

- two nodes are linked when each added the other (both ends of a join write an add);
  the members are the nodes linked to the device that folds (its root), step by step;
- a revocation is final: no add brings that node id back, and the revoked node's
  events written after it (by the clock) past what the revoker had seen of its log
  are ignored;
- the current key is the eligible rotation with the greatest (timestamp, hash): one
  written after every revocation, wrapped for no revoked node;
- events whose author is no member change nothing, and are counted as refused.
"""

from peer.roster.events import (
    ADD,
    CARD,
    CARD_PROOF_PREFIX,
    DEVICE,
    EVENT_PREFIX,
    MAX_CERTIFICATE,
    MAX_TEXT,
    NO_KEY,
    RELAY,
    REVOKE,
    ROLES,
    ROSTER_TAG,
    ROTATE,
    Add,
    Body,
    Card,
    Event,
    Revoke,
    Rotate,
    card_claim,
    card_is_proven,
    decode,
    encode,
    new_card,
)
from peer.roster.fold import Device, Roster, fold

__all__ = [
    "ADD",
    "CARD",
    "CARD_PROOF_PREFIX",
    "DEVICE",
    "EVENT_PREFIX",
    "MAX_CERTIFICATE",
    "MAX_TEXT",
    "NO_KEY",
    "RELAY",
    "REVOKE",
    "ROLES",
    "ROSTER_TAG",
    "ROTATE",
    "Add",
    "Body",
    "Card",
    "Device",
    "Event",
    "Revoke",
    "Roster",
    "Rotate",
    "card_claim",
    "card_is_proven",
    "decode",
    "encode",
    "fold",
    "new_card",
]
