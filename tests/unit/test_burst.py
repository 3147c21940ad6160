"""operators/burst.py: pod annotations are held while a burst of pods is starting."""

from __future__ import annotations

from typing import Any

from operators.burst import Burst, starting
from operators.state import Publish


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pod(node: str = "node1", ip: str = "", phase: str = "Pending",
        host: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"nodeName": node, "hostNetwork": host},
            "status": {"phase": phase, "podIP": ip}}


def annotation(key: str, token: str = "net") -> Publish:
    return Publish("pods", key, token, lambda: None)


def burst_of(count: int, clock: Clock, threshold: int = 3) -> Burst:
    burst = Burst(threshold=threshold, longest=10.0, clock=clock)
    for i in range(count):
        burst.observe(f"ns/p{i}", pod())
    return burst


def test_starting_means_bound_without_pod_ip() -> None:
    assert starting(pod())
    assert not starting(pod(node=""))
    assert not starting(pod(ip="10.16.0.5", phase="Running"))
    assert not starting(pod(host=True))
    assert not starting(pod(phase="Failed"))
    assert not starting(None)


def test_a_few_pods_are_annotated_at_once() -> None:
    clock = Clock()
    burst = burst_of(2, clock)
    assert burst.admit(annotation("ns/p0"))
    assert not burst.held


def test_other_writes_are_never_held() -> None:
    clock = Clock()
    burst = burst_of(5, clock)
    assert burst.admit(Publish("subnets", "s", "t", lambda: None))


def test_held_during_a_burst_and_released_once_no_pod_is_starting() -> None:
    clock = Clock()
    burst = burst_of(5, clock)
    assert not burst.admit(annotation("ns/p0"))
    assert not burst.admit(annotation("ns/p1"))
    assert burst.release() == []
    for i in range(4):
        burst.observe(f"ns/p{i}", pod(ip=f"10.16.0.{i + 2}", phase="Running"))
    assert burst.release() == []  # one pod still starting: the burst goes on
    burst.forget("ns/p4")
    assert sorted(p.key for p in burst.release()) == ["ns/p0", "ns/p1"]
    assert not burst.active and burst.admit(annotation("ns/p2"))


def test_held_at_most_longest_seconds() -> None:
    clock = Clock()
    burst = burst_of(5, clock)
    assert not burst.admit(annotation("ns/p0"))
    clock.now += 4
    assert not burst.admit(annotation("ns/p1"))
    clock.now += 6
    # p0 waited 10 s; and the pods starting since then are no longer recent: the burst ends.
    assert sorted(p.key for p in burst.release()) == ["ns/p0", "ns/p1"]


def test_deadline_while_new_pods_keep_starting() -> None:
    clock = Clock()
    burst = burst_of(5, clock)
    assert not burst.admit(annotation("ns/p0"))
    clock.now += 6
    for i in range(5, 10):
        burst.observe(f"ns/p{i}", pod())
    assert not burst.admit(annotation("ns/p5"))
    clock.now += 4
    assert [p.key for p in burst.release()] == ["ns/p0"]
    assert burst.active and "ns/p5" in burst.held


def test_a_newer_write_replaces_the_held_one_and_keeps_its_age() -> None:
    clock = Clock()
    burst = burst_of(5, clock)
    assert not burst.admit(annotation("ns/p0", "old"))
    clock.now += 5
    for i in range(5):
        burst.observe(f"ns/p{i}", None)
    # The burst is over, but p0 still has a write held: the new one must not overtake it.
    assert not burst.admit(annotation("ns/p0", "new"))
    released = burst.release()
    assert [(p.key, p.token) for p in released] == [("ns/p0", "new")]


def test_a_deleted_pod_is_forgotten() -> None:
    clock = Clock()
    burst = burst_of(5, clock)
    assert not burst.admit(annotation("ns/p0"))
    burst.forget("ns/p0")
    assert "ns/p0" not in burst.held and "ns/p0" not in burst.starting


def test_stuck_pods_seen_again_make_no_new_burst() -> None:
    # A control plane without kubelets: pods stay bound without a podIP; every resync sees
    # them again. After `longest` seconds they never count again, so nothing is held.
    clock = Clock()
    burst = burst_of(5, clock)
    clock.now += 10
    assert burst.admit(annotation("ns/p0"))
    for i in range(5):  # the next resync
        burst.observe(f"ns/p{i}", pod())
    assert burst.recent() == 0 and burst.admit(annotation("ns/p1"))
    # Once one of them starts (or goes), it may count again if it is ever starting anew.
    burst.observe("ns/p0", pod(ip="10.16.0.5", phase="Running"))
    burst.observe("ns/p0", pod())
    assert burst.recent() == 1
