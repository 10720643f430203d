"""Writes a Triton Inference Server model repository: three Python-backend models over one export.

    OUT/janus_understanding/config.pbtxt, 1/model.py, export/   (the export, copied unless referenced)
    OUT/janus_understanding_stream/...                             (decoupled: one response per text piece)
    OUT/janus_generation/...

Each model.py imports its class from `janus_edge.serve.triton_models`, so the Python that runs the backend must
have janus-edge and its backend (onnxruntime or TensorRT) installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from string import Template

from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import load_manifest

EXPORT_HOLDER = "janus_understanding"  # the model directory the copied export lives in

TEXT_INPUTS = """
  { name: "IMAGES" data_type: TYPE_STRING dims: [ -1 ] optional: true },
  { name: "MAX_TOKENS" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "TEMPERATURE" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "TOP_P" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "SEED" data_type: TYPE_INT64 dims: [ 1 ] optional: true }"""

# name -> (class, decoupled, tensors: `$image_size` stands for the export's image side)
MODELS = {
    "janus_understanding": ("UnderstandingModel", False, f"""
input [
  {{ name: "QUESTION" data_type: TYPE_STRING dims: [ 1 ] }},{TEXT_INPUTS}
]
output [
  {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "TOKEN_IDS" data_type: TYPE_INT64 dims: [ -1 ] }},
  {{ name: "FINISH_REASON" data_type: TYPE_STRING dims: [ 1 ] }}
]"""),
    "janus_understanding_stream": ("StreamingUnderstandingModel", True, f"""
input [
  {{ name: "QUESTION" data_type: TYPE_STRING dims: [ 1 ] }},{TEXT_INPUTS}
]
output [ {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }} ]"""),
    "janus_generation": ("GenerationModel", False, """
input [
  { name: "PROMPT" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "N" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "CFG_WEIGHT" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "TEMPERATURE" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
  { name: "SEED" data_type: TYPE_INT64 dims: [ 1 ] optional: true },
  { name: "SPECULATIVE" data_type: TYPE_STRING dims: [ 1 ] optional: true },
  { name: "WINDOW" data_type: TYPE_INT32 dims: [ 1 ] optional: true }
]
output [
  { name: "IMAGES" data_type: TYPE_UINT8 dims: [ -1, $image_size, $image_size, 3 ] },
  { name: "TOKENS" data_type: TYPE_INT64 dims: [ -1, -1 ] }
]"""),
}


def write_repository(export_dir: str | Path, out_dir: str | Path, backend: str = "onnxruntime",
                     providers: list[str] | None = None, reference_export: bool = False,
                     instances: int = 1) -> list[Path]:
    """Writes the repository; returns the model directories. `reference_export` writes the export's absolute path
    instead of copying it (the servers must then see it at that path)."""
    export_dir, out_dir = Path(export_dir).resolve(), Path(out_dir)
    manifest = load_manifest(export_dir, verify=False)  # a clear error now rather than at the server's model load
    if out_dir.exists() and any(out_dir.iterdir()):
        raise RequestError(f"{out_dir} exists and is not empty", "choose a new OUT_DIR or empty it")
    if instances < 1:
        raise RequestError(f"--instances {instances} must be at least 1", "pass 1 or more")
    if reference_export:
        location = {name: str(export_dir) for name in MODELS}
    else:
        shutil.copytree(export_dir, out_dir / EXPORT_HOLDER / "export")
        location = {name: "export" if name == EXPORT_HOLDER else f"../{EXPORT_HOLDER}/export" for name in MODELS}
    written = []
    for name, (cls, decoupled, tensors) in MODELS.items():
        model_dir = out_dir / name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        (model_dir / "1" / "model.py").write_text(
            f'"""Written by `janus-edge triton-repo`."""\nfrom janus_edge.serve.triton_models import {cls} as '
            "TritonPythonModel  # noqa: F401\n")
        params = {"export_dir": location[name], "backend": backend, "providers": ",".join(providers or [])}
        parameters = "\n".join(f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
                               for key, value in params.items())
        policy = "\nmodel_transaction_policy { decoupled: true }" if decoupled else ""
        tensors = Template(tensors).substitute(image_size=manifest.model.image_size)  # the export's sizes
        (model_dir / "config.pbtxt").write_text(
            f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0{policy}\n{tensors.strip()}\n'
            f"instance_group [ {{ kind: KIND_CPU count: {instances} }} ]\n{parameters}\n")
        written.append(model_dir)
    return written
