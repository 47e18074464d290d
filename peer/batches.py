"""Cutting logs into batches that a receiver can authenticate on their own.

A batch of one log must end on a signed record (the signature vouches for the chain
before it). Authors sign every SIGN_EVERY-th record and the last of every append, and
a store's last record of every log is always signed, so such a cut always exists
within SIGN_EVERY records. Several logs' runs may share one message.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence

from peer.crypto import SIGN_EVERY
from peer.errors import IntegrityError
from peer.records import LogKey, Range, Record, group_by_log, message_size
from peer.segment import Segment, Segments, layout
from peer.settings import DEFAULT_BATCH, STOCK_MESSAGE_BYTES
from peer.store import Store

# The records of one message, counted by `records.message_size`; the rest of a stock
# client's 4 MiB is left for host keys (at most 4,096 of 54 bytes) and the framing.
MAX_BATCH_BYTES = STOCK_MESSAGE_BYTES - (512 << 10)
CHUNK_RECORDS = 8192  # records of a log read at once to cut into messages (two segments)


def cut_signed(sizes: Sequence[tuple[int, bool]], want: int, budget: int) -> int:
    """How many of the records described by `sizes` ((bytes, signed) each) to send:
    the most that fit `want` records and `budget` bytes and end signed, else the fewest
    that end signed (a batch never ends unsigned)."""
    used = 0
    last_fit = -1
    for position, (size, signed) in enumerate(sizes):
        used += size
        over = position >= want or used > budget
        if over and last_fit >= 0:
            break
        if signed:
            last_fit = position
            if over:
                break
    return last_fit + 1


async def read_batches(
    store: Store, ranges: Iterable[Range], max_batch: int = DEFAULT_BATCH
) -> AsyncGenerator[Segments, None]:
    """The records of `ranges` (each extended to its next signature) in batches of
    about `max_batch` records and at most MAX_BATCH_BYTES (a run between signatures is
    at most crypto.RUN_PAYLOAD_BYTES of payload, so it always fits one), several logs
    per batch when they are short: as the stored segments, sliced, never decoded.
    A log is read in chunks of about CHUNK_RECORDS, each segment walked once however
    many messages it is cut into."""
    batch: list[Segment] = []
    records = used = 0
    for wanted in merge_ranges(ranges):
        start = wanted.start
        chunk = _Chunk([], ended=False)
        while start < wanted.end:
            room, budget = max_batch - records, MAX_BATCH_BYTES - used
            if batch and (room < min(SIGN_EVERY, max_batch) or budget < MAX_BATCH_BYTES // 4):
                yield Segments(batch)
                batch, records, used = [], 0, 0
                room, budget = max_batch, MAX_BATCH_BYTES
            want = min(room, wanted.end - start)
            if chunk.left < want + SIGN_EVERY and not chunk.ended:
                limit = max(CHUNK_RECORDS, want + SIGN_EVERY)
                found = await store.read_segments(wanted.host, wanted.tag, start, limit)
                chunk = _Chunk(found, ended=sum(part.count for part in found) < limit)
            if not chunk.left:
                break
            sizes = chunk.sizes(want + SIGN_EVERY)
            count = cut_signed(sizes, want, budget)
            if not count:
                raise IntegrityError(f"log {wanted.log} has no signed record after idx {start}")
            size = sum(size for size, _ in sizes[:count])
            if batch and size > budget:  # a run that fits no more: it starts the next batch
                yield Segments(batch)
                batch, records, used = [], 0, 0
                continue
            batch += chunk.take(count)
            records += count
            used += size
            start += count
            if records >= max_batch or used >= MAX_BATCH_BYTES:
                yield Segments(batch)
                batch, records, used = [], 0, 0
    if batch:
        yield Segments(batch)


class _Chunk:
    """Consecutive segments of one log as read, consumed from the front: each walked
    once (`segment.layout`), then cut by byte offsets."""

    def __init__(self, parts: Sequence[Segment], *, ended: bool) -> None:
        self.parts = list(parts)
        self.layouts = [layout(part.data) for part in self.parts]
        self.ended = ended  # the log holds nothing after these
        self.left = sum(part.count for part in self.parts)
        self._part = self._entry = 0  # the first entry not taken

    def sizes(self, limit: int) -> list[tuple[int, bool]]:
        """(message size, signed?) of up to `limit` entries not taken yet."""
        found: list[tuple[int, bool]] = []
        entry = self._entry
        for entries in self.layouts[self._part :]:
            found += [
                (size, signed) for size, signed, _ in entries[entry : entry + limit - len(found)]
            ]
            entry = 0
            if len(found) >= limit:
                break
        return found

    def take(self, count: int) -> list[Segment]:
        """The next `count` entries, as slices of their segments."""
        taken: list[Segment] = []
        self.left -= count
        while count:
            part, entries, entry = self.parts[self._part], self.layouts[self._part], self._entry
            n = min(count, len(entries) - entry)
            begin = entries[entry - 1][2] if entry else 0
            end = entries[entry + n - 1][2]
            data = part.data if begin == 0 and end == len(part.data) else part.data[begin:end]
            taken.append(Segment(part.host, part.tag, part.first_idx + entry, n, data))
            count -= n
            if entry + n == len(entries):
                self._part, self._entry = self._part + 1, 0
            else:
                self._entry = entry + n
        return taken


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Overlapping or touching ranges of one log merged (a batch never repeats an idx),
    in the order each log first appears."""
    merged: dict[LogKey, list[Range]] = {}
    for r in ranges:
        merged.setdefault(r.log, []).append(r)
    result: list[Range] = []
    for runs in merged.values():
        runs.sort()
        current = runs[0]
        for r in runs[1:]:
            if r.start <= current.end:
                current = Range(current.host, current.tag, current.start, max(current.end, r.end))
            else:
                result.append(current)
                current = r
        result.append(current)
    return result


def split_for_wire(records: Sequence[Record], max_batch: int = DEFAULT_BATCH) -> list[list[Record]]:
    """Records (each log's run ending signed) cut into messages of at most `max_batch`
    records and MAX_BATCH_BYTES, each log's run in each message ending signed."""
    messages: list[list[Record]] = []
    current: list[Record] = []
    used = 0
    for log_run in group_by_log(records).values():
        rest = log_run
        while rest:
            sizes = [(message_size(r), bool(r.sig)) for r in rest]
            room, budget = max_batch - len(current), MAX_BATCH_BYTES - used
            count = cut_signed(sizes, room, budget)
            size = sum(s for s, _ in sizes[:count])
            if current and (count == 0 or count > room or size > budget):
                messages.append(current)
                current, used = [], 0
                continue
            if count == 0:
                raise IntegrityError(f"log {rest[0].log} has no signed record to end a message")
            current += rest[:count]
            used += size
            rest = rest[count:]
    if current:
        messages.append(current)
    return messages


class Holdback:
    """Holds back each log's unsigned tail until the record that signs it arrives
    (a live feed may see a transaction's records split across two reads)."""

    def __init__(self) -> None:
        self._pending: dict[LogKey, list[Record]] = {}

    def holds(self, log: LogKey) -> bool:
        """Whether records of `log` wait for their signature here."""
        return log in self._pending

    def release(self, records: Iterable[Record]) -> list[Record]:
        """The records that now end on a signature, per log, in order."""
        return [r for run in self.release_runs(group_by_log(records)).values() for r in run]

    def release_runs(self, runs: dict[LogKey, list[Record]]) -> dict[LogKey, list[Record]]:
        """The same, from records grouped per log and to them: a pass per log, not per
        record, for every follower of a live feed releases every read."""
        ready: dict[LogKey, list[Record]] = {}
        for log, read in runs.items():
            waiting = self._pending.pop(log, None)
            run = waiting + read if waiting else read
            signed = len(run)
            while signed and not run[signed - 1].sig:
                signed -= 1
            if signed:
                ready[log] = run if signed == len(run) else run[:signed]
            if signed < len(run):
                self._pending[log] = run[signed:]
        return ready
