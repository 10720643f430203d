"""The manifest as the only contract: graph tensor names are spelled once (runtime/tensor_names.py), and what is
served takes its image size from the export's `ModelInfo`, not from a literal."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from janus_edge.runtime import tensor_names
from janus_edge.runtime.manifest import MANIFEST_NAME
from janus_edge.serve.triton_repo import write_repository

ROOT = Path(__file__).resolve().parents[2]
GRAPH_TENSORS = {value for name, value in vars(tensor_names).items()
                 if name.isupper() and isinstance(value, str) and name not in ("SAMPLER", "CFG_SAMPLER", "CFG_WEIGHT",
                                                                                "MIXED", "GREEDY")}
# the folders whose code reads graphs (export's graph specifications write the names into the manifest)
READERS = ("runtime", "calibration", "janus_edge", "export/tensorrt")


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string constant in `path` that is not a docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_graph_tensor_names_cover_the_decoder_and_every_one_input_graph():
    assert {"inputs_embeds", "attention_mask", "position_ids", "hidden_states", "logits", "pixels"} <= GRAPH_TENSORS


def test_graph_tensor_names_are_spelled_once_where_graphs_are_read():
    found = []
    for folder in READERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "runtime" / "tensor_names.py":
                continue
            found += [f"{path.relative_to(ROOT)}:{line}: {value!r}" for line, value in _string_constants(path)
                      if value in GRAPH_TENSORS]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("side", [256])
def test_the_triton_repository_takes_its_image_size_from_the_manifest(export_hf, tmp_path, side):
    """An export whose model sees `side`-pixel images gets an IMAGES output of [-1, side, side, 3]."""
    export = tmp_path / "export"
    export.mkdir()
    manifest = json.loads((export_hf / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert manifest["model"]["image_size"] != side
    manifest["model"]["image_size"] = side
    (export / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    written = write_repository(export, tmp_path / "repo", reference_export=True)
    config = next(d for d in written if d.name == "janus_generation") / "config.pbtxt"
    assert f'name: "IMAGES" data_type: TYPE_UINT8 dims: [ -1, {side}, {side}, 3 ]' in config.read_text()
