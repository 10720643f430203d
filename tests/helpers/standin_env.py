"""Puts the test-only TensorRT/CUDA stand-ins (tests/standin/) on the import path, for one test or one subprocess.

STAND-IN, not TensorRT: what runs through it proves the backend's orchestration and the stand-in's rules, never
hardware behaviour or speed (that is `make gpu-check` on a real GPU).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

STANDIN = Path(__file__).resolve().parents[1] / "standin"
DEFAULT_MACHINE = {"JANUS_STANDIN_GPU": "NVIDIA H100 80GB HBM3", "JANUS_STANDIN_CC": "9.0",
                   "JANUS_STANDIN_TRT_VERSION": "10.3.0.30"}


def _purge() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("tensorrt", "cuda"):
            del sys.modules[name]


@contextmanager
def standin_imports(**machine: str):
    """In-process: `import tensorrt` / `from cuda.bindings import runtime` give the stand-ins until exit."""
    env = {**DEFAULT_MACHINE, **machine}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    sys.path.insert(0, str(STANDIN))
    _purge()
    try:
        yield
    finally:
        sys.path.remove(str(STANDIN))
        _purge()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def standin_env(**machine: str) -> dict[str, str]:
    """Environment for a subprocess that sees the stand-ins."""
    path = os.pathsep.join(filter(None, [str(STANDIN), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **DEFAULT_MACHINE, **machine, "PYTHONPATH": path}


def build_standin_engines(export_dir: Path, out: Path) -> Path:
    """`janus-edge build` of `export_dir` for the datacenter target on the stand-in, into `out`/engines."""
    with standin_imports():
        from janus_edge.export.tensorrt.build import build

        build(export_dir, out / "engines", "datacenter", timing_cache=str(out / "timing.cache"), log=lambda m: None)
    return out / "engines"
