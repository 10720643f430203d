"""The wheel built from a copy of the package sources, and fresh venvs that install it with one role's extra from the
package index as `make install` does (tests/package/test_wheel.py, tests/tensorrt/test_gpu_check.py). pip's failure
to reach the index skips the test with pip's last line."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from package_facts import INDEX_UNREACHABLE, ROOT, SOURCE_DIRS


def run_pip(python: Path | str, *args: str | Path) -> None:
    result = subprocess.run([str(python), "-m", "pip", *map(str, args)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and any(w in result.stderr for w in INDEX_UNREACHABLE):
        pytest.skip(f"the package index is unreachable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stdout + result.stderr


def build_wheel(source: Path, out: Path) -> Path:
    """The wheel of a copy of the package sources in `source` (no stale build/ can hide a missing package), built
    with the dev set's setuptools into `out`."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for directory in SOURCE_DIRS.values():
        shutil.copytree(ROOT / directory, source / directory, ignore=shutil.ignore_patterns("__pycache__"))
    run_pip(sys.executable, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", out, source)
    (built,) = out.glob("*.whl")
    return built


@contextlib.contextmanager
def fresh_venv(tmp_path_factory, role: str, wheel: Path) -> Iterator[Path]:
    """A fresh venv with the wheel and one extra installed (its bin/), removed afterwards (the export one is 1.7 GB)."""
    venv = tmp_path_factory.mktemp(role) / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        run_pip(venv / "bin" / "python", "install", "--quiet", "--no-compile", f"{wheel}[{role}]")
        yield venv / "bin"
    finally:
        shutil.rmtree(venv, ignore_errors=True)
