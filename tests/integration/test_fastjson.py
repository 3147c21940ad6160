"""The OVS bindings parse JSON in C, also from kovn's virtual environment.

PyPI's `ovs` wheel has no C extension; northbound/fastjson.py loads Debian's
(python3-openvswitch, installed by scripts/install.sh) by path, which works from a venv
without the system's site-packages as long as the interpreter's ABI matches.
"""

from __future__ import annotations

import sys

import ovs.json

from northbound import fastjson


def test_c_json_parser_is_in_use() -> None:
    assert fastjson.enable(), (
        f"no C JSON parser for {sys.executable}: install python3-openvswitch, and build the "
        "venv from Debian's python3 (scripts/install.sh does both)")
    assert ovs.json.PARSER == ovs.json.PARSER_C
    assert ovs.json.from_string('{"a": [1, "b"]}') == {"a": [1, "b"]}
