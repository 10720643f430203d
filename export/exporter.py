"""`janus-edge export`: checkpoint -> seven ONNX graphs + tokenizer + `janus_edge.json`, written atomically."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import (MANIFEST_NAME, GenerationDefaults, Graph, Limits, Manifest, ModelInfo,
                                         Preprocessing, PromptFormat, SpecialTokens, Tensor, sha256_file)

from . import metadata
from .checkpoint import Checkpoint, load_checkpoint
from .fp16 import to_fp16
from .graphs import IMAGE_SIZE, NUM_IMAGE_TOKENS, Dims, GraphSpec, graph_specs
from .janusflow.checkpoint import is_janusflow
from .staging import check_replaceable, staged_directory

OPSET = 17
EXTERNAL_DATA_THRESHOLD = 1 << 30  # weights above 1 GiB go to a side file; protobuf cannot hold 2 GiB
SAMPLE_SIZES = {"batch": 2, "sequence": 3, "past_sequence": 5, "capacity": 7}
KV_DTYPES = {"fp32": "float32", "fp16": "float16"}  # the KV cache is held in the export's precision


def export(model_dir: str | Path, out_dir: str | Path, precision: str = "fp32", max_batch: int = 8,
           max_context: int = 4096, family: str | None = None, log=print, vae: str | Path | None = None) -> Manifest:
    """`vae`: the SDXL VAE directory a JanusFlow checkpoint needs (diffusers layout); unused for Janus-Pro."""
    if precision not in ("fp32", "fp16"):
        raise RequestError(f"unknown precision {precision!r}", "use fp32 or fp16 (int8/w8/w4 come from calibrate)")
    if max_batch < 1 or max_context < NUM_IMAGE_TOKENS + 16:
        raise RequestError(f"--max-batch {max_batch} / --max-context {max_context} are too small",
                           f"use a batch >= 1 and a context >= {NUM_IMAGE_TOKENS + 16} (576 image tokens + prompt)")
    if is_janusflow(model_dir):
        from .janusflow.export import export_janusflow

        return export_janusflow(model_dir, out_dir, vae, precision, Limits(max_batch, max_context), log)
    check_replaceable(out_dir, MANIFEST_NAME)  # before minutes of loading, not after
    checkpoint = load_checkpoint(model_dir, family)
    limit = checkpoint.model.config.text_config.max_position_embeddings
    if max_context > limit:
        raise RequestError(f"--max-context {max_context} is over the model's {limit} positions",
                           f"use --max-context {limit} or less")
    dims = Dims.of(checkpoint.model)
    with staged_directory(out_dir, MANIFEST_NAME) as staging:
        graphs = {}
        for spec in graph_specs(dims, KV_DTYPES[precision]):
            log(f"exporting {spec.name} ({precision})")
            graphs[spec.name] = _export_graph(checkpoint.model, spec, dims, staging, precision)
        shutil.copyfile(checkpoint.tokenizer_file, staging / "tokenizer.json")
        manifest = _manifest(checkpoint, dims, graphs, precision, Limits(max_batch, max_context), staging)
        manifest.write(staging)
    log(f"wrote {len(graphs)} graphs and {MANIFEST_NAME} to {out_dir}")
    return manifest


def dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    axes = {}
    for tensor in spec.inputs + spec.outputs:
        named = {i: d for i, d in enumerate(tensor.shape) if isinstance(d, str)}
        if named:
            axes[tensor.name] = named
    return axes


def _export_graph(model, spec: GraphSpec, dims: Dims, directory: Path, precision: str) -> Graph:
    import onnx

    module = spec.make_module(model).eval()
    sample = spec.sample(dims, SAMPLE_SIZES)
    file = f"{spec.name}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / file
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(sample.values()), str(raw), input_names=[t.name for t in spec.inputs],
                              output_names=[t.name for t in spec.outputs], dynamic_axes=dynamic_axes(spec),
                              opset_version=OPSET, dynamo=False, do_constant_folding=True)
        fp16_io = tuple(t.name for t in spec.inputs + spec.outputs if t.dtype == "float16")
        proto = to_fp16(raw, fp16_io) if precision == "fp16" else onnx.load(str(raw))
    save_graph(proto, directory / file)
    return Graph(file=file, precision=precision,
                 inputs=[Tensor(t.name, t.dtype, list(t.shape)) for t in spec.inputs],
                 outputs=[Tensor(t.name, t.dtype, list(t.shape)) for t in spec.outputs])


def save_graph(proto, path: Path) -> None:
    """Writes a graph (weights over 1 GiB to one side file), then checks it and its shapes."""
    import onnx

    proto.producer_name = "janus-edge"
    for stale in (path, Path(f"{path}.data")):
        stale.unlink(missing_ok=True)
    external = sum(init.ByteSize() for init in proto.graph.initializer) > EXTERNAL_DATA_THRESHOLD
    onnx.save_model(proto, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=1024)
    onnx.checker.check_model(str(path), full_check=False)
    onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred")  # raises on inconsistent shapes
    Path(str(path) + ".inferred").unlink()


def _manifest(checkpoint: Checkpoint, dims: Dims, graphs: dict[str, Graph], precision: str, limits: Limits,
              directory: Path) -> Manifest:
    import onnx
    import transformers

    config = checkpoint.model.config
    text = config.text_config
    vocab = metadata.tokenizer_vocab(checkpoint.tokenizer_file)
    fmt = metadata.prompt_format(checkpoint.family, checkpoint.processor, vocab, text.eos_token_id)
    tokens = SpecialTokens(bos=text.bos_token_id, eos=text.eos_token_id, pad=text.pad_token_id,
                           image=config.image_token_id, image_start=metadata.token_id(vocab, fmt.image_start),
                           image_end=metadata.token_id(vocab, fmt.image_end))
    info = ModelInfo(family=checkpoint.family, source_format=checkpoint.source_format, hidden_size=dims.hidden,
                     vocab_size=dims.vocab, codebook_size=dims.codebook, num_layers=dims.layers,
                     num_kv_heads=dims.kv_heads, head_dim=dims.head_dim, image_size=IMAGE_SIZE,
                     num_image_tokens=NUM_IMAGE_TOKENS, max_position_embeddings=text.max_position_embeddings)
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}
    producer = {"janus_edge": _version(), "torch": torch.__version__, "transformers": transformers.__version__,
                "onnx": onnx.__version__, "opset": str(OPSET), "exporter": "torch.onnx (TorchScript)"}
    return Manifest(model=info, precision=precision, limits=limits, graphs=graphs, tokens=tokens, prompt=fmt,
                    preprocessing=metadata.preprocessing(checkpoint.processor), generation=GenerationDefaults(),
                    tokenizer_file="tokenizer.json", files=files, producer=producer)


def _version() -> str:
    from janus_edge import __version__

    return __version__
