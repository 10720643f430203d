"""`janus-edge compare`: every exported graph against the same PyTorch submodule, on fresh random inputs.

Checks structure first (the graph's inputs and outputs are those the manifest promises), then numbers over
several batch sizes, sequence lengths and past lengths (including past 0 and sequence 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from janus_edge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from janus_edge.runtime.manifest import Manifest, load_manifest
from janus_edge.runtime.tensor_names import ATTENTION_MASK

from .checkpoint import checkpoint_family

# (max abs error, relative L2) allowed per graph precision: fp32 is the acceptance bar; fp16 is judged by relative
# L2 (max abs scales with the output's magnitude). Quantised graphs (int8, w8, w4, a kv8 decoder) are reported but
# judged only on shape and finiteness: random inputs say little about quantisation error, which `janus-edge accuracy`
# measures on real inputs.
TOLERANCES = {"fp32": (1e-4, 1e-5), "fp16": (None, 2e-2)}
CASES = [{"batch": 1, "sequence": 1, "past_sequence": 0}, {"batch": 2, "sequence": 5, "past_sequence": 0},
         {"batch": 2, "sequence": 1, "past_sequence": 7}, {"batch": 3, "sequence": 4, "past_sequence": 9}]


@dataclass
class Row:
    graph: str
    case: str
    output: str
    max_abs: float
    rel_l2: float
    ok: bool
    note: str = ""


def compare(model_dir: str | Path, export_dir: str | Path, seed: int = 0, vae: str | Path | None = None) -> list[Row]:
    """`vae`: the SDXL VAE directory of a JanusFlow checkpoint."""
    manifest = load_manifest(export_dir)
    family, config_json = checkpoint_family(model_dir)
    checkpoint = family.load(Path(model_dir), config_json, prompt_family=manifest.model.family, vae=vae,
                             lazy=True)
    # one graph's session and one graph's reference weights (the decoder's: one layer's) are held at a time
    backend = OnnxRuntimeBackend(Path(export_dir), manifest, disabled_optimizers=("ConstantFolding",))
    info = family.model_info(checkpoint)
    specs = family.graph_specs(info, manifest.tokens, form=manifest.kv_cache.form)
    rows: list[Row] = []
    torch.manual_seed(seed)
    for spec in specs:
        if spec.name not in manifest.graphs:
            rows.append(Row(spec.name, "-", "-", float("nan"), float("nan"), False, "missing from manifest"))
            continue
        precision = manifest.graphs[spec.name].precision
        if spec.name == "decoder" and manifest.kv_dtype == "int8":  # random cache values say nothing of kv8
            precision = "kv8"
        rows += _structure(spec.name, backend, manifest)
        module = spec.make_module(checkpoint).eval()
        with (checkpoint.weights.on_call if spec.streamed else checkpoint.weights.materialized)(module):
            rows += _cases(spec, module, backend, manifest, info, precision)
        backend.release(spec.name)
    return rows


def _cases(spec, module, backend: OnnxRuntimeBackend, manifest: Manifest, info, precision: str) -> list[Row]:
    rows = []
    for case in CASES[:2] if spec.batch_only else CASES:
        case = {**case, "batch": min(case["batch"], manifest.limits.max_batch)}
        feeds = spec.sample(info, case)
        with torch.no_grad():
            expected = module(*feeds.values())
        expected = expected if isinstance(expected, tuple) else (expected,)
        dtypes = {t.name: t.dtype for t in manifest.graphs[spec.name].inputs}  # fp16 KV caches
        got = backend.graph(spec.name).run({k: v.numpy().astype(dtypes[k]) for k, v in feeds.items()})
        label = ",".join(f"{k[0]}{v}" for k, v in case.items())
        for tensor, reference in zip(spec.outputs, expected):
            actual, reference = got[tensor.name], reference.numpy()
            if ATTENTION_MASK in feeds:  # padded positions hold unused values that differ by precision
                actual, reference = _drop_padding(actual, reference, feeds[ATTENTION_MASK].numpy())
            rows.append(_row(spec.name, label, tensor.name, actual, reference, precision))
    return rows


def _drop_padding(actual: np.ndarray, reference: np.ndarray, mask: np.ndarray):
    """Zeroes positions where the mask is 0: hidden states [B,S,D] (last S of the mask), new KV [B,H,S,hd], or a
    whole written cache [B,H,C,hd] (ort_gqa form: the mask covers its first slots, the rest are unused)."""
    if actual.shape != reference.shape:
        return actual, reference
    if actual.ndim == 3:
        keep = mask[:, -actual.shape[1]:, None]
    elif actual.shape[2] > mask.shape[1]:
        keep = np.zeros((mask.shape[0], 1, actual.shape[2], 1), mask.dtype)
        keep[:, 0, :mask.shape[1], 0] = mask
    else:
        keep = mask[:, None, -actual.shape[2]:, None]
    return actual * keep, reference * keep


def _structure(name: str, backend: OnnxRuntimeBackend, manifest: Manifest) -> list[Row]:
    session = backend.graph(name).session
    graph = manifest.graphs[name]
    ort_types = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16",
                 "tensor(int8)": "int8"}
    actual = [(t.name, ort_types.get(t.type, t.type)) for t in session.get_inputs()] + \
             [(t.name, ort_types.get(t.type, t.type)) for t in session.get_outputs()]
    promised = [(t.name, t.dtype) for t in graph.inputs + graph.outputs]
    ok = actual == promised
    note = "" if ok else f"graph has {actual[:3]}..., manifest promises {promised[:3]}..."
    return [Row(name, "structure", "inputs/outputs", 0.0, 0.0, ok, note)]


def _row(graph: str, case: str, output: str, got: np.ndarray, expected: np.ndarray, precision: str) -> Row:
    got64, expected64 = got.astype(np.float64), expected.astype(np.float64)
    if got.shape != expected.shape:
        return Row(graph, case, output, float("inf"), float("inf"), False, f"shape {got.shape} != {expected.shape}")
    if got.size == 0:
        return Row(graph, case, output, 0.0, 0.0, True)
    max_abs = float(np.abs(got64 - expected64).max())
    rel_l2 = float(np.linalg.norm(got64 - expected64) / max(np.linalg.norm(expected64), 1e-12))
    finite = bool(np.isfinite(got64).all())
    if precision not in TOLERANCES:
        return Row(graph, case, output, max_abs, rel_l2, finite, f"{precision}: see `janus-edge accuracy`")
    abs_tol, rel_tol = TOLERANCES[precision]
    ok = (abs_tol is None or max_abs <= abs_tol) and rel_l2 <= rel_tol and finite
    return Row(graph, case, output, max_abs, rel_l2, ok)


def format_table(rows: list[Row]) -> str:
    lines = [f"{'graph':<22}{'case':<16}{'output':<26}{'max abs':>11}{'rel L2':>11}  result"]
    for r in rows:
        mark = "ok" if r.ok else "FAIL"
        lines.append(f"{r.graph:<22}{r.case:<16}{r.output[:25]:<26}{r.max_abs:>11.2e}{r.rel_l2:>11.2e}  {mark}"
                     + (f"  {r.note}" if r.note else ""))
    failed = sum(not r.ok for r in rows)
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)
