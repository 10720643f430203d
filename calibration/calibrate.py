"""`janus-edge calibrate`: an fp32 (or fp16) export -> a new export at reduced precision, same manifest contract.

Schemes (combinable, e.g. "int8,w4"; parsed by export/precision.py, which `plan` uses too):
- int8: Q/DQ INT8 (activations and per-channel weights, symmetric) for the vision encoder and the VQ decoder,
  calibrated on real photographs and on image tokens the model generates;
- w8 / w4: weight-only INT8 / block-wise INT4 for the decoder, lm_head and generation_head (round-to-nearest:
  data-free, so no calibration set is needed), with the text embedding table in fp16. An INT8 table gathered row
  by row would be smaller still, but TensorRT's ONNX parser has no INT8 Gather (10.3 to 11; see
  export/tensorrt/data/onnx_tensorrt_ops.json) and a DequantizeLinear before the Gather would dequantise the whole
  table every step in ONNX Runtime;
- fp16: every graph not covered by another scheme goes to fp16 with norms, softmax and GELU kept in fp32, and the
  weight-only graphs compute in fp16; the decoder's KV cache is then fp16 (what GPU and TensorRT deployments want);
- kv8: the decoder's KV cache in INT8 with calibrated per-channel scales (ort_gqa exports; kv_int8.py).
Graphs no scheme covers stay fp32, and so does the KV cache without fp16 or kv8.

An fp16 export (how a 7B model is exported: 27 GB of fp32 fits no machine it is meant for) can be calibrated to
w8, w4 and fp16: its graphs already compute in fp16, so the scheme gets fp16 ("w4" makes "fp16,w4", quantised from the
fp16 weights, which is what an fp32 export's "fp16,w4" quantises too). int8 and kv8 calibrate from fp32 only.
w8, w4 and fp16 stream: a graph's weights are read, converted and written one tensor (one chunk of rows) at a time,
so the peak is about the largest graph's structure plus a chunk, whatever the model's size; the run ends with its
peak resident memory.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from janus_edge.export.fp16 import to_fp16_streamed
from janus_edge.export.memory import peak_memory_line
from janus_edge.export.onnx_io import StreamedGraph
from janus_edge.export.precision import Precision, parse_precision
from janus_edge.export.staging import staged_directory
from janus_edge.runtime import JanusRuntime
from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.kv import cache_tensors, check_support
from janus_edge.runtime.manifest import MANIFEST_NAME, Manifest, sha256_file

from . import data, int8, kv_int8, weight_only


def calibrate(export_dir: str | Path, out_dir: str | Path, scheme: str, images_dir: str | None = None,
              prompts_file: str | None = None, samples: int = 4, log=print) -> Manifest:
    chosen = parse_precision(scheme)
    if chosen.words == ("fp32",):
        raise RequestError("calibrate makes reduced precisions; fp32 is what it starts from",
                           "use int8, w8, w4, fp16, kv8 or a combination such as int8,w4")
    export_dir = Path(export_dir)
    runtime = JanusRuntime.load(export_dir)
    source = runtime.manifest
    chosen = _from_source(chosen, source.precision, export_dir, log)
    check_support(source.kv_cache.form, precision_words=chosen.words, family=source.model.family)
    feeds, kv_scales = {}, None
    calibration = data.load_set(images_dir, prompts_file, samples) if {"kv8", "int8"} & set(chosen.words) else None
    if "kv8" in chosen.words:
        log(f"observing the KV cache over {samples} understanding and {samples} generation requests")
        kv_scales = kv_int8.collect_scales(runtime, calibration)
    if "int8" in chosen.words:
        log(f"collecting calibration inputs ({samples} images, {samples} generated token grids)")
        feeds = {"vision_encoder": data.vision_inputs(calibration, runtime),
                 "vq_decoder": data.vq_inputs(calibration, runtime)}
    runtime.close()  # its sessions and caches are not needed for the conversion (gigabytes at full size)
    with staged_directory(out_dir, MANIFEST_NAME) as staging:
        graphs = {}
        for name, graph in source.graphs.items():
            precision, half = chosen.graph(name), chosen.activation_dtype(name) == "float16"
            log(f"{name}: {precision}{' with fp16 activations' if half and precision != 'fp16' else ''}")
            source_path = export_dir / graph.file
            graphs[name] = dataclasses.replace(graph, precision=precision)
            cache = _cache_names(source) if name == "decoder" else set()
            if precision == source.precision and not (cache and kv_scales is not None):
                for file in [graph.file] + [f for f in source.files if f == graph.file + ".data"]:
                    shutil.copyfile(export_dir / file, staging / file)
                continue
            converted = _convert(source_path, precision, feeds.get(name), half and source.precision == "fp32",
                                 tuple(cache))
            if cache and kv_scales is not None:
                kv_int8.quantize_cache(converted.proto, kv_scales)
            converted.save(staging / graph.file)
            if cache:
                graphs[name] = _with_cache_dtype(graphs[name], cache, chosen.kv_dtype)
        shutil.copyfile(export_dir / source.tokenizer_file, staging / source.tokenizer_file)
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        producer = {**source.producer, "calibration": chosen.text,
                    "quantizer": "janus-edge RTN (weight-only)" + (", kv8 absmax scales" if kv_scales else "")
                    + ", onnxruntime.quantization (int8 Q/DQ)"}
        manifest = dataclasses.replace(source, precision=chosen.text, graphs=graphs, files=files,
                                       producer=producer)
        manifest.write(staging)
    log(f"wrote the {manifest.precision} export to {out_dir}")
    log(peak_memory_line())
    return manifest


SOURCE_PRECISIONS = ("fp32", "fp16")
FP32_ONLY_WORDS = ("int8", "kv8")  # calibrated on the fp32 model's activations and cache


def _from_source(chosen: Precision, source: str, export_dir: Path, log) -> Precision:
    """The scheme as made from a `source`-precision export: from fp16, with fp16 added (its graphs compute in fp16)."""
    refused = [w for w in chosen.words if w in FP32_ONLY_WORDS] if source == "fp16" else []
    if source not in SOURCE_PRECISIONS or refused:
        what = f"{' and '.join(refused)} calibration" if refused else "calibration"
        raise RequestError(f"{export_dir} is a {source} export; {what} starts from fp32"
                           + ("" if refused else " (w8, w4 and fp16 also from fp16)"),
                           "export with --precision fp32 and calibrate that")
    if source == "fp16" and "fp16" not in chosen.words:
        chosen = parse_precision(",".join(("fp16", *chosen.words)))
        log(f"{export_dir} is an fp16 export: its graphs compute in fp16, so this makes {chosen.text}")
    return chosen


def _cache_names(manifest: Manifest) -> set[str]:
    """The decoder's KV cache inputs and outputs (new positions in the in_place form, the cache in ort_gqa)."""
    return cache_tensors(manifest.kv_cache.form, manifest.model.kv_names)


def _with_cache_dtype(graph, cache: set[str], dtype: str):
    """The decoder's manifest entry with its cache tensors in `dtype`, as the converted graph declares them."""
    retype = lambda tensors: [dataclasses.replace(t, dtype=dtype) if t.name in cache else t  # noqa: E731
                              for t in tensors]
    return dataclasses.replace(graph, inputs=retype(graph.inputs), outputs=retype(graph.outputs))


def _convert(path: Path, precision: str, feeds, to_half: bool, fp16_io: tuple[str, ...]) -> StreamedGraph:
    """The graph at `path` at `precision`; `to_half`: converting it to fp16, with `fp16_io` (the KV cache) held in
    fp16. Every form but int8 (onnxruntime.quantization loads the whole graph) streams its weights."""
    if precision == "int8":
        return StreamedGraph(int8.quantize_int8(path, feeds), path.parent)
    upgrade = weight_only.upgrade_opset if precision in ("w8", "w4") else None
    if to_half:
        graph = to_fp16_streamed(path, fp16_io, before_weights=upgrade)
    else:  # weight-only from the source's dtype (converted before its weights are read), or an INT8 cache to add
        graph = StreamedGraph.load(path, before_weights=upgrade)
    if precision in ("w8", "w4"):
        weight_only.quantize_matmul_weights(graph, 8 if precision == "w8" else 4)
    return graph
