"""Where a component serves its telemetry: `HOST:PORT` or `off` (standard library only, so
parsing the command line needs no Prometheus client)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

OFF = "off"
CONTROLLER_DEFAULT = "0.0.0.0:9476"
NODE_DEFAULT = "0.0.0.0:9477"
CONTROLLER_ENV = "KOVN_METRICS_ADDRESS"
"""Overrides the default of `kovn controller --metrics-address`."""
NODE_ENV = "KOVN_NODE_METRICS_ADDRESS"
"""Overrides the default of `kovn node --metrics-address` (its own name: a controller and an
agent on one host must not both take the controller's)."""


class TelemetryError(RuntimeError):
    """The address is malformed or cannot be served."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, option: str = "--metrics-address") -> Address | None:
    """`HOST:PORT` (`[::]:PORT` for IPv6, port 0 for any free one) or `off` (None)."""
    value = text.strip()
    if value.lower() == OFF:
        return None
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise TelemetryError(f"{option} {text!r}: expected HOST:PORT (e.g. 0.0.0.0:9476, "
                             f"[::]:9476, 127.0.0.1:0 for any free port) or {OFF}")
    return Address(host, int(port))


def add_address_option(parser: Any, env: str, default: str) -> None:
    """`--metrics-address`, the same on every component; its default from `env`."""
    parser.add_argument("--metrics-address", metavar="HOST:PORT|off",
                        default=os.environ.get(env, default),
                        help=f"serve /metrics (Prometheus), /healthz and /readyz here; {OFF} "
                        f"disables (default ${env} or {default})")
