"""`peer.tree`: the follower's decisions of docs/protocol.md §7.5, one row at a time."""

from __future__ import annotations

from peer.records import LogKey
from peer.tree import GRAFT_AFTER_S, Graft, Prune, Tree

A, B, C = b"A" * 32, b"B" * 32, b"C" * 32  # neighbours' node ids
HOST_A, HOST_X = b"a" * 16, b"x" * 16  # A's host, and a host that is nobody's neighbour
OWN = b"o" * 16
L = LogKey(HOST_X, "kv")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tree_with(*peers: bytes, held: int = 0) -> tuple[Tree, Clock]:
    clock = Clock()
    tree = Tree({L: held} if held else {}, OWN, clock)
    for peer in peers:
        tree.up(peer)
    if A in peers:
        tree.met(A, HOST_A)
    return tree, clock


def test_a_note_ahead_of_a_log_nobody_feeds_grafts_it_from_the_noter() -> None:
    tree, _ = tree_with(A, B, held=3)
    assert tree.noted(B, {L: 5}) == [Graft(B, L, 3)]
    assert tree.upstream[L] == B
    assert tree.noted(A, {L: 5}) == []  # fed already: a second note waits


def test_notes_not_ahead_and_own_logs_graft_nothing() -> None:
    tree, _ = tree_with(A, B, held=5)
    assert tree.noted(B, {L: 5}) == []
    assert tree.noted(B, {LogKey(OWN, "kv"): 9}) == []


def test_the_authors_node_is_waited_for_not_grafted_around() -> None:
    """A log of A's host noted by B: A sends it unasked, so nothing is grafted."""
    tree, clock = tree_with(A, B)
    log_a = LogKey(HOST_A, "kv")
    assert tree.noted(B, {log_a: 4}) == []
    assert tree.upstream[log_a] == A
    tree.advanced({log_a: 4})
    clock.now += GRAFT_AFTER_S * 2
    assert tree.tick() == []  # it arrived: nothing to mend


def test_duplicates_from_a_neighbour_that_is_not_the_upstream_prune_it() -> None:
    tree, _ = tree_with(B, C, held=3)
    tree.noted(B, {L: 5})
    assert tree.received(B, L, added=2, duplicates=0) == []
    assert tree.received(C, L, added=0, duplicates=2) == [Prune(C, L)]
    assert tree.upstream[L] == B


def test_the_author_feeding_duplicates_takes_over_from_a_relay() -> None:
    tree, _ = tree_with(A, B)
    log_a = LogKey(HOST_A, "kv")
    tree.noted(B, {log_a: 2})  # A is waited for (upstream), B noted it
    tree.upstream[log_a] = B  # say B was grafted before A's stream opened
    assert tree.received(A, log_a, added=0, duplicates=2) == [Prune(B, log_a)]
    assert tree.upstream[log_a] == A


def test_a_neighbour_going_down_hands_its_logs_to_the_best_noter() -> None:
    tree, _ = tree_with(A, B, C, held=3)
    tree.noted(B, {L: 5})
    tree.noted(C, {L: 7})
    assert tree.upstream[L] == B
    assert tree.down(B) == [Graft(C, L, 3)]
    assert tree.upstream[L] == C
    assert tree.down(C) == []  # nobody else noted it: the next round mends it
    assert L not in tree.upstream


def test_an_upstream_left_behind_for_graft_after_s_is_replaced() -> None:
    tree, clock = tree_with(B, C, held=3)
    tree.noted(B, {L: 5})
    tree.received(B, L, added=2, duplicates=0)
    tree.advanced({L: 5})
    tree.noted(C, {L: 9})  # C is ahead; B should deliver soon
    clock.now += GRAFT_AFTER_S / 2
    assert tree.tick() == []
    clock.now += GRAFT_AFTER_S
    assert tree.tick() == [Prune(B, L), Graft(C, L, 5)]
    assert tree.feeders() == {C: [L]}


def test_the_graft_wait_is_a_setting() -> None:
    """`sync.graft_after` of 5 s (slow links, a loaded node): a feeder 2 s behind the
    noter keeps its log; at 5 s it is replaced."""
    clock = Clock()
    tree = Tree({L: 3}, OWN, clock, graft_after_s=5.0)
    for peer in (B, C):
        tree.up(peer)
    tree.noted(B, {L: 5})
    tree.received(B, L, added=2, duplicates=0)
    tree.advanced({L: 5})
    tree.noted(C, {L: 9})
    clock.now += 2.0
    assert tree.tick() == []
    clock.now += 3.0
    assert tree.tick() == [Prune(B, L), Graft(C, L, 5)]
