"""A decoder too big for ONNX Runtime to hold whole (a 7B export's) is checked a window of layers at a time:
`compare --window-layers N`, chosen by the weights' size when not given."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cli_helpers import run_cli
from janus_edge.export.compare import compare, format_table
from janus_edge.export.decoder_windows import WINDOW_WEIGHT_BYTES, layers_per_window
from janus_edge.runtime.kv import kv_names
from janus_edge.runtime.manifest import MANIFEST_NAME, load_manifest, sha256_file


@pytest.mark.parametrize("fixture", ["export_hf", "export_gqa"])  # fp16: the side-file test below
def test_every_window_matches_the_reference(request, fixture, tiny_hf):
    export = request.getfixturevalue(fixture)
    manifest = load_manifest(export)
    layers = manifest.model.num_layers
    rows = compare(tiny_hf, export, window_layers=1)
    assert all(r.ok for r in rows), format_table(rows)
    windows = {r.graph for r in rows if r.graph.startswith("decoder ")}
    assert windows == {f"decoder L{i}-{i}" for i in range(layers)}
    cache_outputs = [t.name for t in manifest.graphs["decoder"].outputs[1:]]  # kv_names order: 2 per layer
    for layer in range(layers):
        outputs = {r.output for r in rows if r.graph == f"decoder L{layer}-{layer}"}
        own_cache = set(cache_outputs[2 * layer:2 * layer + 2])
        assert own_cache == {name for name in cache_outputs if name.endswith(tuple(kv_names(layers)[2 * layer:][:2]))}
        exits = outputs - own_cache
        assert len(exits) == 1 and (exits == {"hidden_states"}) == (layer == layers - 1), outputs
    if fixture == "export_hf":
        assert max(r.max_abs for r in rows if r.case != "structure") <= 1e-4


def test_windows_agree_with_the_whole_graph(export_hf, tiny_hf):
    whole = {(r.graph, r.case, r.output): r for r in compare(tiny_hf, export_hf, window_layers=0)}
    windowed = {(r.graph, r.case, r.output): r for r in compare(tiny_hf, export_hf, window_layers=2)}
    assert {k[0] for k in whole if k[0].startswith("decoder")} == {"decoder"}
    # two layers in one window: the same outputs as the whole graph, from the same inputs (one seed)
    layers = load_manifest(export_hf).model.num_layers
    assert {k[0] for k in windowed if k[0].startswith("decoder ")} == {f"decoder L0-{layers - 1}"}
    for (graph, case, output), row in whole.items():
        key = (graph if graph != "decoder" or case == "structure" else f"decoder L0-{layers - 1}", case, output)
        assert windowed[key].max_abs == pytest.approx(row.max_abs, abs=1e-7)


def test_a_wrong_weight_fails_its_window_only(tmp_path, export_hf, tiny_hf):
    broken = tmp_path / "broken"
    shutil.copytree(export_hf, broken)
    proto = onnx.load(str(broken / "decoder.onnx"))
    weight = next(t for t in proto.graph.initializer if "layers.1.mlp.down_proj" in t.name)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.5), weight.name))
    onnx.save(proto, str(broken / "decoder.onnx"))
    manifest = json.loads((broken / MANIFEST_NAME).read_text())  # a consistent export with a wrong weight
    manifest["files"]["decoder.onnx"] = sha256_file(broken / "decoder.onnx")
    (broken / MANIFEST_NAME).write_text(json.dumps(manifest))
    rows = compare(tiny_hf, broken, window_layers=1)
    failed = {(r.graph, r.output) for r in rows if not r.ok}
    assert failed and {graph for graph, _ in failed} == {"decoder L1-1"}
    assert all(output == "hidden_states" for _, output in failed), "the MLP comes after the cache is written"
    result = run_cli("compare", "--window-layers", "1", str(tiny_hf), str(broken))
    assert result.returncode == 1 and "decoder L1-1" in result.stdout and "FAIL" in result.stdout


def _decoder_graph(layers: int, side: int, data_type: int):
    """A graph of one [side, side] weight per layer (dims only: layers_per_window reads no data)."""
    weights = []
    for i in range(layers):
        weight = TensorProto(name=f"layers.{i}.w", data_type=data_type)
        weight.dims.extend([side, side])
        weights.append(weight)
    return helper.make_graph([], "decoder", [], [], weights)


def test_window_size_follows_the_weights(export_hf):
    graph = onnx.load(str(export_hf / "decoder.onnx")).graph
    assert layers_per_window(graph, load_manifest(export_hf).model.num_layers) == 0  # tiny: whole
    side = 14_200  # 7B-like: 30 layers of 2.0e8 parameters in fp16, 24 GB in fp32
    per_window = layers_per_window(_decoder_graph(30, side, TensorProto.FLOAT16), 30)
    assert per_window * side * side * 4 <= WINDOW_WEIGHT_BYTES < (per_window + 1) * side * side * 4
    one_b = _decoder_graph(24, 7_200, TensorProto.FLOAT)  # 1B-like: 1.24e9 parameters, 5 GB in fp32: whole
    assert layers_per_window(one_b, 24) == 0


def test_windows_read_a_side_file_and_leave_nothing_behind(tmp_path, tiny_hf, monkeypatch):
    """A big decoder's weights are in `decoder.onnx.data`: the windows read them there (through a hard link inside
    the export, as ONNX Runtime reads nothing outside the model's folder) and leave the export as it was."""
    from janus_edge.export import onnx_io
    from janus_edge.export.exporter import export

    monkeypatch.setattr(onnx_io, "EXTERNAL_DATA_THRESHOLD", 0)  # every graph's weights in a side file, as a 7B's
    export(tiny_hf, tmp_path / "fp16", precision="fp16", log=lambda *_: None)
    assert (tmp_path / "fp16" / "decoder.onnx.data").is_file()
    before = sorted(p.name for p in (tmp_path / "fp16").iterdir())
    rows = compare(tiny_hf, tmp_path / "fp16", window_layers=1)
    assert all(r.ok for r in rows), format_table(rows)
    assert {r.graph for r in rows if r.graph.startswith("decoder ")} == {"decoder L0-0", "decoder L1-1"}
    assert sorted(p.name for p in (tmp_path / "fp16").iterdir()) == before
