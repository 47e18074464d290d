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
from peer.records import LogKey, Range
from peer.segment import Segment, Segments, layout, message_bytes_at_most
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
    packer = _Packer(max_batch)
    for wanted in merge_ranges(ranges):
        start = wanted.start
        chunk = _Chunk([], ended=False)
        while start < wanted.end:
            if packer.nearly_full():
                yield packer.take()
            want = min(packer.room(), wanted.end - start)
            if chunk.left < want + SIGN_EVERY and not chunk.ended:
                limit = max(CHUNK_RECORDS, want + SIGN_EVERY)
                found = await store.read_segments(wanted.host, wanted.tag, start, limit)
                chunk = _Chunk(found, ended=sum(part.count for part in found) < limit)
            if not chunk.left:
                break
            count = packer.add(chunk, want, wanted.log)
            if not count:  # a run that fits no more: it starts the next batch
                yield packer.take()
                continue
            start += count
            if packer.full():
                yield packer.take()
    if packer.batch:
        yield packer.take()


def pack(parts: Sequence[Segment], max_batch: int = DEFAULT_BATCH) -> list[Segments]:
    """Segments in memory (each log's consecutive, each ending signed, as stored and as
    the feed reads them) cut into messages as `read_batches` cuts what it reads: a live
    feed's records, sent as they were read."""
    packer = _Packer(max_batch)
    messages: list[Segments] = []
    for part in parts:
        if packer.batch and not packer.fits_whole(part) and _fits_alone(part, max_batch):
            messages.append(packer.take())  # rather than walk it to cut it
        if packer.add_whole(part):  # each part ends signed: it goes whole, never walked
            if packer.full():
                messages.append(packer.take())
            continue
        chunk = _Chunk([part], ended=True)
        while chunk.left:
            if packer.nearly_full():
                messages.append(packer.take())
            if not packer.add(chunk, min(packer.room(), chunk.left), part.log):
                messages.append(packer.take())
                continue
            if packer.full():
                messages.append(packer.take())
    if packer.batch:
        messages.append(packer.take())
    return messages


def _fits_alone(part: Segment, max_batch: int) -> bool:
    return part.count <= max_batch and message_bytes_at_most(part) <= MAX_BATCH_BYTES


class _Packer:
    """The message being filled: runs of logs, each cut at a signed record, up to
    about `max_batch` records and MAX_BATCH_BYTES."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.batch: list[Segment] = []
        self.records = self.used = 0

    def room(self) -> int:
        return self.max_batch - self.records

    def nearly_full(self) -> bool:
        """Too little room left for a run worth adding (start the next message)."""
        return bool(self.batch) and (
            self.room() < min(SIGN_EVERY, self.max_batch)
            or MAX_BATCH_BYTES - self.used < MAX_BATCH_BYTES // 4
        )

    def full(self) -> bool:
        return self.records >= self.max_batch or self.used >= MAX_BATCH_BYTES

    def add(self, chunk: _Chunk, want: int, log: LogKey) -> int:
        """Add the most of the chunk's next `want` records that fit and end signed;
        how many (0 when the run fits only an empty message: take this one first)."""
        budget = MAX_BATCH_BYTES - self.used
        sizes = chunk.sizes(want + SIGN_EVERY)
        count = cut_signed(sizes, want, budget)
        if not count:
            raise IntegrityError(f"log {log} has no signed record after idx {chunk.next_idx}")
        size = sum(size for size, _ in sizes[:count])
        if self.batch and size > budget:
            return 0
        self.batch += chunk.take(count)
        self.records += count
        self.used += size
        return count

    def fits_whole(self, part: Segment) -> bool:
        """Whether `part` surely fits what is left, told from its length alone."""
        return part.count <= self.room() and (
            message_bytes_at_most(part) <= MAX_BATCH_BYTES - self.used
        )

    def add_whole(self, part: Segment) -> bool:
        """Add `part` whole if it surely fits (it ends signed), without walking it."""
        if not self.fits_whole(part):
            return False
        self.batch.append(part)
        self.records += part.count
        self.used += message_bytes_at_most(part)
        return True

    def take(self) -> Segments:
        """The message, and start the next."""
        message = Segments(self.batch)
        self.batch, self.records, self.used = [], 0, 0
        return message


class _Chunk:
    """Consecutive segments of one log as read, consumed from the front: each walked
    once (`segment.layout`), then cut by byte offsets."""

    def __init__(self, parts: Sequence[Segment], *, ended: bool) -> None:
        self.parts = list(parts)
        self.layouts = [layout(part.data) for part in self.parts]
        self.ended = ended  # the log holds nothing after these
        self.left = sum(part.count for part in self.parts)
        self._part = self._entry = 0  # the first entry not taken

    @property
    def next_idx(self) -> int:
        """The idx of the first record not taken (or after the last)."""
        if self._part < len(self.parts):
            return self.parts[self._part].first_idx + self._entry
        return self.parts[-1].end if self.parts else 0

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


class Holdback:
    """Holds back a log's unsigned tail until the record that signs it arrives: the
    feed's scans stop at a number of records, which may cut a transaction in two, and
    what a subscriber is sent must end signed."""

    def __init__(self) -> None:
        self._pending: dict[LogKey, Segment] = {}

    def release(self, parts: Sequence[Segment], cut: bool) -> list[Segment]:
        """`parts` as read (in arrival order), each held tail joined to its log's next
        part; `cut`: the read stopped at its limit, so its last part may end unsigned
        (every other part ends where a transaction did: signed), and that tail waits."""
        ready: list[Segment] = []
        for part in parts:
            held = self._pending.pop(part.log, None)
            ready.append(part if held is None else held.join(part))
        if cut and ready:
            last = ready.pop()
            signed = last.signed_count()
            if signed:
                ready.append(last.slice(0, signed))
            if signed < last.count:
                self._pending[last.log] = last.skip(signed)
        return ready
