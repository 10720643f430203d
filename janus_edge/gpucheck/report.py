"""gpu-check's report: one JSON document (janus_edge/data/gpu_check.schema.json; validated by the tests, not at run
time, since jsonschema is only in the export extra) and the one-screen summary printed from it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import janus_edge

SCHEMA_VERSION = 1
EXIT_CODES = {"pass": 0, "fail": 1, "internal-error": 1, "error": 2}  # internal-error: a traceback follows


@dataclass
class Check:
    name: str  # "engine decoder", "teacher-forced lm_head", "graph replay" ...
    status: str  # "pass", "fail" or "skipped" (why in `summary`)
    summary: str  # one line
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    versions: dict[str, str | None]
    machine: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    checks: list[Check] = field(default_factory=list)
    timing: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    error: dict[str, str | None] | None = None  # the failure that stopped the run: message and fix
    internal: bool = False  # that failure was not a known one (a bug, or a library failing in a new way)
    started: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        if self.error is not None:
            return "internal-error" if self.internal else "error"
        return "fail" if any(check.status == "fail" for check in self.checks) else "pass"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("started")
        data.pop("internal")
        return {"schema_version": SCHEMA_VERSION, "janus_edge_version": janus_edge.__version__,
                "status": self.status, "exit_code": self.exit_code,
                "seconds": round(time.time() - self.started, 1), **data}

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def summary(self) -> str:
        """At most a screen: machine, target, each check on one line, timing, memory, verdict."""
        versions = ", ".join(f"{key} {value}" for key, value in self.versions.items() if value)
        lines = [f"gpu-check (janus-edge {janus_edge.__version__}): {versions}"]
        if self.machine:
            m = self.machine
            lines.append(f"GPU: {m['gpu']}, compute capability {m['compute_capability']}, "
                         f"{m['total_memory_bytes'] / (1 << 30):.1f} GiB"
                         f"{', integrated' if m['integrated'] else ''}; CUDA driver {m['cuda_driver']}, "
                         f"runtime {m['cuda_runtime']}")
        if self.target:
            lines.append(f"target: {self.target['note']}")
        if self.export:
            lines.append(f"export: {self.export['path']} ({self.export['precision']}); engines: "
                         f"{self.export['engines']}{' (built now)' if self.export['built'] else ''}")
        width = max((len(check.name) for check in self.checks), default=0)
        lines += [f"  {check.status.upper():7} {check.name:{width}}  {check.summary}" for check in self.checks]
        if t := self.timing:
            lines.append(f"timing: prefill {t['prefill_tokens']} tokens x {t['rows']} rows {t['prefill_ms']:.1f} ms; "
                         f"decode step (CFG, {t['rows']} rows, head and sampler included) {t['decode_step_ms']:.2f} "
                         f"ms median of {t['decode_steps']}")
        if mem := self.memory:
            planned = mem["planned_bytes"]
            lines.append(f"device memory: engines {_mib(mem['engines_bytes'])}, request {_mib(mem['request_bytes'])}"
                         f" (total {_mib(mem['total_bytes'])}); plan: "
                         + (_mib(planned) if planned is not None else f"n/a ({mem['note']})"))
        lines += [f"note: {note}" for note in self.notes]
        passed = sum(check.status == "pass" for check in self.checks)
        failed = sum(check.status == "fail" for check in self.checks)
        lines.append(f"{self.status.upper()}: {passed} passed, {failed} failed, "
                     f"{len(self.checks) - passed - failed} skipped")
        return "\n".join(lines)


def _mib(nbytes: int | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / (1 << 20):.1f} MiB"
