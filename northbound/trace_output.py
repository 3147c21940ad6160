"""ovn-trace's --detailed output read back: the logical flows a packet ran, in order, each
with its datapath, pipeline, stage, match, priority, SB uuid prefix, actions and outputs
(northbound/trace.py judges them)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PIPELINE = re.compile(r"^\s*(ingress|egress|multicast)\((.*)\)\s*$")
_ATTR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_STEP = re.compile(r"^\s*(\d+)\. (\w+) \(([^)]*)\): (.*), priority (\d+), uuid ([0-9a-f]+)\s*$")
_NO_MATCH = re.compile(r"^\s*(?:(\d+)\. )?(\w+)?:? ?no match \(implicit drop\)")
_OUTPUT = re.compile(r'/\* output to "((?:[^"\\]|\\.)*)", type "([^"]*)" \*/')


@dataclass
class Step:
    """One logical flow ovn-trace ran (or a terminal event: implicit drop, `***` error)."""

    datapath: str
    pipeline: str
    table: int
    stage: str
    match: str = ""
    priority: int = -1
    uuid: str = ""
    actions: list[str] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (port, type)
    problem: str = ""

    @property
    def drops(self) -> bool:
        return bool(self.problem) or any(a in ("drop;", "/* drop */") for a in self.actions)

    @property
    def rejects(self) -> bool:
        return any(re.match(r"(reject|tcp_reset|icmp4)\s*\{", a) for a in self.actions)

    @property
    def where(self) -> str:
        return f"{self.stage} of {self.datapath}"


def parse_trace(text: str) -> list[Step]:
    """The steps of ovn-trace's --detailed output, in order."""
    steps: list[Step] = []
    datapath, pipeline = "?", "?"
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("# ") or set(stripped) == {"-"}:
            continue
        head = _PIPELINE.match(line)
        if head:
            pipeline = head[1]
            datapath = dict(_ATTR.findall(head[2])).get("dp", "?")
            continue
        step = _STEP.match(line)
        if step:
            steps.append(Step(datapath, pipeline, int(step[1]), step[2], match=step[4],
                              priority=int(step[5]), uuid=step[6]))
            continue
        no_match = _NO_MATCH.match(line)
        if no_match:
            steps.append(Step(datapath, pipeline, int(no_match[1] or -1),
                              no_match[2] or "?", problem="no logical flow matched"))
            continue
        if stripped.startswith("***"):
            steps.append(Step(datapath, pipeline, -1, "?", problem=stripped.strip("* ")))
            continue
        if not steps:
            continue
        out = _OUTPUT.search(line)
        if out:
            steps[-1].outputs.append((out[1], out[2]))
        else:
            steps[-1].actions.append(stripped)
    return steps
