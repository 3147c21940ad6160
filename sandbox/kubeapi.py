"""A very small Kubernetes API client for the sandbox itself (standard library + PyYAML).

The sandbox only needs a handful of requests (readyz, apply a CRD, create and patch Nodes and
Leases), and the heartbeat daemon should stay small and start fast, so neither imports the
`kubernetes` package. Tests and kovn's operators use the real client.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from sandbox.errors import SandboxError

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


class KubeApiError(SandboxError):
    """The API server answered with an error status (or could not be reached: status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class KubeApi:
    """Requests to the API server of a kubeconfig that uses client certificates by path."""

    def __init__(self, kubeconfig: Path, timeout: float = 10) -> None:
        config = yaml.safe_load(Path(kubeconfig).read_text())
        context = _named(config, "contexts", config["current-context"])["context"]
        cluster = _named(config, "clusters", context["cluster"])["cluster"]
        user = _named(config, "users", context["user"])["user"]
        url = urlsplit(cluster["server"])
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.timeout = timeout
        self._tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self._tls.load_cert_chain(user["client-certificate"], user["client-key"])
        self._conn: http.client.HTTPSConnection | None = None

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = JSON) -> Any:
        """Send one request; the decoded JSON answer (text if not JSON), KubeApiError if >= 400.

        The connection is kept open between requests and reopened once if the server closed it.
        """
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": JSON, "Content-Type": content_type, "User-Agent": "kovn-sandbox"}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # A kept-alive connection the server closed meanwhile (idle timeout): once more.
                if attempt == 2 or not isinstance(
                        exc, http.client.RemoteDisconnected | ConnectionResetError
                        | BrokenPipeError | ssl.SSLEOFError | ssl.SSLZeroReturnError):
                    raise KubeApiError(0, f"{method} {path}: {exc}") from exc
        text = raw.decode(errors="replace")
        try:
            answer: Any = json.loads(text)
        except ValueError:
            answer = text
        if resp.status >= 400:
            message = answer.get("message", text) if isinstance(answer, dict) else text
            raise KubeApiError(resp.status, f"{method} {path}: {resp.status} {message.strip()}")
        return answer

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def get_or_none(self, path: str) -> Any:
        """GET, but None for 404."""
        try:
            return self.get(path)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def watch(self, path: str, timeout: float = 330) -> Iterator[dict[str, Any]]:
        """The events of a watch request (`path` with `watch=1`), on a connection of its own.

        Ends when the server ends the watch (its timeoutSeconds); KubeApiError on an error
        status or a broken connection. `timeout` bounds the wait for one event.
        """
        conn = http.client.HTTPSConnection(self.host, self.port, context=self._tls,
                                           timeout=timeout)
        try:
            conn.request("GET", path, headers={"Accept": JSON, "User-Agent": "kovn-sandbox"})
            resp = conn.getresponse()
            if resp.status >= 400:
                text = resp.read().decode(errors="replace")
                raise KubeApiError(resp.status, f"GET {path}: {resp.status} {text.strip()}")
            while line := resp.readline():
                if line.strip():
                    yield json.loads(line)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise KubeApiError(0, f"watch {path}: {exc}") from exc
        finally:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self.host, self.port, context=self._tls, timeout=self.timeout)
        return self._conn


def _named(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    for item in config.get(section) or []:
        if item.get("name") == name:
            return item
    raise SandboxError(f"kubeconfig has no {section[:-1]} {name!r}")
