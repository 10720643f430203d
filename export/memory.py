"""The peak resident memory of this process, as export and calibrate report it at the end of a run.

Peak, not current: the figure that decides whether a run fits a machine is the highest the process ever held. On
Linux that is the kernel's high-water mark of this program's memory (VmHWM in /proc/self/status). getrusage's
ru_maxrss would be the same figure but for one thing: Linux carries it over from the process that started this one
(what the parent held at fork survives exec), so a run started by a large process (a test suite) would report the
parent's size. Elsewhere ru_maxrss is what there is. Either counts file pages mapped and touched by the process, not
the page cache behind plain reads, which is why weights are streamed with reads (export/onnx_io.py).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")


def peak_resident_bytes() -> int:
    """The most memory this process has held resident so far, in bytes."""
    if STATUS.is_file():
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def peak_memory_line() -> str:
    """'peak resident memory 3.21 GB' (GB = 10^9 bytes), the line a run ends with."""
    return f"peak resident memory {peak_resident_bytes() / 1e9:.2f} GB"
