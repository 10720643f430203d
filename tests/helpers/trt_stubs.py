"""tensorrt-stubs 10.13 as mypy and the stand-in's signature check read them (tests/tensorrt/)."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from pathlib import Path

import pytest

STUBS = Path(__file__).resolve().parents[2] / ".typing"


def patched_stubs(tmp_path: Path) -> Path:
    """A copy of the tensorrt-stubs package that `make install` puts in .typing/ (untracked), with the three patches
    tensorrt-stubs 10.13 need before mypy accepts them (shared/REFERENCE.md section 6)."""
    installed = next(importlib.metadata.distributions(name="tensorrt-stubs", path=[str(STUBS)]), None)
    if installed is None:
        pytest.fail("tensorrt-stubs are missing from .typing/: run `make install`")
    stubs = tmp_path / "stubs"
    for file in installed.files or []:
        if file.suffix in {".pyi", ".py", ".typed"}:
            (stubs / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file.locate(), stubs / file)
    for path in stubs.rglob("*.pyi"):
        text = path.read_text()
        text = text.replace("import tensorrt_libs as tensorrt_libs\n", "")
        text = re.sub(r"\bin: ", "in_: ", text)
        text = text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = 0)")
        path.write_text(text)
    return stubs
