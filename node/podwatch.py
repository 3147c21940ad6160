"""The Pods bound to this node, from one list+watch, for ADDs waiting for their annotation.

An ADD often arrives before the controller has written the pod's `kovn.io/pod-network`
(the kubelet starts the sandbox as soon as the pod is bound). Polling the API for it costs a
GET of the whole Pod per poll per waiting ADD, in the agent and in the API server, and adds
up to a poll interval of latency; under a burst of pods that is most of the agent's CPU. A
watch of this node's Pods (what ovn-kubernetes' node side does with its informer) delivers
the annotated Pod once, as soon as it is written, and wakes the ADDs waiting on it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kube.client import KubeClient
from kube.listwatch import ListWatch

WATCH_SECONDS = 300


class NodePods:
    """Latest Pod object per `namespace/name` on one node; `wait` for one to change."""

    def __init__(self, kube: KubeClient, node: str) -> None:
        self._pods: dict[str, dict[str, Any]] = {}
        self._changed = threading.Condition()
        self._pokes = 0
        self._watch = ListWatch(kube, "/api/v1/pods", self, fields=f"spec.nodeName={node}",
                                timeout=WATCH_SECONDS, name=f"pods of {node}")

    def start(self) -> NodePods:
        """Watch in the background; the first list happens there too (the API may be
        down when the agent starts: ADDs then fall back to reading the Pod)."""
        self._watch.start(list_first=False)
        return self

    def stop(self) -> None:
        self._watch.stop()

    # the ListWatch listener
    def listed(self, items: list[dict[str, Any]]) -> None:
        with self._changed:
            self._pods = {_key(p): p for p in items}
            self._changed.notify_all()

    def event(self, kind: str, obj: dict[str, Any]) -> None:
        with self._changed:
            if kind == "DELETED":
                self._pods.pop(_key(obj), None)
            else:
                self._pods[_key(obj)] = obj
            self._changed.notify_all()

    def poke(self) -> None:
        """Wake every `wait`: something else an ADD waits on changed (node.southbound)."""
        with self._changed:
            self._pokes += 1
            self._changed.notify_all()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._changed:
            return self._pods.get(f"{namespace}/{name}")

    def wait(self, namespace: str, name: str, seen: dict[str, Any] | None,
             timeout: float) -> dict[str, Any] | None:
        """The Pod once it is no longer `seen` (another object, e.g. newly annotated), or
        what is cached after `timeout` or a `poke`."""
        key = f"{namespace}/{name}"
        deadline = time.monotonic() + timeout
        with self._changed:
            pokes = self._pokes
            while (current := self._pods.get(key)) is seen and self._pokes == pokes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return current


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
