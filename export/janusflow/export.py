"""`janus-edge export MODEL_DIR OUT_DIR --vae VAE_DIR` for JanusFlow: seven graphs + tokenizer + manifest.

Called by export/exporter.py once it has checked the options; the manifest has the same contract as Janus-Pro's
(family "janusflow", codebook_size 0, a `flow` section instead of image tokens).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import (MANIFEST_NAME, FlowSettings, GenerationDefaults, Graph, Limits, Manifest,
                                         ModelInfo, SpecialTokens, sha256_file)

from .. import metadata
from ..checkpoint import load_checkpoint
from ..precision import parse_precision
from ..staging import staged_directory
from .graphs import FP32_ONLY, FlowGeometry, flow_graph_specs, flow_model_info, flow_tokens

CFG_WEIGHT = 2.0  # DeepSeek's README and demo default for JanusFlow


def export_janusflow(model_dir: str | Path, out_dir: str | Path, vae: str | Path | None, precision: str,
                     limits: Limits, log=print) -> Manifest:
    from ..exporter import OPSET, _export_graph, _version

    checkpoint = load_checkpoint(model_dir, vae=vae)
    text = checkpoint.model.config.language
    if limits.max_context > text.max_position_embeddings:
        raise RequestError(f"--max-context {limits.max_context} is over the model's {text.max_position_embeddings} "
                           "positions", f"use --max-context {text.max_position_embeddings} or less")
    info = flow_model_info(checkpoint)
    with staged_directory(out_dir, MANIFEST_NAME) as staging:
        graphs = {}
        for spec in flow_graph_specs(info, FlowGeometry.of(checkpoint), parse_precision(precision).kv_dtype):
            graph_precision = "fp32" if spec.name in FP32_ONLY else precision
            log(f"exporting {spec.name} ({graph_precision})")
            graphs[spec.name] = _export_graph(checkpoint, spec, info, staging, graph_precision)
        shutil.copyfile(checkpoint.tokenizer_file, staging / "tokenizer.json")
        import onnx
        import transformers

        producer = {"janus_edge": _version(), "torch": torch.__version__, "transformers": transformers.__version__,
                    "onnx": onnx.__version__, "opset": str(OPSET), "exporter": "torch.onnx (TorchScript)",
                    "vae_scaling_factor": str(checkpoint.vae.config.scaling_factor)}
        manifest = _manifest(checkpoint, info, graphs, precision, limits, staging, producer)
        manifest.write(staging)
    log(f"wrote {len(graphs)} graphs and {MANIFEST_NAME} to {out_dir}")
    return manifest


def _manifest(checkpoint, info: ModelInfo, graphs: dict[str, Graph], precision: str, limits: Limits,
              directory: Path, producer: dict[str, str]) -> Manifest:
    text = checkpoint.model.config.language
    vocab = metadata.tokenizer_vocab(checkpoint.tokenizer_file)
    fmt = metadata.prompt_format("janus", checkpoint.processor, vocab, text.eos_token_id)  # "User"/"Assistant"
    tokens = SpecialTokens(bos=text.bos_token_id, eos=text.eos_token_id, pad=text.pad_token_id,
                           image=metadata.token_id(vocab, fmt.image_token),
                           image_start=metadata.token_id(vocab, fmt.image_start),
                           image_end=metadata.token_id(vocab, fmt.image_end))
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}
    return Manifest(model=info, precision=precision, limits=limits, graphs=graphs, tokens=tokens, prompt=fmt,
                    preprocessing=metadata.preprocessing(checkpoint.processor),
                    generation=GenerationDefaults(cfg_weight=CFG_WEIGHT, image_tokens=flow_tokens(info)),
                    tokenizer_file="tokenizer.json", files=files, producer=producer, flow=FlowSettings())
