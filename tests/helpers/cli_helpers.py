"""The command line as a user runs it: `python -m janus_edge ...` in a subprocess."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str, check_code: int | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "janus_edge", *map(str, args)], capture_output=True, text=True,
                            timeout=timeout)
    if check_code is not None:
        assert result.returncode == check_code, result.stdout + result.stderr
    return result
