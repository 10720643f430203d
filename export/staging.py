"""Writing a directory all at once: build it under a hidden sibling, then rename it into place.

A crash or a bad input half-way leaves no directory that looks like a valid checkpoint or export.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from janus_edge.runtime.errors import RequestError


def check_replaceable(out_dir: str | Path, marker: str) -> Path:
    """`out_dir` resolved, unless it exists and is not empty or an earlier output (holding `marker`)."""
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / marker).exists())):
        raise RequestError(f"{out_dir} already exists and is not an earlier janus-edge output",
                           "choose a new output directory or remove it first")
    return out_dir


@contextlib.contextmanager
def staged_directory(out_dir: str | Path, marker: str):
    """Yields an empty staging directory; on success it replaces `out_dir`.

    An existing `out_dir` is replaced only if it is empty or holds `marker` (i.e. it is an earlier output of the
    same command); anything else is refused rather than deleted.
    """
    out_dir = check_replaceable(out_dir, marker)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
