"""The dependency direction of the stages: runtime <- export <- calibration <- janus_edge (the CLI shell).

runtime/ imports nothing else of ours; export/ (with its TensorRT stage, export/tensorrt/) imports only the runtime;
calibration/ imports the runtime and export. Read from the sources' import statements (relative ones resolved), so
an import inside a function counts as much as one at the top.

The tests follow the same stages: each test module sits in its stage's folder under tests/ and imports no other test
module (nor conftest.py: pytest would then hold a second copy of its fixtures, and a session fixture runs twice).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"runtime": "janus_edge.runtime", "export": "janus_edge.export", "calibration": "janus_edge.calibration"}
ALLOWED = {"runtime": ("janus_edge.runtime",),
           "export": ("janus_edge.runtime", "janus_edge.export"),
           "calibration": ("janus_edge.runtime", "janus_edge.export", "janus_edge.calibration")}


def imported_modules(source: str, module: str, is_package: bool) -> list[str]:
    """Absolute names of every module `source` (the text of `module`) imports, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]  # a name may be a submodule
    return found


def violations(stage: str, source: str, module: str, is_package: bool = False) -> list[str]:
    ours = [m for m in imported_modules(source, module, is_package) if m == "janus_edge" or m.startswith("janus_edge.")]
    return [m for m in ours if not any(m == a or m.startswith(a + ".") for a in ALLOWED[stage])]


def _modules(stage: str):
    for path in sorted((ROOT / stage).rglob("*.py")):
        relative = path.relative_to(ROOT / stage).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        yield path, ".".join([PACKAGES[stage], *parts]), path.name == "__init__.py"


@pytest.mark.parametrize("stage", list(PACKAGES))
def test_each_stage_imports_only_the_stages_below_it(stage):
    found = {f"{path.relative_to(ROOT)}: {bad}" for path, module, is_package in _modules(stage)
             for bad in violations(stage, path.read_text(encoding="utf-8"), module, is_package)}
    assert not found, sorted(found)


def test_the_check_sees_absolute_relative_and_local_imports():
    source = ("from janus_edge.runtime.errors import RequestError\nfrom ..targets import TARGETS\n"
              "def f():\n    import janus_edge.plan\n    from janus_edge import __version__\n")
    assert violations("export", source, "janus_edge.export.tensorrt.build") == [
        "janus_edge.plan", "janus_edge", "janus_edge.__version__"]
    assert violations("runtime", "from .. import kv\n", "janus_edge.runtime.backends.base") == []
    assert violations("runtime", "from ..plan import make_plan\n", "janus_edge.runtime.api") == [
        "janus_edge.plan", "janus_edge.plan.make_plan"]
    assert violations("export", "from .tensorrt.targets import TARGETS\n", "janus_edge.export.exporter") == []


TESTS = ROOT / "tests"
# Where a test module goes: the stage it tests, the tools on top, packaging, or the stand-in's self-tests.
TEST_FOLDERS = {"export", "runtime", "calibration", "tensorrt", "serve", "tools", "package", "standin"}


def test_each_test_module_sits_in_its_stage_folder_and_imports_no_other_test_module():
    modules = sorted(TESTS.rglob("test_*.py"))
    misplaced = [str(path.relative_to(TESTS)) for path in modules if path.parent.parent != TESTS
                 or path.parent.name not in TEST_FOLDERS]
    assert not misplaced, f"test modules outside tests/{{{','.join(sorted(TEST_FOLDERS))}}}/: {misplaced}"
    imports = {f"{path.relative_to(TESTS)}: {name}" for path in sorted(TESTS.rglob("*.py"))
               for name in imported_modules(path.read_text(encoding="utf-8"), path.stem, False)
               if name.split(".")[0].startswith("test_") or name.split(".")[0] in ("conftest", "tests")}
    assert len(modules) > 20 and not imports, sorted(imports)


@pytest.mark.parametrize("name", ["tensorrt", "cuda"])
def test_no_test_folder_is_on_the_import_path_as_a_library(name):
    """tests/tensorrt/ and the stand-in's packages (tests/standin/) must never answer `import tensorrt` or `import cuda`
    outside `standin_imports()`: pytest imports test modules without adding their folders to sys.path."""
    spec = importlib.util.find_spec(name)
    locations = [spec.origin] if spec and spec.origin else list(spec.submodule_search_locations) if spec else []
    assert not [place for place in locations if TESTS in Path(place).resolve().parents], locations
