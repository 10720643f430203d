"""Shared fixtures, each made once per test session and visible to every test under tests/: the tiny checkpoints in
both formats, their exports, calibrations and stand-in engines, and the wheel. Helper functions are in tests/helpers/."""

from __future__ import annotations

import pytest
from calibration_schemes import SCHEMES
from fresh_venv import build_wheel
from standin_env import build_standin_engines, standin_imports


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


@pytest.fixture(scope="session", params=["in_place", "ort_gqa"])
def form_runtime(request, runtime):
    """The runtime over each KV cache form's export: parity must hold token for token for both."""
    from janus_edge.runtime import JanusRuntime

    if request.param == "in_place":
        return runtime
    return JanusRuntime.load(request.getfixturevalue("export_gqa"))


@pytest.fixture(scope="session")
def standin_engines(tmp_path_factory, export_hf):
    """The tiny export's engines built on the TensorRT stand-in (tests/helpers/standin_env.py: its default machine,
    TensorRT 10.3 on an H100), shared by every test module."""
    return build_standin_engines(export_hf, tmp_path_factory.mktemp("standin"))


@pytest.fixture(scope="session")
def standin_fp16_engines(tmp_path_factory, export_fp16):
    """The fp16 export's engines on the same stand-in machine."""
    return build_standin_engines(export_fp16, tmp_path_factory.mktemp("standin-fp16"))


@pytest.fixture(scope="session")
def small_standin_engines(tmp_path_factory, export_hf):
    """Stand-in engines for one image and a 1024-token context, as `janus-edge build --images 1 --context 1024`
    makes them."""
    out = tmp_path_factory.mktemp("standin-small")
    with standin_imports():
        from janus_edge.export.tensorrt.build import build

        build(export_hf, out / "engines", "datacenter", timing_cache=str(out / "timing.cache"), images=1, context=1024,
              log=lambda m: None)
    return out / "engines"


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


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The package's wheel, built once (tests/helpers/fresh_venv.py)."""
    return build_wheel(tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel"))
