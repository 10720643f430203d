"""`janus-edge export`: checkpoint -> its family's ONNX graphs + tokenizer + `janus_edge.json`, written atomically.

The family (export/families) says which graphs there are, which stay fp32, and what the manifest records besides
them; this module runs torch.onnx over each and writes the files.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from janus_edge.runtime import kv
from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import (FORM_SCHEMA_VERSIONS, MANIFEST_NAME, Graph, KVCacheFormat, Limits, Manifest,
                                         ModelInfo, Tensor, sha256_file)

from . import metadata
from .checkpoint import checkpoint_family
from .components import NUM_IMAGE_TOKENS
from .families.base import Checkpoint, ManifestExtras
from .bound_weights import export_bound
from .fp16 import graph_to_fp16, to_fp16
from .graphs import GraphSpec
from .memory import peak_memory_line
from .onnx_io import load_graph, save_graph
from .precision import EXPORT_WORDS, parse_precision
from .staging import check_replaceable, staged_directory

OPSET = 17
SAMPLE_SIZES = {"batch": 2, "sequence": 3, "past_sequence": 5, "capacity": 10}


def export(model_dir: str | Path, out_dir: str | Path, precision: str = "fp32", max_batch: int = 8,
           max_context: int = 4096, family: str | None = None, log=print, vae: str | Path | None = None,
           kv_form: str = "in_place") -> Manifest:
    """`family`: the prompt format of a Janus checkpoint ("janus-pro" or "janus"; default: what it names itself).
    `vae`: the SDXL VAE directory a JanusFlow checkpoint needs (diffusers layout); unused for Janus-Pro.
    `kv_form`: the decoder's KV cache form (manifest `kv_cache.form`): "in_place" (plain ONNX, every backend) or
    "ort_gqa" (ONNX Runtime's fused GroupQueryAttention; ONNX Runtime only)."""
    if precision not in [",".join(words) for words in EXPORT_WORDS]:
        raise RequestError(f"unknown precision {precision!r}", "use fp32 or fp16 (int8/w8/w4/kv8 come from "
                           "calibrate; kv8 from an export made with --kv-form ort_gqa)")
    chosen = parse_precision(precision)
    if max_batch < 1 or max_context < NUM_IMAGE_TOKENS + 16:
        raise RequestError(f"--max-batch {max_batch} / --max-context {max_context} are too small",
                           f"use a batch >= 1 and a context >= {NUM_IMAGE_TOKENS + 16} ({NUM_IMAGE_TOKENS} image "
                           "tokens + prompt)")
    found, config_json = checkpoint_family(model_dir)
    kv.check_support(kv_form, precision_words=chosen.words, family=found.names[0])
    check_replaceable(out_dir, MANIFEST_NAME)  # before minutes of loading, not after
    checkpoint = found.load(Path(model_dir), config_json, prompt_family=family, vae=vae, lazy=True)
    info = found.model_info(checkpoint)
    limit = info.max_position_embeddings
    if max_context > limit:
        raise RequestError(f"--max-context {max_context} is over the model's {limit} positions",
                           f"use --max-context {limit} or less")
    extras = found.manifest_extras(checkpoint, info)
    with staged_directory(out_dir, MANIFEST_NAME) as staging:
        graphs = {}
        for spec in found.graph_specs(info, extras.tokens, chosen.kv_dtype, kv_form):
            graph_precision = found.graph_precision(spec.name, precision)
            log(f"exporting {spec.name} ({graph_precision})")
            graphs[spec.name] = export_graph(checkpoint, spec, info, staging, graph_precision)
            log(f"  {peak_memory_line()} so far")
        shutil.copyfile(checkpoint.tokenizer_file, staging / "tokenizer.json")
        manifest = _manifest(checkpoint, info, extras, graphs, precision, Limits(max_batch, max_context), staging)
        manifest.kv_cache = KVCacheFormat(form=kv_form)
        manifest.schema_version = FORM_SCHEMA_VERSIONS[kv_form]
        manifest.write(staging)
    log(f"wrote {len(graphs)} graphs and {MANIFEST_NAME} to {out_dir}; {peak_memory_line()}")
    return manifest


def dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    axes = {}
    for tensor in spec.inputs + spec.outputs:
        named = {i: d for i, d in enumerate(tensor.shape) if isinstance(d, str)}
        if named:
            axes[tensor.name] = named
    return axes


def export_graph(checkpoint: Checkpoint, spec: GraphSpec, info: ModelInfo, directory: Path, precision: str) -> Graph:
    """One graph: torch.onnx (TorchScript) at `SAMPLE_SIZES`, converted to fp16 if asked, saved in `directory`.
    A streamed spec's weights are bound after tracing (bound_weights); any other graph's parameters are read for
    the export and dropped after it."""
    module = spec.make_module(checkpoint).eval()
    sample = tuple(spec.sample(info, SAMPLE_SIZES).values())
    file = f"{spec.name}.onnx"
    options = {"input_names": [t.name for t in spec.inputs], "output_names": [t.name for t in spec.outputs],
               "dynamic_axes": dynamic_axes(spec), "opset_version": OPSET}
    fp16_io = tuple(t.name for t in spec.inputs + spec.outputs if t.dtype == "float16")
    with tempfile.TemporaryDirectory() as tmp:
        if spec.streamed:
            graph = export_bound(module, checkpoint.weights, sample, options, Path(tmp))
            if precision == "fp16":
                graph = graph_to_fp16(graph, fp16_io)
            graph.save(directory / file)
        else:
            raw = Path(tmp) / file
            with checkpoint.weights.materialized(module), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, sample, str(raw), dynamo=False, do_constant_folding=True, **options)
            save_graph(to_fp16(raw, fp16_io) if precision == "fp16" else load_graph(raw), directory / file)
    return Graph(file=file, precision=precision,
                 inputs=[Tensor(t.name, t.dtype, list(t.shape)) for t in spec.inputs],
                 outputs=[Tensor(t.name, t.dtype, list(t.shape)) for t in spec.outputs])


def _manifest(checkpoint: Checkpoint, info: ModelInfo, extras: ManifestExtras, graphs: dict[str, Graph],
              precision: str, limits: Limits, directory: Path) -> Manifest:
    import onnx
    import transformers

    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}
    producer = {"janus_edge": _version(), "torch": torch.__version__, "transformers": transformers.__version__,
                "onnx": onnx.__version__, "opset": str(OPSET), "exporter": "torch.onnx (TorchScript)",
                **extras.producer}
    return Manifest(model=info, precision=precision, limits=limits, graphs=graphs, tokens=extras.tokens,
                    prompt=extras.prompt, preprocessing=metadata.preprocessing(checkpoint.processor),
                    generation=extras.generation, tokenizer_file="tokenizer.json", files=files, producer=producer,
                    flow=extras.flow)


def _version() -> str:
    """The installed janus-edge's version (read from its metadata: export never imports the CLI shell)."""
    from importlib.metadata import version

    return version("janus-edge")
