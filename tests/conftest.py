"""Shared fixtures: tiny checkpoints in both formats and their exports, made once per test session."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    from janus_edge.export.tiny import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-hf", "hf", seed=0)


@pytest.fixture(scope="session")
def tiny_original(tmp_path_factory):
    from janus_edge.export.tiny import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-original", "original", seed=0)


def _export(tmp_path_factory, model_dir, name, **options):
    from janus_edge.export.exporter import export

    out = tmp_path_factory.mktemp("export") / name
    export(model_dir, out, log=lambda message: None, **options)
    return out


@pytest.fixture(scope="session")
def export_hf(tmp_path_factory, tiny_hf):
    return _export(tmp_path_factory, tiny_hf, "hf-fp32")


@pytest.fixture(scope="session")
def export_original(tmp_path_factory, tiny_original):
    return _export(tmp_path_factory, tiny_original, "original-fp32")


@pytest.fixture(scope="session")
def export_fp16(tmp_path_factory, tiny_hf):
    return _export(tmp_path_factory, tiny_hf, "hf-fp16", precision="fp16")


@pytest.fixture(scope="session")
def export_gqa(tmp_path_factory, tiny_hf):
    """The tiny export with the ort_gqa KV form (ONNX Runtime's GroupQueryAttention writes the cache)."""
    return _export(tmp_path_factory, tiny_hf, "hf-fp32-gqa", kv_form="ort_gqa")


@pytest.fixture(scope="session")
def reference(tiny_hf):
    """transformers' JanusForConditionalGeneration with the tiny weights: the parity reference."""
    from janus_edge.export.checkpoint import load_checkpoint

    return load_checkpoint(tiny_hf).model


@pytest.fixture(scope="session")
def runtime(export_hf):
    from janus_edge.runtime import JanusRuntime

    return JanusRuntime.load(export_hf)


def run_cli(*args: str, check_code: int | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "janus_edge", *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    if check_code is not None:
        assert result.returncode == check_code, result.stdout + result.stderr
    return result


@pytest.fixture(scope="session", params=["in_place", "ort_gqa"])
def form_runtime(request, runtime):
    """The runtime over each KV cache form's export: parity must hold token for token for both."""
    from janus_edge.runtime import JanusRuntime

    if request.param == "in_place":
        return runtime
    return JanusRuntime.load(request.getfixturevalue("export_gqa"))


@pytest.fixture(scope="session")
def standin_engines(tmp_path_factory, export_hf):
    """The tiny export's engines built on the TensorRT stand-in (tests/standin_env.py), shared by every test module."""
    from standin_env import build_standin_engines

    return build_standin_engines(export_hf, tmp_path_factory.mktemp("standin"))


SCHEMES = ["int8", "w8", "w4", "fp16", "int8,w4", "fp16,w4"]  # the calibrated exports every precision test reads


@pytest.fixture(scope="session")
def calibrated(tmp_path_factory, export_hf):
    """The tiny export calibrated with each of `SCHEMES`, made once per session."""
    from janus_edge.calibration.calibrate import calibrate

    out = {}
    for scheme in SCHEMES:
        out[scheme] = tmp_path_factory.mktemp("calibrated") / scheme.replace(",", "-")
        calibrate(export_hf, out[scheme], scheme, samples=2, log=lambda message: None)
    return out


@pytest.fixture(scope="session")
def flow_dir(tmp_path_factory):
    from janus_edge.export.janusflow.tiny import write_janusflow

    return write_janusflow(tmp_path_factory.mktemp("ckpt") / "janusflow")


@pytest.fixture(scope="session")
def flow_export(tmp_path_factory, flow_dir):
    from janus_edge.export.exporter import export

    out = tmp_path_factory.mktemp("export") / "janusflow-fp32"
    export(flow_dir, out, log=lambda message: None, vae=flow_dir / "vae")
    return out


@pytest.fixture(scope="session")
def flow_runtime(flow_export):
    from janus_edge.runtime import JanusRuntime

    return JanusRuntime.load(flow_export)
