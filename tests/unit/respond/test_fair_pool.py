"""The slow lane: round robin between (policy, workload) sub-queues, so a flood from one
workload does not delay another's work; when full, a notify goes first, then a snapshot,
taken from the flooding sub-queue; every drop is reported."""

from __future__ import annotations

import threading

from enforcer.respond.fair_pool import FairPool, importance


def test_importance_orders_notify_snapshot_then_the_rest() -> None:
    assert importance(["notify"]) < importance(["snapshot", "notify"]) < importance(
        ["delete_pod"])


def test_a_flood_from_one_workload_does_not_starve_another() -> None:
    ran: list[str] = []
    gate = threading.Event()

    def run(item: str) -> None:
        gate.wait(5)
        ran.append(item)

    pool = FairPool(run, lambda item, why: None, capacity=1000, threads=1)
    for i in range(100):
        pool.put(("p", "A"), f"A{i}", 1)
    pool.put(("p", "B"), "B0", 1)
    pool.start()
    gate.set()
    pool.join()
    pool.stop()
    # A's first item was already taken when B's came; B's runs next, not after 100 of A's
    assert ran.index("B0") <= 2


def test_when_full_notify_goes_first_then_snapshot_and_each_drop_is_reported() -> None:
    dropped: list[tuple[str, str]] = []
    pool = FairPool(lambda item: None, lambda item, why: dropped.append((item, why)),
                    capacity=3, threads=1)
    assert pool.put(("flood", "A"), "A-snapshot", importance(["snapshot"]))
    assert pool.put(("flood", "A"), "A-notify", importance(["notify"]))
    assert pool.put(("other", "B"), "B-snapshot", importance(["snapshot"]))
    # full: a Kubernetes action takes the notify's room, then the flood's snapshot's
    assert pool.put(("k8s", "C"), "C-delete", importance(["delete_pod"]))
    assert pool.put(("k8s", "D"), "D-delete", importance(["delete_pod"]))
    # nothing less important is queued: the newcomer notify is the one dropped
    assert not pool.put(("flood", "A"), "A-notify-2", importance(["notify"]))
    assert dropped == [], "reported on the pool's threads, never on the caller's"
    pool.start()
    pool.join()
    pool.stop()
    assert [d for d, _ in dropped] == ["A-notify", "A-snapshot", "A-notify-2"]
    assert all("full" in why for _, why in dropped)


def test_one_workload_s_items_run_in_order_even_with_several_threads() -> None:
    ran: list[int] = []
    lock = threading.Lock()

    def run(item: int) -> None:
        with lock:
            ran.append(item)

    pool = FairPool(run, lambda item, why: None, capacity=100, threads=4).start()
    for i in range(50):
        pool.put(("p", "A"), i, 1)
    pool.join()
    pool.stop()
    assert ran == list(range(50))
