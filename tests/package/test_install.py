"""Packaging facts checked without installing anything: every pin is exact and pyproject.toml and requirements*.txt
state the same ones; every library the code imports is declared, and every declared one is imported; a command whose
library is missing names the extra to install in one line. Each TensorRT extra pins the cuda-python of its driver's
CUDA major. And what a GPU machine installs resolves to wheels for cp310 and cp312 on aarch64 (JetPack 6.2 / 7.x)
and x86_64 (asks the package index without downloading: marked `network`, skipped when it cannot be reached).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from janus_edge.cli import DISTRIBUTIONS
from package_facts import (EXTERNAL, FOR_USERS, INDEX_UNREACHABLE, NOT_IN_DEV_SET, PYPROJECT, REQUIREMENT_FILES,
                           groups, requirement_file, third_party_imports)


def _key(requirement: Requirement, marker: bool = True) -> tuple:
    return (canonicalize_name(requirement.name), sorted(requirement.extras), str(requirement.specifier),
            str(requirement.marker or "") if marker else "")


def test_every_pin_is_exact():
    pins = [r for group in groups().values() for r in group] + [Requirement(text) for text in
                                                                 PYPROJECT["build-system"]["requires"]]
    pins += [r for name in REQUIREMENT_FILES for r in requirement_file(name)]
    loose = [str(r) for r in pins if [spec.operator for spec in r.specifier] != ["=="]]
    assert not loose, f"not pinned with ==: {loose}"


def test_requirement_files_state_the_pins_of_pyproject():
    declared = groups()
    runtime, jetson = requirement_file("requirements-runtime.txt"), requirement_file("requirements-jetson.txt")
    assert sorted(map(_key, runtime)) == sorted(map(_key, declared["runtime"]))
    assert sorted(map(_key, jetson)) == sorted(map(_key, declared["runtime"] + declared["tensorrt"]))
    dev = {canonicalize_name(r.name): r for r in requirement_file("requirements.txt")}
    mismatched = []
    for group, requirements in declared.items():  # the dev set is for this Python: markers evaluated here
        for r in requirements:
            name = canonicalize_name(r.name)
            if (r.marker is None or r.marker.evaluate()) and name not in NOT_IN_DEV_SET:
                if name not in dev or _key(dev[name]) != _key(r, marker=False):
                    mismatched.append(f"[{group}] {r} vs requirements.txt {dev.get(name)}")
    build_backend = Requirement(PYPROJECT["build-system"]["requires"][0])  # the wheel test builds with the dev set's
    if _key(dev.get("setuptools", build_backend)) != _key(build_backend):
        mismatched.append(f"build-system {build_backend} vs requirements.txt {dev.get('setuptools')}")
    assert not mismatched, "\n".join(mismatched)


def test_every_imported_library_is_declared_and_every_declared_one_is_imported():
    declared = {canonicalize_name(r.name) for group in groups().values() for r in group}
    imported = {canonicalize_name(DISTRIBUTIONS.get(module, module)): files
                for module, files in third_party_imports().items() if module not in EXTERNAL}
    undeclared = {name: files for name, files in imported.items() if name not in declared}
    assert not undeclared, f"imported but in no extra of pyproject.toml: {undeclared}"
    assert declared - set(imported) - FOR_USERS == set(), "declared in pyproject.toml but imported nowhere"


BLOCKED_RUN = """import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # what an install without that library looks like to `import`
from janus_edge.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("missing, command, extra", [
    ("torch", ["tiny", "{tmp}/ckpt"], "export"),
    ("onnx", ["check-trt", "{tmp}"], "tensorrt"),
    ("onnx", ["calibrate", "{tmp}", "{tmp}/w4", "--scheme", "w4"], "export"),  # in both extras: the command's own
])
def test_a_missing_library_names_its_extra_in_one_line(tmp_path, missing, command, extra):
    args = [arg.format(tmp=tmp_path) for arg in command]
    result = subprocess.run([sys.executable, "-c", BLOCKED_RUN, missing, *args], capture_output=True, text=True,
                            timeout=300)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"janus-edge {command[0]}: error: {missing} is not installed; "
                             f"fix: pip install 'janus-edge[{extra}]'\n")


def test_a_missing_module_of_our_own_is_a_bug_with_its_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-c", BLOCKED_RUN, "janus_edge.export.tiny", "tiny", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" in result.stderr and "ModuleNotFoundError" in result.stderr


def _cuda_python_pins(extra: str, python: str) -> list[Requirement]:
    target = {"python_version": python, "python_full_version": f"{python}.0"}
    return [r for r in groups()[extra] if canonicalize_name(r.name) == "cuda-python"
            and (r.marker is None or r.marker.evaluate(target))]


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13"])
def test_each_tensorrt_extra_pins_one_cuda_python_of_its_driver_major(python):
    """cuda-python must not be newer than the driver's CUDA (13 needs driver >= 580), so a CUDA 12 driver on any
    Python gets cuda-python 12 from `tensorrt`, a CUDA 13 driver 13 from `tensorrt-cu13` (`make gpu-install`
    picks the extra from the driver)."""
    for extra, major in (("tensorrt", 12), ("tensorrt-cu13", 13)):
        pins = _cuda_python_pins(extra, python)
        assert [int(next(iter(r.specifier)).version.split(".")[0]) for r in pins] == [major], (extra, pins)


# pip matches a manylinux platform tag exactly, so name each glibc up to JetPack 6.2's (Ubuntu 22.04: glibc 2.35).
def _platforms(machine: str) -> list[str]:
    return [arg for minor in range(17, 36) for arg in ("--platform", f"manylinux_2_{minor}_{machine}")]


@pytest.mark.network
@pytest.mark.parametrize("machine", ["aarch64", "x86_64"])
@pytest.mark.parametrize("python", ["3.10", "3.12"])
@pytest.mark.parametrize("extra", ["tensorrt", "tensorrt-cu13"])
def test_gpu_machine_requirements_resolve(tmp_path, python, machine, extra):
    """What `make gpu-install` installs on a GPU machine (the runtime, a TensorRT extra and ONNX Runtime, which
    gpu-check compares with) resolves to wheels for JetPack 6.2 (cp310) and 7.x (cp312) on aarch64, and for x86_64.
    The `tensorrt` extra's set is requirements-jetson.txt."""
    # pip evaluates markers for the Python running it, not for --python-version: evaluate them for the target's
    target = {"python_version": python, "python_full_version": f"{python}.0", "platform_machine": machine}
    declared = groups()
    wanted = declared["runtime"] + declared[extra] + declared["onnxruntime"]
    if extra == "tensorrt":
        assert sorted(map(_key, requirement_file("requirements-jetson.txt"))) == \
            sorted(map(_key, declared["runtime"] + declared["tensorrt"]))
    pins = [r for r in wanted if r.marker is None or r.marker.evaluate(target)]
    (tmp_path / "gpu.txt").write_text("".join(f"{r.name}{r.specifier}\n" for r in pins))
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
               "--only-binary=:all:", *_platforms(machine), "--python-version", python, "--implementation", "cp",
               "--target", str(tmp_path / "target"), "--timeout", "20", "-r", str(tmp_path / "gpu.txt")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and any(w in result.stderr for w in INDEX_UNREACHABLE):
        pytest.skip(f"the package index is unreachable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
