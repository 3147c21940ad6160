"""The `kubernetes` Service from pods: per node a TCP relay to the API server, and the
endpoints the API server's own reconciler would publish.

Why a relay: kube-apiserver listens on the machine's loopback (127.0.0.1 in the root netns),
which no pod can reach, and its endpoint reconciler is off (`--endpoint-reconciler-type=none`:
127.0.0.1 is no valid endpoint, and any other address would be the machine's). What pods do
reach is every node's netns, at its management port `ovn0`: the join address in the Node's
`kovn.io/node-network` (pod -> its switch -> ovn-cluster -> join -> ovn0, no NAT, no
gateway). So this daemon, one per node, started beside the node's kubelet:

- listens in the node's netns on 0.0.0.0:6443 (RELAY_PORT). A socket belongs to the netns of
  the thread that created it, so one thread enters the node's netns for the instant of
  socket() (node.netns.in_netns) while the process stays in the root netns, where every
  upstream connection to the API server is opened;
- copies bytes both ways, unchanged: TLS runs end to end between the client and the API
  server, whose certificate carries 10.96.0.1 and the kubernetes.default.svc names
  (sandbox.kube_pki), and the client authenticates with its ServiceAccount token as in any
  cluster (the API server sees every relayed client as 127.0.0.1);
- publishes its node's join address as an endpoint of `default/kubernetes`, as each
  kube-apiserver's lease reconciler adds its own: the EndpointSlice `kubernetes` (label
  kubernetes.io/service-name=kubernetes, managed-by kovn-sandbox, port `https` =
  RELAY_PORT, which is what the load balancer targets, whatever the Service's targetPort
  says) and the Endpoints `kubernetes` (labelled skip-mirror, so the mirroring controller
  does not copy it into a second slice). All relays share both objects, so each one
  changes only its own entry (by nodeName, so a restarted relay replaces its old one) in a
  read-modify-write with the resourceVersion, retried on conflict. Checked again every
  RESYNC seconds (a moved join address or a deleted object is repaired); the address is
  withdrawn when the relay stops.

Why not let pods reach the API server directly: its replies would need a route from the
machine's root netns to the pod ranges, which the sandbox blackholes there on purpose
(sandbox.netns: traffic to them only ever starts inside sandbox namespaces), and pods would
reach every other service of the machine too; a relay exposes exactly one port. Why 0.0.0.0 and
not the join address: the socket exists before the agent has configured ovn0 and survives
a new join address.

The kovn controller turns the slice into the load balancer of 10.96.0.1:443 as it does for
any Service; nothing in it knows about the relay. Without pods (`--no-workloads`) no relay
runs and the Service has no endpoints.

    python -m sandbox.apirelay --pidfile=P --kubeconfig K --node node1 --node-netns NS
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from contract.podnetwork import NODE_NETWORK, NodeNetwork
from kube.client import KubeClient, KubeError, annotations, node_path
from node.netns import in_netns

LOG = logging.getLogger("kovn.sandbox.apirelay")
RELAY_PORT = 6443
PORT_NAME = "https"
MANAGED_BY = "kovn-sandbox"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
SERVICE_PATH = "/api/v1/namespaces/default/services/kubernetes"
SLICE_PATH = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes"
ENDPOINTS_PATH = "/api/v1/namespaces/default/endpoints/kubernetes"
RESYNC = 5.0  # seconds between checks once published (the API server's own: 10 s)
BUFFER = 65536

Build = Callable[[dict[str, Any] | None], dict[str, Any] | None]


# ------------------------------------------------------------------------------- endpoints


def slice_body(current: dict[str, Any] | None, node: str, address: str | None,
               port: int = RELAY_PORT) -> dict[str, Any] | None:
    """The EndpointSlice with `address` as this node's one endpoint (None: with none);
    None when `current` already is that. The other nodes' endpoints stay as they are."""
    endpoints = [e for e in (current or {}).get("endpoints") or ()
                 if e.get("nodeName") != node and address not in (e.get("addresses") or ())]
    if address is not None:
        endpoints.append({"addresses": [address], "conditions": {"ready": True},
                          "nodeName": node})
    endpoints.sort(key=lambda e: e["addresses"])
    ports = [{"name": PORT_NAME, "port": port, "protocol": "TCP"}]
    labels = {SERVICE_NAME_LABEL: "kubernetes", MANAGED_BY_LABEL: MANAGED_BY}
    meta = (current or {}).get("metadata") or {}
    if (current is not None and (current.get("endpoints") or []) == endpoints
            and current.get("ports") == ports
            and labels.items() <= (meta.get("labels") or {}).items()):
        return None
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {**_keep(meta), "name": "kubernetes", "namespace": "default",
                         "labels": {**(meta.get("labels") or {}), **labels}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports}


def endpoints_body(current: dict[str, Any] | None, node: str, address: str | None,
                   port: int = RELAY_PORT) -> dict[str, Any] | None:
    """The same for the Endpoints object (one subset: the addresses, the one port)."""
    subsets = (current or {}).get("subsets") or []
    addresses = [a for s in subsets for a in s.get("addresses") or ()
                 if a.get("nodeName") != node and a.get("ip") != address]
    if address is not None:
        addresses.append({"ip": address, "nodeName": node})
    addresses.sort(key=lambda a: a["ip"])
    wanted = ([{"addresses": addresses,
                "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}]}]
              if addresses else [])
    meta = (current or {}).get("metadata") or {}
    if (current is not None and subsets == wanted
            and (meta.get("labels") or {}).get(SKIP_MIRROR_LABEL) == "true"):
        return None
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {**_keep(meta), "name": "kubernetes", "namespace": "default",
                         "labels": {**(meta.get("labels") or {}), SKIP_MIRROR_LABEL: "true"}},
            "subsets": wanted}


def _keep(meta: dict[str, Any]) -> dict[str, Any]:
    """What an update must carry over: the resourceVersion (optimistic concurrency)."""
    return {"resourceVersion": meta["resourceVersion"]} if "resourceVersion" in meta else {}


def update(api: KubeClient, path: str, build: Build, attempts: int = 5) -> bool:
    """GET, build, PUT (or POST when missing), again on a conflict; True if written."""
    collection = path.rsplit("/", 1)[0]
    for attempt in range(attempts):
        current = api.get_or_none(path)
        body = build(current)
        if body is None:
            return False
        try:
            if current is None:
                api.create(collection, body)
            else:
                api.put(path, body)
            return True
        except KubeError as exc:  # 409: another relay wrote first (or created it)
            if exc.status != 409 or attempt == attempts - 1:
                raise
    return False


class Publisher:
    """Keeps this node's join address among the `kubernetes` endpoints."""

    def __init__(self, api: KubeClient, node: str, port: int = RELAY_PORT) -> None:
        self.api, self.node, self.port = api, node, port
        self.published: str | None = None
        self._waiting_noted = False

    def join_address(self) -> str | None:
        text = annotations(self.api.get_or_none(node_path(self.node))).get(NODE_NETWORK)
        if not text:
            return None
        try:
            return NodeNetwork.decode(text).address
        except ValueError as exc:
            LOG.warning("%s", exc)
            return None

    def sync(self) -> None:
        address = self.join_address()
        if address is None:
            if not self._waiting_noted:
                LOG.info("node %s has no %s yet: waiting", self.node, NODE_NETWORK)
                self._waiting_noted = True
            return
        self._write(address)
        if address != self.published:
            LOG.info("published %s:%d as an endpoint of default/kubernetes", address,
                     self.port)
            self.published = address

    def withdraw(self) -> None:
        if self.published is not None:
            self._write(None)
            LOG.info("withdrew %s from default/kubernetes", self.published)
            self.published = None

    def _write(self, address: str | None) -> None:
        update(self.api, SLICE_PATH, lambda c: slice_body(c, self.node, address, self.port))
        update(self.api, ENDPOINTS_PATH,
               lambda c: endpoints_body(c, self.node, address, self.port))


# ------------------------------------------------------------------------------- relay


def listen_in(netns: str, port: int) -> socket.socket:
    """A listening TCP socket on 0.0.0.0:port of netns (this thread comes back at once)."""
    with in_netns(netns):
        return socket.create_server(("0.0.0.0", port), backlog=128)


def upstream_of(server: str) -> tuple[str, int]:
    """(host, port) of the API server URL the kubeconfig names."""
    url = urlsplit(server)
    return url.hostname or "127.0.0.1", url.port or 443


def serve(listener: socket.socket, upstream: tuple[str, int]) -> None:
    """Accept forever; each connection gets a thread per direction."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError as exc:
            if listener.fileno() < 0:
                return  # closed
            LOG.warning("accept: %s", exc)  # e.g. out of file descriptors: try again soon
            time.sleep(0.1)
            continue
        threading.Thread(target=_relay, args=(client, upstream), daemon=True).start()


def _relay(client: socket.socket, upstream: tuple[str, int]) -> None:
    try:
        server = socket.create_connection(upstream, timeout=5)
    except OSError as exc:
        LOG.warning("cannot reach the API server at %s:%d: %s", *upstream, exc)
        client.close()
        return
    server.settimeout(None)
    back = threading.Thread(target=_pump, args=(server, client), daemon=True)
    back.start()
    _pump(client, server)
    back.join()
    client.close()
    server.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """src -> dst until src ends (or fails); then end dst's direction too."""
    try:
        while data := src.recv(BUFFER):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.apirelay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node", required=True, help="the Node whose join address to publish")
    parser.add_argument("--node-netns", required=True, help="where to listen")
    parser.add_argument("--kubeconfig", type=Path, required=True,
                        help="names the API server to relay to, and publishes the endpoints")
    parser.add_argument("--port", type=int, default=RELAY_PORT)
    parser.add_argument("--pidfile", type=Path,
                        help="written by the sandbox; identifies this process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        listener = listen_in(args.node_netns, args.port)
    except OSError as exc:
        LOG.error("cannot listen on 0.0.0.0:%d in netns %s: %s", args.port, args.node_netns,
                  exc)
        return 1
    api = KubeClient(args.kubeconfig, pool_size=2, timeout=3)
    upstream = upstream_of(api.server)
    LOG.info("relaying %s 0.0.0.0:%d -> %s:%d", args.node_netns, args.port, *upstream)
    threading.Thread(target=serve, args=(listener, upstream), name="accept",
                     daemon=True).start()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        LOG.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    publisher = Publisher(api, args.node, args.port)
    while not stop.is_set():
        try:
            publisher.sync()
        except KubeError as exc:
            LOG.warning("publishing the endpoint: %s (retrying)", exc)
        stop.wait(RESYNC if publisher.published else 0.5)
    with contextlib.suppress(KubeError):
        publisher.withdraw()
    logging.shutdown()
    os._exit(0)  # relayed connections end with the process


if __name__ == "__main__":
    sys.exit(main())
