"""The peak resident memory of this process, as export and calibrate report it at the end of a run.

Peak, not current: the figure that decides whether a run fits a machine is the highest the process ever held
(`getrusage`'s ru_maxrss, which the kernel keeps). It counts file pages mapped and touched by the process, not the
page cache behind plain reads, which is why weights are streamed with reads (export/onnx_io.py).
"""

from __future__ import annotations

import resource
import sys


def peak_resident_bytes() -> int:
    """The most memory this process has held resident so far, in bytes (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_memory_line() -> str:
    """'peak resident memory 3.21 GB' (GB = 10^9 bytes), the line a run ends with."""
    return f"peak resident memory {peak_resident_bytes() / 1e9:.2f} GB"
