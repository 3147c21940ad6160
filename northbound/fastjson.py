"""Use the C JSON parser of Open vSwitch's python bindings when the wheel lacks it.

The `ovs` package on PyPI ships without its C extension `ovs._json` unless built against
libopenvswitch, and its pure-python JSON parser then costs ~15x: a 10,000-port NB
transaction spends seconds lexing the server's update. Debian's python3-openvswitch (a
dependency of the OVN packages kovn needs anyway) carries the same extension, statically
linked, for the same CPython ABI. If ours lacks it, load that one under the same name.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
import sysconfig
from pathlib import Path

LOG = logging.getLogger(__name__)
SYSTEM_OVS_DIRS = (Path("/usr/lib/python3/dist-packages/ovs"),)


def enable() -> bool:
    """Make ovs.json use the C parser if one is available; True when it does."""
    import ovs
    import ovs.json

    if ovs.json.PARSER == ovs.json.PARSER_C:
        return True
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    for directory in SYSTEM_OVS_DIRS:
        candidate = directory / f"_json{suffix}"
        if not candidate.exists():
            continue
        try:
            loader = importlib.machinery.ExtensionFileLoader("ovs._json", str(candidate))
            spec = importlib.util.spec_from_file_location("ovs._json", candidate, loader=loader)
            assert spec is not None
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
        except (ImportError, AssertionError) as exc:
            LOG.debug("cannot load %s: %s", candidate, exc)
            continue
        sys.modules["ovs._json"] = module
        ovs._json = module  # type: ignore[attr-defined]
        ovs.json.ovs = ovs  # ovs.json binds the name only when its own import succeeded
        ovs.json.PARSER = ovs.json.PARSER_C
        LOG.debug("using the C JSON parser from %s", candidate)
        return True
    LOG.warning("ovs C JSON parser unavailable: NB sync is slower (install python3-openvswitch)")
    return False
