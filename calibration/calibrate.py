"""`janus-edge calibrate`: an fp32 export -> a new export at reduced precision, same manifest contract.

Schemes (combinable, e.g. "int8,w4"; parsed by export/precision.py, which `plan` uses too):
- int8: Q/DQ INT8 (activations and per-channel weights, symmetric) for the vision encoder and the VQ decoder,
  calibrated on real photographs and on image tokens the model generates;
- w8 / w4: weight-only INT8 / block-wise INT4 for the decoder, lm_head and generation_head (round-to-nearest:
  data-free, so no calibration set is needed), with the text embedding table in fp16. An INT8 table gathered row
  by row would be smaller still, but TensorRT's ONNX parser has no INT8 Gather (10.3 to 11; see
  export/tensorrt/data/onnx_tensorrt_ops.json) and a DequantizeLinear before the Gather would dequantise the whole
  table every step in ONNX Runtime;
- fp16: every graph not covered by another scheme goes to fp16 with norms, softmax and GELU kept in fp32;
- kv8: the decoder's KV cache in INT8 with calibrated per-channel scales (ort_gqa exports; kv_int8.py).
Graphs no scheme covers stay fp32, and so does the KV cache without kv8.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from janus_edge.export.fp16 import to_fp16
from janus_edge.export.onnx_io import load_graph, save_graph
from janus_edge.export.precision import parse_precision
from janus_edge.export.staging import staged_directory
from janus_edge.runtime import JanusRuntime
from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import MANIFEST_NAME, Manifest, sha256_file

from . import data, int8, kv_int8, weight_only


def calibrate(export_dir: str | Path, out_dir: str | Path, scheme: str, images_dir: str | None = None,
              prompts_file: str | None = None, samples: int = 4, log=print) -> Manifest:
    chosen = parse_precision(scheme, calibrated=True)
    if chosen.words == ("fp32",):
        raise RequestError("calibrate makes reduced precisions; fp32 is what it starts from",
                           "use int8, w8, w4, fp16, kv8 or a combination such as int8,w4")
    export_dir = Path(export_dir)
    runtime = JanusRuntime.load(export_dir)
    source = runtime.manifest
    if source.precision != "fp32":
        raise RequestError(f"{export_dir} is a {source.precision} export; calibration starts from fp32",
                           "export with --precision fp32 and calibrate that")
    feeds, kv_scales = {}, None
    if "kv8" in chosen.words:
        kv_int8.check_source(source)
        log(f"observing the KV cache over {samples} understanding and {samples} generation requests")
        kv_scales = kv_int8.collect_scales(runtime, data.load_set(images_dir, prompts_file, samples))
    if "int8" in chosen.words:
        log(f"collecting calibration inputs ({samples} images, {samples} generated token grids)")
        calibration = data.load_set(images_dir, prompts_file, samples)
        feeds = {"vision_encoder": data.vision_inputs(calibration, runtime),
                 "vq_decoder": data.vq_inputs(calibration, runtime)}
    runtime.close()  # its sessions and caches are not needed for the conversion (gigabytes at full size)
    with staged_directory(out_dir, MANIFEST_NAME) as staging:
        graphs = {}
        for name, graph in source.graphs.items():
            precision = chosen.graph(name)
            log(f"{name}: {precision}")
            source_path = export_dir / graph.file
            graphs[name] = dataclasses.replace(graph, precision=precision)
            if name == "decoder" and kv_scales is not None:
                proto = load_graph(source_path) if precision == "fp32" else _convert(source_path, precision, None)
                kv_int8.quantize_cache(proto, kv_scales)
                save_graph(proto, staging / graph.file)
                graphs[name] = kv_int8.int8_cache_tensors(graphs[name], source.model.kv_names)
            elif precision == "fp32":
                for file in [graph.file] + [f for f in source.files if f == graph.file + ".data"]:
                    shutil.copyfile(export_dir / file, staging / file)
            else:
                save_graph(_convert(source_path, precision, feeds.get(name)), staging / graph.file)
        shutil.copyfile(export_dir / source.tokenizer_file, staging / source.tokenizer_file)
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        producer = {**source.producer, "calibration": chosen.text,
                    "quantizer": "janus-edge RTN (weight-only, kv8 scales), onnxruntime.quantization (int8 Q/DQ)"}
        manifest = dataclasses.replace(source, precision=chosen.text, graphs=graphs, files=files,
                                       producer=producer)
        manifest.write(staging)
    log(f"wrote the {manifest.precision} export to {out_dir}")
    return manifest


def _convert(path: Path, precision: str, feeds):
    if precision == "int8":
        return int8.quantize_int8(path, feeds)
    if precision == "fp16":
        return to_fp16(path)
    proto = load_graph(path, before_weights=weight_only.upgrade_opset)  # converted before its weights load
    weight_only.quantize_matmul_weights(proto, 8 if precision == "w8" else 4)
    return proto
