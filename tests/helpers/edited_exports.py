"""Hand-made variants of a tiny export that differ from it in one known place, for tests that must see a
measurement or a stopping rule move: a graph output shifted by a constant, or a smaller exported context."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from janus_edge.runtime.integrity import sha256_file
from janus_edge.runtime.manifest import MANIFEST_NAME, load_manifest


def shifted_export(source: Path, out: Path, graph: str, shifts: dict[str, np.ndarray]) -> Path:
    """A copy of `source` whose `graph` adds a constant to each named output (broadcast over its last axes) as it
    leaves the graph (nodes inside still read the unshifted value); the manifest's hashes follow, so it loads like
    any export."""
    shutil.copytree(source, out)
    manifest = load_manifest(out)
    path = out / manifest.graphs[graph].file
    proto = onnx.load(str(path))
    for output, shift in shifts.items():
        raw = f"{output}__unshifted"
        for node in proto.graph.node:
            node.output[:] = [raw if name == output else name for name in node.output]
            node.input[:] = [raw if name == output else name for name in node.input]
        proto.graph.initializer.append(numpy_helper.from_array(shift.astype(np.float32), f"{output}__shift"))
        proto.graph.node.append(helper.make_node("Add", [raw, f"{output}__shift"], [output]))
    onnx.save(proto, str(path))
    manifest.files[manifest.graphs[graph].file] = sha256_file(path)
    manifest.write(out)
    return out


def eos_first_export(source: Path, out: Path) -> Path:
    """An export whose lm_head always prefers EOS: every answer is [EOS]."""
    manifest = load_manifest(source)
    bias = np.zeros(manifest.model.vocab_size)
    bias[manifest.tokens.eos] = 1e4
    return shifted_export(source, out, "lm_head", {"logits": bias})


def short_context_export(source: Path, out: Path, max_context: int) -> Path:
    """A copy whose manifest allows only `max_context` positions (the graphs are unchanged: a smaller limit)."""
    shutil.copytree(source, out)
    data = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    data["limits"]["max_context"] = max_context
    (out / MANIFEST_NAME).write_text(json.dumps(data), encoding="utf-8")
    return out


def noise(size: int, seed: int, scale: float) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(size) * scale
