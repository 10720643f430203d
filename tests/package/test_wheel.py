"""The built wheel (not an editable install) holds every module and data file, and each role's extra is enough for
that role's commands, run from fresh venvs: runtime + onnxruntime (understand and generate as the source tree does,
no torch/transformers/onnx, a PyTorch command naming its extra), and export (tiny, export, compare, calibrate, bench).

The wheel is built once from a copy of the package sources (no stale build/ can hide a missing package) with the
dev set's setuptools. The venvs install from the package index as `make install` does (torch: the local CPU wheel);
the tests skip, with pip's last line, when the index cannot be reached. About 3 minutes, mostly installing torch:
marked `network`, out of `make test`, in `make test-network`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zipfile

import numpy as np
import pytest
from cli_helpers import run_cli
from fresh_venv import fresh_venv
from package_facts import EXTERNAL, ROOT, SOURCE_DIRS, groups, third_party_imports
from packaging.utils import canonicalize_name
from PIL import Image

from janus_edge import __version__
from janus_edge.cli import DISTRIBUTIONS


IMPORT_ALL = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=600)


def _modules_of(*extras: str) -> list[str]:
    """The third-party modules our code imports whose distribution these extras (and the runtime) install."""
    names = {canonicalize_name(r.name) for extra in ("runtime", *extras) for r in groups()[extra]}
    return sorted(module for module in third_party_imports()
                  if module not in EXTERNAL and canonicalize_name(DISTRIBUTIONS.get(module, module)) in names)


def test_the_wheel_holds_every_module_and_data_file_and_the_one_version(wheel):
    expected = {f"{package.replace('.', '/')}/{path.relative_to(ROOT / directory).as_posix()}"
                for package, directory in SOURCE_DIRS.items()
                for path in (ROOT / directory).rglob("*") if path.is_file() and "__pycache__" not in path.parts}
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"janus_edge-{__version__}.dist-info/METADATA").decode()
    assert {name for name in names if ".dist-info/" not in name} == expected
    assert any(name.endswith(".json") and "/data/" in name for name in expected)  # the data files are in the set
    assert wheel.name.startswith(f"janus_edge-{__version__}-") and f"\nVersion: {__version__}\n" in metadata
    version_line = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("version")
    assert version_line is None, "pyproject.toml states the version again: it is read from janus_edge.__version__"


@pytest.mark.network  # installs from the package index
def test_runtime_role_understands_and_generates_without_torch(wheel, export_hf, tmp_path_factory, tmp_path):
    with fresh_venv(tmp_path_factory, "onnxruntime", wheel) as bin_dir:
        absent = "; import importlib.util as u; print([m for m in ('torch', 'transformers', 'onnx') if u.find_spec(m)])"
        result = _run(bin_dir / "python", "-c", IMPORT_ALL + absent, *_modules_of("onnxruntime"))
        assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr

        question = ["understand", export_hf, "--question", "What is this?", "--max-new-tokens", "6"]
        installed = _run(bin_dir / "janus-edge", *question)
        assert installed.returncode == 0, installed.stderr
        assert installed.stdout == run_cli(*question, check_code=0).stdout  # the same answer as the source tree's

        for name, command in (("wheel", [bin_dir / "janus-edge"]), ("source", [sys.executable, "-m", "janus_edge"])):
            result = _run(*command, "generate", export_hf, "--prompt", "a red fox", "-n", "1", "--seed", "3",
                          "--out", tmp_path / name)
            assert result.returncode == 0, result.stderr
        assert np.array_equal(np.asarray(Image.open(tmp_path / "wheel" / "image_0.png")),
                              np.asarray(Image.open(tmp_path / "source" / "image_0.png")))

        refused = _run(bin_dir / "janus-edge", "export", export_hf, tmp_path / "again")
        assert (refused.returncode, refused.stdout) == (2, "")
        assert refused.stderr == ("janus-edge export: error: torch is not installed; "
                                  "fix: pip install 'janus-edge[export]'\n")


@pytest.mark.network  # installs from the package index
def test_export_role_makes_exports_compares_calibrates_and_benches(wheel, tmp_path_factory, tmp_path):
    with fresh_venv(tmp_path_factory, "export", wheel) as bin_dir:
        result = _run(bin_dir / "python", "-c", IMPORT_ALL, *_modules_of("export"))
        assert result.returncode == 0, result.stderr  # every library of the role, the lazily imported ones too

        checkpoint, export, w4 = tmp_path / "tiny", tmp_path / "export", tmp_path / "w4"
        for command in (["tiny", checkpoint], ["export", checkpoint, export], ["compare", checkpoint, export],
                        ["calibrate", export, w4, "--scheme", "w4"],
                        ["bench", w4, "--stages", "understand", "--runs", "1", "--warmup", "0", "--understand-tokens",
                         "2", "--understand-batches", "1", "--json", tmp_path / "bench.json", "--plot",
                         tmp_path / "bench.png"]):
            result = _run(bin_dir / "janus-edge", *command)
            assert result.returncode == 0, f"{command[0]}: {result.stdout}{result.stderr}"
        assert (export / "janus_edge.json").is_file() and (w4 / "janus_edge.json").is_file()
        assert json.loads((tmp_path / "bench.json").read_text()) and Image.open(tmp_path / "bench.png").format == "PNG"
