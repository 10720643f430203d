"""`janus-edge check-trt`: will TensorRT's ONNX parser take these graphs? A static check that runs anywhere.

The support table is data (export/tensorrt/data/onnx_tensorrt_ops.json), taken from NVIDIA's published operator list of
the onnx-tensorrt project (docs/operators.md) for TensorRT 10.3 (JetPack 6.2), 10.16 (JetPack 7.2; the 10.15
table, the newest 10.x one published) and 11.0. Each node is checked for: the op being supported, its data input's
dtypes (input 0 and every float or quantised input) being ones the table lists, and the restrictions that matter
for our graphs (zero points of Q/DQ must be 0, CumSum/Reduce axes and TopK's K must be constants, K < 3840). Nodes
inside If/Loop/Scan bodies are checked like top-level ones. Ops known to be slow on a version (CumSum before 10.8)
and an ONNX opset outside the table's range are warnings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ..onnx_io import load_graph

VERSIONS = ("10.3", "10.16", "11")
ONNX_TO_TRT = {1: "FP32", 10: "FP16", 16: "BF16", 3: "INT8", 2: "UINT8", 6: "INT32", 7: "INT64", 9: "BOOL",
               22: "INT4", 17: "FP8", 23: "FP4"}
QDQ = ("QuantizeLinear", "DequantizeLinear")  # scale and zero point are not data inputs
VALUE_TYPES = {"FP32", "FP16", "BF16", "INT8", "INT4", "FP8", "FP4"}
# op -> (first TensorRT release where it is fast, why it is slow before); shared/REFERENCE.md section 9
SLOW_BEFORE = {"CumSum": ("10.8", "the ONNX parser imports CumSum as a loop with one iteration per element of the "
                                  "axis (INetworkDefinition.add_cumulative exists from 10.8)")}
AXES_AS_INPUT = {"CumSum": 1, "ReduceSum": 1, "ReduceMean": 1, "ReduceMax": 1, "Unsqueeze": 1, "Squeeze": 1,
                 "TopK": 1}


@dataclass
class Finding:
    version: str
    graph: str
    node: str
    op: str
    problem: str
    severity: str = "error"  # "error" or "warning"


@lru_cache(maxsize=1)
def support_table() -> dict:
    data = json.loads(resources.files(__package__).joinpath("data/onnx_tensorrt_ops.json").read_text())
    for version in data["versions"].values():  # the 10.3 table spells INT64 as INF64 once
        for op in version["ops"].values():
            op["types"] = ["INT64" if t == "INF64" else t for t in op["types"]]
    return data


def table_version(trt_version: str) -> str:
    """The support table that describes a TensorRT release ("10.3.0.30" -> "10.3", "10.16.1.4" -> "10.16"): the
    newest table of the same major version that is not newer than the release (the TensorRT stand-in's parser uses
    it, so tests refuse what that release's parser refuses)."""
    release = _release(trt_version)
    tables = [v for v in VERSIONS if _release(v)[0] == release[0] and _release(v) <= release]
    if not tables:
        raise ValueError(f"no ONNX operator table covers TensorRT {trt_version} (tables: {', '.join(VERSIONS)})")
    return max(tables, key=_release)


def check_model(proto, graph: str, version: str) -> list[Finding]:
    """Checks every node, including those inside If/Loop/Scan bodies, of one ONNX model for one TensorRT."""
    import onnx

    table = support_table()["versions"][version]
    low, high = (int(x) for x in table["opset_range"].split("-"))
    findings = []
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not low <= opset <= high:
        findings.append(Finding(version, graph, "-", "-", f"opset {opset} is outside the parser's documented "
                                f"{table['opset_range']}", "warning"))
    graphs = list(_graphs(onnx.shape_inference.infer_shapes(proto).graph, graph))
    types, initializers, constants = {}, {}, set()
    for _, body in graphs:  # names of outer scopes are visible in bodies: one table for all
        types.update({v.name: v.type.tensor_type.elem_type for v in [*body.value_info, *body.input, *body.output]})
        initializers.update({init.name: init for init in body.initializer})
        constants |= {o for n in body.node if n.op_type == "Constant" for o in n.output}
    types.update({name: init.data_type for name, init in initializers.items()})
    constants |= set(initializers)
    for where, body in graphs:
        for node in body.node:
            if node.op_type != "Constant":
                findings += _check_node(node, version, where, table, types, initializers, constants)
    return findings


def _graphs(body, name: str):
    """(name, graph) for a graph and, recursively, every subgraph its nodes carry (If/Loop/Scan bodies)."""
    yield name, body
    for node in body.node:
        for attribute in node.attribute:
            for index, sub in enumerate([attribute.g] if attribute.HasField("g") else list(attribute.graphs)):
                yield from _graphs(sub, f"{name}/{node.name or node.op_type}.{attribute.name}"
                                        + (f"[{index}]" if attribute.graphs else ""))


def _check_node(node, version, where, table, types, initializers, constants) -> list[Finding]:
    entry = table["ops"].get(node.op_type)
    if node.domain not in ("", "ai.onnx") or entry is None or not entry["supported"]:
        return [Finding(version, where, node.name, node.op_type, "operator not supported")]
    findings = []
    # every data input: input 0 always, later ones when they hold values (float or quantised), not indices/shapes
    for index, name in enumerate(node.input if node.op_type not in QDQ else node.input[:1]):
        dtype = ONNX_TO_TRT.get(types.get(name, 0)) if name else None
        if dtype and entry["types"] and dtype not in entry["types"] and (index == 0 or dtype in VALUE_TYPES):
            findings.append(Finding(version, where, node.name, node.op_type, f"input {index} ({name}) dtype {dtype} "
                                    f"not among {', '.join(entry['types'])}"))
    slow = SLOW_BEFORE.get(node.op_type)
    if slow and _release(version) < _release(slow[0]):
        findings.append(Finding(version, where, node.name, node.op_type, f"slow: {slow[1]}", "warning"))
    return findings + _restrictions(node, version, where, initializers, constants)


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _restrictions(node, version, graph, initializers, constants) -> list[Finding]:
    from onnx import numpy_helper

    problems = []
    if node.op_type in QDQ and len(node.input) == 3:
        zero = initializers.get(node.input[2])
        if zero is None or numpy_helper.to_array(zero).any():
            problems.append("zero point must be a constant 0")
    index = AXES_AS_INPUT.get(node.op_type)
    if index is not None and len(node.input) > index and node.input[index] and node.input[index] not in constants:
        problems.append(f"input {index} ({'K' if node.op_type == 'TopK' else 'axes'}) must be a constant")
    if node.op_type == "TopK" and len(node.input) > 1 and node.input[1] in initializers:
        if int(np.max(numpy_helper.to_array(initializers[node.input[1]]))) >= 3840:
            problems.append("K must be below 3840")
    return [Finding(version, graph, node.name, node.op_type, p) for p in problems]


def check_export(export_dir: str | Path, versions=VERSIONS, extra: dict | None = None) -> list[Finding]:
    """Checks every graph of an export (and `extra` name -> ModelProto, e.g. the sampler graphs)."""
    from janus_edge.runtime.manifest import load_manifest

    manifest = load_manifest(export_dir)
    models = {name: load_graph(Path(export_dir) / g.file, weights=False) for name, g in manifest.graphs.items()}
    models.update(extra or {})
    return [f for version in versions for name, proto in models.items() for f in check_model(proto, name, version)]


def format_findings(findings: list[Finding], versions=VERSIONS) -> str:
    lines = []
    for version in versions:
        errors = [f for f in findings if f.version == version and f.severity == "error"]
        warnings = [f for f in findings if f.version == version and f.severity == "warning"]
        lines.append(f"TensorRT {version}: " + ("ok" if not errors else f"{len(errors)} problem(s)")
                     + (f", {len(warnings)} warning(s)" if warnings else ""))
        for f in errors + warnings:
            lines.append(f"  {f.severity}: {f.graph}: {f.op} {f.node}: {f.problem}")
    lines.append("source: " + support_table()["source"] + " (" + support_table()["notes"][:160] + "...)")
    return "\n".join(lines)
