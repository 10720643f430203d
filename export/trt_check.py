"""`janus-edge check-trt`: will TensorRT's ONNX parser take these graphs? A static check that runs anywhere.

The support table is data (export/data/onnx_tensorrt_ops.json), taken from NVIDIA's published operator list of
the onnx-tensorrt project (docs/operators.md) for TensorRT 10.3 (JetPack 6.2), 10.16 (JetPack 7.2; the 10.15
table, the newest 10.x one published) and 11.0. Each node is checked for: the op being supported, its data input's
dtype being one the table lists, and the restrictions that matter for our graphs (zero points of Q/DQ must be 0,
CumSum/Reduce axes and TopK's K must be constants, K < 3840). The ONNX opset outside the table's range is a warning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

VERSIONS = ("10.3", "10.16", "11")
ONNX_TO_TRT = {1: "FP32", 10: "FP16", 16: "BF16", 3: "INT8", 2: "UINT8", 6: "INT32", 7: "INT64", 9: "BOOL",
               22: "INT4", 17: "FP8", 23: "FP4"}
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
    data = json.loads(resources.files("janus_edge.export").joinpath("data/onnx_tensorrt_ops.json").read_text())
    for version in data["versions"].values():  # the 10.3 table spells INT64 as INF64 once
        for op in version["ops"].values():
            op["types"] = ["INT64" if t == "INF64" else t for t in op["types"]]
    return data


def check_model(proto, graph: str, version: str) -> list[Finding]:
    import onnx

    table = support_table()["versions"][version]
    low, high = (int(x) for x in table["opset_range"].split("-"))
    findings = []
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not low <= opset <= high:
        findings.append(Finding(version, graph, "-", "-", f"opset {opset} is outside the parser's documented "
                                f"{table['opset_range']}", "warning"))
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(
        inferred.graph.input) + list(inferred.graph.output)}
    initializers = {init.name: init for init in proto.graph.initializer}
    types.update({name: init.data_type for name, init in initializers.items()})
    constants = set(initializers) | {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            continue
        entry = table["ops"].get(node.op_type)
        if node.domain not in ("", "ai.onnx") or entry is None or not entry["supported"]:
            findings.append(Finding(version, graph, node.name, node.op_type, "operator not supported"))
            continue
        dtype = ONNX_TO_TRT.get(types.get(node.input[0], 0)) if node.input else None
        if dtype and entry["types"] and dtype not in entry["types"]:
            findings.append(Finding(version, graph, node.name, node.op_type,
                                    f"input dtype {dtype} not among {', '.join(entry['types'])}"))
        findings += _restrictions(node, version, graph, initializers, constants)
    return findings


def _restrictions(node, version, graph, initializers, constants) -> list[Finding]:
    from onnx import numpy_helper

    problems = []
    if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) == 3:
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
    import onnx

    from janus_edge.runtime.manifest import load_manifest

    manifest = load_manifest(export_dir)
    models = {name: onnx.load(str(Path(export_dir) / g.file), load_external_data=False)
              for name, g in manifest.graphs.items()}
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
