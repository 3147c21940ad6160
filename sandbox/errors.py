"""The one exception type of the sandbox.

It lives in its own module so that the low-level helpers (procs, netns) can raise it without
importing the cluster; `sandbox.cluster.SandboxError` is the same class. Every message says what
happened and what to do next, because the CLI prints it as its only output.
"""

from __future__ import annotations


class SandboxError(Exception):
    """A sandbox operation failed or is not possible; the message tells the user what to do."""


class SandboxTimeout(SandboxError, TimeoutError):
    """Something the sandbox waits for (a chassis, a port binding) did not happen in time.

    It is both a SandboxError (the CLI prints it in one line) and a TimeoutError (tests may
    catch timeouts generically).
    """
