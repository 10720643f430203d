"""`janus-edge compare`: every exported graph against the same PyTorch submodule, on fresh random inputs.

Checks structure first (the graph's inputs and outputs are those the manifest promises), then numbers over
several batch sizes, sequence lengths and past lengths (including past 0 and sequence 1). A decoder too big for ONNX
Runtime to hold whole is checked a window of layers at a time (decoder_windows.py).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from janus_edge.runtime.backends.onnxruntime import OnnxRuntimeBackend
from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import Manifest, load_manifest
from janus_edge.runtime.tensor_names import ATTENTION_MASK, INPUTS_EMBEDS

from .checkpoint import checkpoint_family
from .decoder_windows import layers_per_window, plan_windows, write_window
from .llm_decoder import KVCacheDecoder
from .onnx_io import has_side_file, load_graph

# (max abs error, relative L2) allowed per graph precision: fp32 is the acceptance bar; fp16 is judged by relative
# L2 (max abs scales with the output's magnitude). Quantised graphs (int8, w8, w4, a kv8 decoder) are reported but
# judged only on shape and finiteness: random inputs say little about quantisation error, which `janus-edge accuracy`
# measures on real inputs. fp32's relative L2 allows ONNX Runtime's own rounding: on the full-size VQ decoder (random
# weights) its output is 1.05e-5 from an fp64 evaluation, PyTorch's fp32 1.9e-6 (2026-12-04), so 1e-5 failed ONNX
# Runtime, not the export.
TOLERANCES = {"fp32": (1e-4, 2e-5), "fp16": (None, 2e-2)}
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


def compare(model_dir: str | Path, export_dir: str | Path, seed: int = 0, vae: str | Path | None = None,
            window_layers: int | None = None) -> list[Row]:
    """`vae`: the SDXL VAE directory of a JanusFlow checkpoint. `window_layers`: layers per decoder window (0: the
    whole graph; None: as many as fit decoder_windows.WINDOW_WEIGHT_BYTES, or the whole graph when it is small)."""
    manifest = load_manifest(export_dir)
    family, config_json = checkpoint_family(model_dir)
    checkpoint = family.load(Path(model_dir), config_json, prompt_family=manifest.model.family, vae=vae,
                             lazy=True)
    # one graph's session and one graph's reference weights (the decoder's: one layer's) are held at a time
    backend = OnnxRuntimeBackend(Path(export_dir), manifest)
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
        module = spec.make_module(checkpoint).eval()
        if spec.streamed:
            path = Path(export_dir) / manifest.graphs[spec.name].file
            proto = load_graph(path, weights=False)
            per_window = layers_per_window(proto.graph, info.num_layers) if window_layers is None else window_layers
            if per_window:
                rows.append(_structure(spec.name, _proto_types(proto), manifest))
                with checkpoint.weights.on_call(module):
                    references = _references(spec, module, manifest, info)
                rows += _windowed(spec, proto, path, per_window, references, manifest, info, precision)
                continue
            del proto
        rows.append(_structure(spec.name, _session_types(backend.graph(spec.name).session), manifest))
        with (checkpoint.weights.on_call if spec.streamed else checkpoint.weights.materialized)(module):
            references = _references(spec, module, manifest, info)
        for label, feeds, expected, _ in references:
            got = backend.graph(spec.name).run(_typed(feeds, manifest.graphs[spec.name].inputs))
            rows += _output_rows(spec.name, label, [t.name for t in spec.outputs], got, expected, feeds, precision)
        backend.release(spec.name)
    return rows


def _references(spec, module, manifest: Manifest, info) -> list[tuple[str, dict, tuple, list]]:
    """For each case: its label, random inputs, the module's outputs and (for a decoder) the hidden state entering
    each layer and the final norm."""
    references = []
    for case in CASES[:2] if spec.batch_only else CASES:
        case = {**case, "batch": min(case["batch"], manifest.limits.max_batch)}
        feeds = spec.sample(info, case)
        with torch.no_grad(), _layer_entries(module) as entries:
            expected = module(*feeds.values())
        expected = expected if isinstance(expected, tuple) else (expected,)
        label = ",".join(f"{k[0]}{v}" for k, v in case.items())
        references.append((label, feeds, tuple(t.numpy() for t in expected), list(entries)))
    return references


@contextmanager
def _layer_entries(module):
    """A list filled, while a KV-cache decoder inside `module` runs, with the hidden state entering each layer's
    input norm and then the final norm (empty for other modules)."""
    entries: list = []
    hooks = []
    for decoder in (m for m in module.modules() if isinstance(m, KVCacheDecoder)):
        for norm in [layer.input_layernorm for layer in decoder.llm.layers] + [decoder.llm.norm]:
            hooks.append(norm.register_forward_pre_hook(lambda m, args: entries.append(args[0].numpy().copy())))
    try:
        yield entries
    finally:
        for hook in hooks:
            hook.remove()


def _windowed(spec, proto, path: Path, per_window: int, references, manifest: Manifest, info,
              precision: str) -> list[Row]:
    """The decoder checked one window of layers at a time, each fed the reference's hidden state at its entry."""
    import onnxruntime

    rows = []
    side_file = Path(f"{path}.data") if has_side_file(path) else None
    dtypes = {t.name: t.dtype for t in manifest.graphs[spec.name].inputs}  # fp16 KV caches
    try:  # inside the export: the side file is linked, not copied, and ONNX Runtime reads nothing outside the folder
        scratch = tempfile.TemporaryDirectory(prefix=".compare-windows-", dir=path.parent)
    except OSError as exc:
        raise RequestError(f"compare writes its decoder windows into {path.parent}, which failed ({exc})",
                           "make the export directory writable, or compare a writable copy of it") from None
    with scratch as folder:
        for window in plan_windows(proto, info.num_layers, per_window):
            cache = [t.name for layer in window.layers for t in spec.outputs[1 + 2 * layer:3 + 2 * layer]]
            file, inputs = write_window(proto, window, cache, Path(folder), side_file, info.hidden_size)
            session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
            entry_type = _session_types(session)[0][1]
            for label, feeds, expected, entries in references:
                given = {name: feeds[name].numpy().astype(dtypes[name]) for name in inputs[1:]}
                entry = feeds[INPUTS_EMBEDS].numpy() if window.layers[0] == 0 else entries[window.layers[0]]
                got = dict(zip([window.exit, *cache],
                               session.run(None, {inputs[0]: entry.astype(entry_type), **given})))
                last = window.layers[-1] == info.num_layers - 1
                wanted = {t.name: value for t, value in zip(spec.outputs, expected)}
                wanted[window.exit] = expected[0] if last else entries[window.layers[-1] + 1]
                rows += _output_rows(window.label, label, [window.exit, *cache], got,
                                     [wanted[name] for name in [window.exit, *cache]], feeds, precision)
            del session
            file.unlink()
    return rows


def _typed(feeds: dict, inputs) -> dict[str, np.ndarray]:
    """The reference's inputs in the dtypes the graph takes (fp16 KV caches)."""
    dtypes = {t.name: t.dtype for t in inputs}
    return {k: v.numpy().astype(dtypes[k]) for k, v in feeds.items()}


def _output_rows(graph: str, label: str, names: list[str], got: dict, expected, feeds: dict,
                 precision: str) -> list[Row]:
    rows = []
    for name, reference in zip(names, expected):
        actual = got[name]
        if ATTENTION_MASK in feeds:  # padded positions hold unused values that differ by precision
            actual, reference = _drop_padding(actual, reference, feeds[ATTENTION_MASK].numpy())
        rows.append(_row(graph, label, name, actual, reference, precision))
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


_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16",
              "tensor(int8)": "int8"}


def _session_types(session) -> list[tuple[str, str]]:
    """An ONNX Runtime session's inputs then outputs, as (name, dtype)."""
    return [(t.name, _ORT_TYPES.get(t.type, t.type)) for t in session.get_inputs() + session.get_outputs()]


def _proto_types(proto) -> list[tuple[str, str]]:
    """A ModelProto's inputs then outputs, as (name, dtype)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    return [(v.name, tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name)
            for v in [*proto.graph.input, *proto.graph.output]]


def _structure(name: str, actual: list[tuple[str, str]], manifest: Manifest) -> Row:
    graph = manifest.graphs[name]
    promised = [(t.name, t.dtype) for t in graph.inputs + graph.outputs]
    ok = actual == promised
    note = "" if ok else f"graph has {actual[:3]}..., manifest promises {promised[:3]}..."
    return Row(name, "structure", "inputs/outputs", 0.0, 0.0, ok, note)


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
