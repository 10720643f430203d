"""The TensorRT backend's memory for a request, computed from the figures it allocates from.

`request_memory(manifest, engines, images, context, window)` gives, for an understanding request (one row:
`images` images and a question filling the context) and a generation request (2 x `images` CFG rows, a prompt
filling the context with the image's tokens; with `window`, speculative decoding's verify passes of that many
positions), what the backend holds at the request's peak, by the categories `TensorRTBackend.device_memory_bytes()`
reports:

- engines: every engine's size as `build` recorded it (its weights on the device);
- scratch: ONE allocation shared by every execution context: the largest `device_memory_size_v2` recorded;
- kv_cache, kv_spare, step_io: `runtime.kv`'s figures for the request's rows and capacity, the step buffers for a
  verify pass's width with a window (`trt_decoder.step_io_bytes`);
- prefill_io: the prefill's buffer for its largest chunk (`trt_decoder.prefill_layout`), held until the request
  ends;
- io: the other engines' input and output buffers at the shapes the pipelines call them with (a speculative
  request: the window's image ids and embeddings, and the head's logits for every window position, rows x window x
  codebook x 4 bytes; no sampler engine);
- staging: pinned host buffers (host memory on a discrete GPU; the same DRAM as the GPU's on a Jetson).

Every shape comes from the manifest's graph IO (symbolic dims `batch`, `sequence` filled in per call), the KV
figures from `runtime.kv`; the call pattern below is the pipelines' (runtime/pipelines/).
"""

from __future__ import annotations

import numpy as np

from .. import kv
from ..manifest import Manifest
from ..tensor_names import ATTENTION_MASK, CFG_SAMPLER, CFG_WEIGHT, INPUTS_EMBEDS, POSITION_IDS
from .cuda import DOWNLOAD, staging_key
from .engine_manifest import EngineManifest
from .trt_decoder import PREFILL_CHUNK, prefill_layout, step_io_bytes

CATEGORIES = ("engines", "scratch", "kv_cache", "kv_spare", "step_io", "prefill_io", "io", "staging")
DEVICE = CATEGORIES[:-1]


def _bytes(manifest: Manifest, graph: str, tensor: str, dims: dict[str, int]) -> int:
    spec = manifest.graphs[graph]
    found = next(t for t in spec.inputs + spec.outputs if t.name == tensor)
    shape = [dims[d] if isinstance(d, str) else int(d) for d in found.shape]
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(found.dtype).itemsize


def _calls(manifest: Manifest, kind: str, images: int, rows: int, prompt: int,
           window: int) -> list[tuple[str, dict, list[str]]]:
    """(graph, dims, tensors with a buffer of their own: outputs and host-uploaded inputs) per call, in order;
    generation's token steps are `window` positions wide (1: the plain loop; the head's hidden states come up from
    the host once, after the prefill, one position per row). Each of these graphs has one input and one output."""
    def io(graph: str, dims: dict, inputs: bool = True, outputs: bool = True) -> tuple[str, dict, list[str]]:
        spec = manifest.graphs[graph]
        return graph, dims, [spec.inputs[0].name] * inputs + [spec.outputs[0].name] * outputs

    if kind == "understanding":
        return [io("vision_encoder", {"batch": images}), io("text_embedding", {"batch": 1, "sequence": prompt}),
                io("lm_head", {"batch": 1, "sequence": 1})]
    return [io("text_embedding", {"batch": rows, "sequence": prompt}),
            io("generation_head", {"batch": rows, "sequence": 1}, outputs=False),
            io("generation_head", {"batch": rows, "sequence": window}, inputs=False),
            io("generation_embedding", {"batch": rows, "sequence": window}), io("vq_decoder", {"batch": 1})]


def _output_bytes(manifest: Manifest, graph: str, dims: dict[str, int]) -> int:
    """The output of a graph of one output, as the call with `dims` returns it."""
    return _bytes(manifest, graph, manifest.graphs[graph].outputs[0].name, dims)


def sampler_bytes(rows: int, vocab: int, cfg: bool) -> int:
    """The sampler engines' outputs (export/tensorrt/sampler_graph.py): greedy ids [N] (int64) and, with CFG,
    the mixed logits [N, V] (fp32, N = rows / 2), plus the 4-byte CFG weight."""
    n = rows // 2 if cfg else rows
    return n * 8 + (n * vocab * 4 + 4 if cfg else 0)


def request_memory(manifest: Manifest, engines: EngineManifest, images: int, context: int,
                   window: int | None = None) -> dict[str, dict[str, int]]:
    """What the backend holds at the peak of each request kind, by category (see the module docstring); `window`:
    generation decodes speculatively, verify passes of that many positions (None: the plain loop)."""
    model, dtype = manifest.model, manifest.kv_dtype
    context = min(int(context), manifest.limits.max_context)
    fixed = {"engines": sum(e.engine_bytes for e in engines.engines.values()),
             "scratch": max(e.device_memory_bytes for e in engines.engines.values())}
    result = {}
    # JanusFlow's flow request is not modelled from engines yet: its engine directories plan understanding only
    for kind in ("understanding", "generation") if "generation_head" in manifest.graphs else ("understanding",):
        rows = 1 if kind == "understanding" else 2 * images
        prompt = context - 1 if kind == "understanding" else context - manifest.model.num_image_tokens + 1
        capacity = kv.request_capacity(context, manifest.limits.max_context)
        slots = kv.grow_view(prompt, kv.first_view(capacity, context)[1], True, manifest.limits.max_context)[0]
        width = (window or 1) if kind == "generation" else 1
        step = step_io_bytes(model, dtype, rows, capacity, width)
        chunk = min(prompt, PREFILL_CHUNK)
        prefill = prefill_layout(model, dtype, rows, chunk, slots)
        io, staging = 0, {}
        for graph, dims, owned in _calls(manifest, kind, images, rows, prompt, width):
            for tensor in owned:
                nbytes = _bytes(manifest, graph, tensor, dims)
                io += nbytes
                if tensor in {t.name for t in manifest.graphs[graph].inputs}:
                    staging[staging_key(graph, tensor)] = nbytes
        cfg = kind == "generation"
        speculative = cfg and window is not None  # the host samples from the head's logits: no sampler engine
        if not speculative:
            io += sampler_bytes(rows, manifest.model.codebook_size if cfg else manifest.model.vocab_size, cfg)
        downloads = [rows * model.hidden_size * 4, rows * 8]
        if kind == "understanding":  # the vision encoder's and text embedding's outputs are spliced on the host
            downloads += [_output_bytes(manifest, "vision_encoder", {"batch": images}),
                          _output_bytes(manifest, "text_embedding", {"batch": 1, "sequence": prompt})]
        else:
            downloads.append(_output_bytes(manifest, "vq_decoder", {"batch": 1}))
            if speculative:  # every window position's logits come down to the host
                downloads.append(_output_bytes(manifest, "generation_head", {"batch": rows, "sequence": width}))
        staging[DOWNLOAD] = max(downloads)
        chunk_inputs = kv.decode_io_bytes(model, dtype, rows, slots, chunk)
        step_inputs = kv.decode_io_bytes(model, dtype, rows, capacity, width)
        for name in (ATTENTION_MASK, POSITION_IDS):  # one staging buffer each: a prefill chunk's or a step's
            staging[staging_key("decoder", name)] = max(chunk_inputs[name], step_inputs[name])
        if kind == "understanding":  # the prompt's embeddings go up too (a generation's stay on the device)
            staging[staging_key("decoder", INPUTS_EMBEDS)] = chunk_inputs[INPUTS_EMBEDS]
        elif not speculative:
            staging[staging_key(CFG_SAMPLER, CFG_WEIGHT)] = 4
        result[kind] = {**fixed, "kv_cache": kv.cache_bytes(model, dtype, rows, capacity),
                        "kv_spare": kv.spare_bytes(model, dtype, rows, capacity), "step_io": sum(step.values()),
                        "prefill_io": sum(prefill.values()), "io": io, "staging": sum(staging.values())}
    return result
