"""Packaging facts read from pyproject.toml, the requirement files and the package's sources: what tests/package/
and the fresh-venv tests (tests/package/test_wheel.py, tests/tensorrt/test_gpu_check.py) check against."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The source directory of each top-level package in the wheel (pyproject's package-dir; janus_edge is its own).
SOURCE_DIRS = {"janus_edge": "janus_edge", **PYPROJECT["tool"]["setuptools"]["package-dir"]}
REQUIREMENT_FILES = ["requirements.txt", "requirements-runtime.txt", "requirements-jetson.txt"]
# Imported, but no extra can install them: TensorRT comes with JetPack, an NGC container or NVIDIA's own index;
# triton_python_backend_utils exists only inside tritonserver's Python backend.
EXTERNAL = {"tensorrt", "triton_python_backend_utils"}
# Declared, but imported by none of our modules: the Triton client library is for the user's client code.
FOR_USERS = {"tritonclient"}
# In an extra but not in the dev set: cuda-python needs a GPU; the tests run the TensorRT code on tests/standin/.
NOT_IN_DEV_SET = {"cuda-python"}
INDEX_UNREACHABLE = ("NewConnectionError", "Max retries", "Temporary failure in name resolution")


def groups() -> dict[str, list[Requirement]]:
    """pyproject's `dependencies` (as "runtime") and each extra, with an included `janus-edge[extra]` expanded."""
    project = PYPROJECT["project"]
    raw = {"runtime": project["dependencies"], **project["optional-dependencies"]}

    def expand(group: str) -> list[Requirement]:
        requirements = []
        for text in raw[group]:
            requirement = Requirement(text)
            own = canonicalize_name(requirement.name) == "janus-edge"
            requirements += [r for extra in sorted(requirement.extras) for r in expand(extra)] if own else [requirement]
        return requirements

    return {group: expand(group) for group in raw}


def requirement_file(name: str) -> list[Requirement]:
    lines = (ROOT / name).read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def third_party_imports() -> dict[str, list[str]]:
    """Each top-level module outside the standard library that the package's sources import -> the files."""
    found: dict[str, list[str]] = {}
    for directory in SOURCE_DIRS.values():
        for path in sorted((ROOT / directory).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {name.partition(".")[0] for name in names} - set(sys.stdlib_module_names) - {"janus_edge"}:
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found
