"""`janus-edge gpu-check` on the test-only stand-in (tests/standin/: NOT a GPU, not a hardware result): a valid report
for stand-in GPUs a target names (Orin 8.7, H100 9.0) and ones none does (A100 8.0, L4 8.9); every failure it knows
is one line on stderr and exit 2 (with the report still written); and in a fresh venv holding only the runtime,
`tensorrt` and `onnxruntime` extras (no torch), the same command works, and real cuda-python on this driverless
machine is the "no driver" line.

Python 3.10 (JetPack 6.2) cannot be had here (no python3.10 from apt; PyPI's standalone-Python installers download
from elsewhere), so the fresh venv is this machine's Python (3.11) built from the wheel, as tests/package/test_wheel.py
does. That test is marked slow and network (about 100 s with the wheel and the install):
`pytest -m slow tests/tensorrt/test_gpu_check.py`. The engines given with --engines are the session's stand-in
engines (tests/conftest.py: TensorRT 10.3 on an H100).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import numpy as np
from fresh_venv import fresh_venv
from standin_env import STANDIN, standin_env, standin_imports

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "janus_edge" / "data" / "gpu_check.schema.json").read_text())
MIB = 1 << 20
# Stand-in machines: GPU name, compute capability, device memory
ORIN_NANO = {"JANUS_STANDIN_GPU": "Orin", "JANUS_STANDIN_CC": "8.7", "JANUS_STANDIN_MEMORY_BYTES": str(7620 * MIB)}
MACHINES = {
    "orin-8.7": (ORIN_NANO, True),
    "a100-8.0": ({"JANUS_STANDIN_GPU": "NVIDIA A100-SXM4-80GB", "JANUS_STANDIN_CC": "8.0",
                  "JANUS_STANDIN_MEMORY_BYTES": str(81920 * MIB)}, False),
    "l4-8.9": ({"JANUS_STANDIN_GPU": "NVIDIA L4", "JANUS_STANDIN_CC": "8.9", "JANUS_STANDIN_MEMORY_BYTES": str(23034 * MIB)},
               False),
    "h100-9.0": ({"JANUS_STANDIN_GPU": "NVIDIA H100 80GB HBM3", "JANUS_STANDIN_CC": "9.0"}, True),
}


def gpu_check(tmp_path: Path, *args, python: str | Path = sys.executable, env: dict | None = None
              ) -> tuple[subprocess.CompletedProcess, dict]:
    """Runs the command with --json into tmp_path; returns the process and the report (validated)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    report = tmp_path / "report.json"
    environment = {**(env or standin_env()), "HOME": str(tmp_path)}  # the timing cache goes under ~/.cache
    result = subprocess.run([str(python), "-m", "janus_edge", "gpu-check", *map(str, args), "--json", str(report)],
                            capture_output=True, text=True, timeout=600, env=environment,
                            cwd=tmp_path)  # not the source tree: the installed janus_edge
    assert "Traceback" not in result.stderr, result.stderr
    data = json.loads(report.read_text())
    jsonschema.validate(data, SCHEMA)
    assert data["exit_code"] == result.returncode
    return result, data


def assert_one_line_failure(result: subprocess.CompletedProcess, report: dict, message: str) -> None:
    line = result.stderr
    assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
    assert line.count("\n") == 1 and line.startswith("janus-edge gpu-check: error: ") and "; fix: " in line, line
    assert message in line
    assert report["status"] == "error" and report["error"]["message"] in line and report["error"]["fix"] in line


@pytest.mark.parametrize("machine", list(MACHINES))
def test_gpu_check_reports_every_check_on_standin_gpus(machine, export_hf, tmp_path):
    """Known GPUs get their target, unknown ones a generic target that says so; engines built, every engine and both
    pipelines compared with ONNX Runtime (the stand-in runs the same graphs: all equal), graphs replayed, memory
    measured and within 5 % of plan_engines' figure (the Orin's counting pinned staging: shared memory), time
    measured."""
    settings, known = MACHINES[machine]
    result, report = gpu_check(tmp_path, export_hf, env=standin_env(**settings))
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["status"] == "pass" and report["machine"]["compute_capability"] == settings["JANUS_STANDIN_CC"]
    assert report["target"]["known"] is known and ("generic target" in report["target"]["note"]) is not known
    manifest = json.loads((export_hf / "janus_edge.json").read_text())
    names = {check["name"] for check in report["checks"]}
    assert {f"engine {graph}" for graph in manifest["graphs"]} | {"engine sampler", "engine cfg_sampler"} <= names
    assert {"teacher-forced lm_head", "teacher-forced generation_head", "free-run generation", "graph replay",
            "memory vs plan"} <= names
    memory = report["memory"]
    assert memory["engines_bytes"] > 0 and memory["request_bytes"] > 0
    assert memory["total_bytes"] == memory["engines_bytes"] + memory["request_bytes"]
    assert report["timing"]["decode_steps"] > 0 and report["versions"]["tensorrt"]
    assert result.stdout.splitlines()[-1].startswith("PASS: ") and len(result.stdout.splitlines()) <= 40


def test_gpu_check_judges_by_precision_and_fails_a_wrong_engine(export_hf, export_fp16, standin_fp16_engines,
                                                                 tmp_path):
    """fp16 engines checked against their fp16 export pass (the fp16 tolerance); the same engines given for the
    fp32 export are refused as another export's (one line), not compared with the wrong graphs."""
    engines = standin_fp16_engines
    result, report = gpu_check(tmp_path, export_fp16, "--engines", engines)
    assert result.returncode == 0 and report["export"]["built"] is False, result.stdout + result.stderr
    decoder = next(check for check in report["checks"] if check["name"] == "engine decoder")
    assert decoder["data"]["precision"] == "fp16" and "limit 0.02" in decoder["summary"]
    result, report = gpu_check(tmp_path, export_hf, "--engines", engines)
    assert_one_line_failure(result, report, "do not belong to")


def test_teacher_forced_checks_tell_fp16_from_fp32(export_hf, export_fp16, standin_engines, standin_fp16_engines):
    """In process, on the stand-in: the pipeline checks pass for engines of the same graphs, and the teacher-forced
    comparison tells fp16 rounding from fp32 (fp16 engines against the fp32 export fail fp32's tolerance, pass
    fp16's)."""
    engines, fp16_engines = standin_engines, standin_fp16_engines
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    with standin_imports():
        from janus_edge.gpucheck.forced import compare, pipeline_checks
        from janus_edge.runtime import JanusRuntime

        with JanusRuntime.load(engines) as gpu, JanusRuntime.load(export_hf) as cpu, \
                JanusRuntime.load(fp16_engines) as gpu16, JanusRuntime.load(export_fp16) as cpu16:
            checks = pipeline_checks(cpu, gpu, "fp32", image)
            assert [c.status for c in checks] == ["pass"] * len(checks) and len(checks) == 5, checks
            for head in ("lm_head", "generation_head"):
                same = compare(cpu16.backend, gpu16.backend, head)
                assert same.passes("fp32") and same.logits_error == 0.0
                mixed = compare(cpu.backend, gpu16.backend, head)
                assert mixed.logits_error > 0 and not mixed.passes("fp32") and mixed.passes("fp16")


def _only(tmp_path: Path, **entries: Path | str) -> dict[str, str]:
    """An environment whose import path holds only the named stand-in packages (a symlink each) or files."""
    folder = tmp_path / "path"
    for name, source in entries.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            target.symlink_to(source, target_is_directory=True)
        else:
            target.write_text(source)
    return {**standin_env(), "PYTHONPATH": str(folder)}


@pytest.mark.parametrize("failure, message", [
    ("no GPU", "the NVIDIA driver sees no CUDA GPU"),
    ("cuda-python 13 on a CUDA 12 driver", "is built for CUDA 13.0 and needs a CUDA 13 driver; this driver supports "
                                          "CUDA 12.6"),
    ("no TensorRT", "TensorRT is not installed"),
    ("TensorRT stubs only", "found no TensorRT library (only stubs?)"),
    ("engines from another TensorRT", "were built for TensorRT 10.3.0.30 (this machine has 10.16.0.1)"),
    ("engines from another GPU", "were built for a GPU of compute capability 9.0"),
    ("export is an engine directory", "is an engine directory, not an ONNX export"),
    ("not an export", "janus_edge.json"),
])
def test_each_known_failure_is_one_line_and_exit_2(failure, message, export_hf, standin_engines, tmp_path):
    export, args, env = export_hf, [], standin_env()
    if failure == "no GPU":
        env = standin_env(JANUS_STANDIN_DEVICES="0")
    elif failure == "cuda-python 13 on a CUDA 12 driver":
        env = standin_env(JANUS_STANDIN_DRIVER="12060", JANUS_STANDIN_CUDA_RUNTIME="13000")
    elif failure == "no TensorRT":
        env = _only(tmp_path, cuda=STANDIN / "cuda")
    elif failure == "TensorRT stubs only":  # what `pip install tensorrt-stubs` leaves: a namespace package of .pyi
        env = _only(tmp_path, cuda=STANDIN / "cuda", **{"tensorrt/__init__.pyi": "def __getattr__(name): ...\n"})
    elif failure == "engines from another TensorRT":
        args, env = ["--engines", standin_engines], standin_env(JANUS_STANDIN_TRT_VERSION="10.16.0.1")
    elif failure == "engines from another GPU":
        args, env = ["--engines", standin_engines], standin_env(**ORIN_NANO)
    elif failure == "export is an engine directory":
        export = standin_engines
    else:
        export = tmp_path / "empty"
        export.mkdir()
    result, report = gpu_check(tmp_path, export, *args, env=env)
    assert_one_line_failure(result, report, message)


def test_without_an_export_only_the_machine_is_checked(tmp_path):
    result, report = gpu_check(tmp_path, env=standin_env(**ORIN_NANO))
    assert result.returncode == 0 and report["export"] is None and report["checks"] == []
    assert report["target"]["name"] == "orin-nano-8gb" and "no EXPORT_DIR" in report["notes"][0]


@pytest.mark.slow  # ~75 s for the call on this shared 2-core machine (pip install from the index's cache) + the wheel
@pytest.mark.network
def test_a_venv_with_only_the_gpu_extras_runs_gpu_check_without_torch(wheel, export_hf,
                                                                      tmp_path_factory, tmp_path):
    """The wheel with the runtime, `tensorrt` and `onnxruntime` extras only: torch and transformers are not there,
    gpu-check passes on the stand-in Orin, and the real cuda-python it installed, on this machine without an NVIDIA
    driver, gives the "no driver" line."""
    with fresh_venv(tmp_path_factory, "tensorrt,onnxruntime", wheel) as bin_dir:
        python = bin_dir / "python"
        missing = subprocess.run([str(python), "-c", "import importlib.util as u; "
                                  "print([m for m in ('torch', 'transformers') if u.find_spec(m)])"],
                                 capture_output=True, text=True, timeout=120)
        assert missing.stdout.strip() == "[]", missing.stdout + missing.stderr
        result, report = gpu_check(tmp_path / "orin", export_hf, python=python, env=standin_env(**ORIN_NANO))
        assert result.returncode == 0 and report["status"] == "pass", result.stdout + result.stderr
        assert report["versions"]["cuda_python"] and not report["versions"]["python"].startswith("3.13")
        # the stand-in TensorRT needs the stand-in cudart; here only `import tensorrt` must succeed, so that the
        # real cuda-python's first call is what fails
        real_cuda = _only(tmp_path / "driverless", **{"tensorrt/__init__.py": "__version__ = '10.3.0.30'\n"
                                                                              "class Runtime: ...\n"})
        result, report = gpu_check(tmp_path / "driverless", export_hf, python=python, env=real_cuda)
        assert_one_line_failure(result, report, "no NVIDIA driver is loaded")
