"""`bench` on the tiny model: the report follows its JSON Schema, throughput rows cover every n the export allows,
reference rows say what they are, and bad directories are one-line user errors. No duration is asserted."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil

import jsonschema
import numpy as np
import pytest
from cli_helpers import run_cli

from janus_edge.bench import load_schema, validate_report

QUICK = ("--runs", "1", "--warmup", "0", "--prompt-lengths", "8", "--past", "16", "--understand-tokens", "2")


def test_export_report_validates_and_has_throughput_for_each_allowed_n(tmp_path, export_hf):
    report_path, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    result = run_cli("bench", export_hf, *QUICK, "--image-counts", "1,2,4,8", "--understand-batches", "1,2,4",
                     "--json", report_path, "--plot", chart, check_code=0)
    assert "decode_b2" in result.stdout and "images_per_minute n=1" in result.stdout
    report = json.loads(report_path.read_text())
    validate_report(report)
    (row,) = report["results"]
    assert row["kind"] == "export" and row["backend"] == "onnxruntime" and not row["error"]
    max_batch = json.loads((export_hf / "janus_edge.json").read_text())["limits"]["max_batch"]
    assert [r["n"] for r in row["throughput"]["images"]] == [n for n in (1, 2, 4, 8) if 2 * n <= max_batch]
    assert [r["batch"] for r in row["throughput"]["understanding"]] == [b for b in (1, 2, 4) if b <= max_batch]
    for kind, count, per_call, rate in (("images", "n", "seconds_per_image", "images_per_minute"),
                                        ("understanding", "batch", "seconds_per_call", "requests_per_minute")):
        for entry in row["throughput"][kind]:
            per = 1 if kind == "images" else entry[count]
            assert entry[rate] == pytest.approx(60 * per / entry[per_call]["median"], rel=1e-12)
    load = row["metrics"]["load"]
    assert load["runs"] == 1 and load["min"] == load["median"] == load["max"] > 0
    _assert_floors_follow_the_export(report, row, export_hf)
    assert chart.read_bytes()[:4] == b"\x89PNG"


def _assert_floors_follow_the_export(report: dict, row: dict, export_dir) -> None:
    """Floors recomputed here from the export's files and manifest: bytes read per step over the copy bandwidth."""
    manifest = json.loads((export_dir / "janus_edge.json").read_text())
    model, graphs = manifest["model"], manifest["graphs"]
    files = lambda graph: [f for f in manifest["files"] if f.split(".onnx")[0] == graph]  # noqa: E731
    size = lambda graph: sum((export_dir / f).stat().st_size for f in files(graph))  # noqa: E731
    itemsize = next(np.dtype(t["dtype"]).itemsize for t in graphs["decoder"]["inputs"]
                    if t["name"].startswith("past_key_values."))
    per_position = 2 * model["num_layers"] * model["num_kv_heads"] * model["head_dim"] * itemsize
    assert row["kv"] == {"bytes_per_position_per_row": per_position, "itemsize": itemsize}
    bandwidth = report["machine"]["copy_bandwidth_gbs"] * 1e9
    for tag, rows, head in (("b1", 1, "lm_head"), ("b2", 2, "generation_head")):
        floor = row["floors"][tag]
        weights, kv = size("decoder") + size(head), rows * 16 * per_position
        assert (floor["rows"], floor["past"], floor["weight_bytes"], floor["kv_bytes"]) == (rows, 16, weights, kv)
        assert floor["weight_floor_ms"] == pytest.approx(weights / bandwidth * 1e3, rel=1e-12)
        assert floor["full_floor_ms"] == pytest.approx((weights + kv) / bandwidth * 1e3, rel=1e-12)
        step = row["metrics"][f"decode_{tag}"]["median"]
        assert floor["weight_floor_ratio"] == pytest.approx(step / floor["weight_floor_ms"], rel=1e-12)
        assert floor["full_floor_ratio"] == pytest.approx(step / floor["full_floor_ms"], rel=1e-12)


def test_schema_rejects_a_timing_without_its_spread(tmp_path, export_hf):
    report_path = tmp_path / "bench.json"
    run_cli("bench", export_hf, *QUICK, "--stages", "load,decode", "--json", report_path, check_code=0)
    report = json.loads(report_path.read_text())
    validate_report(report)
    broken = copy.deepcopy(report)
    del broken["results"][0]["metrics"]["decode_b1"]["min"]
    with pytest.raises(jsonschema.ValidationError):
        validate_report(broken)
    assert load_schema()["$id"] == report["schema"]


def test_reference_rows_report_attention_dtype_and_versions(tmp_path, tiny_hf):
    report_path = tmp_path / "bench.json"
    result = run_cli("bench", "--reference", tiny_hf, "--reference-configs", "sdpa-bf16,eager-fp32", *QUICK,
                     "--stages", "load,prefill,ttft,decode", "--threads", "1", "--json", report_path, check_code=0)
    report = json.loads(report_path.read_text())
    validate_report(report)
    rows = {r["label"]: r for r in report["results"]}
    assert set(rows) == {"pytorch sdpa-bf16", "pytorch eager-fp32"}
    sdpa, eager = rows["pytorch sdpa-bf16"]["reference"], rows["pytorch eager-fp32"]["reference"]
    assert (sdpa["attention"], sdpa["dtype"], sdpa["extra"]) == ("sdpa", "torch.bfloat16", False)
    assert (eager["attention"], eager["dtype"], eager["extra"]) == ("eager", "torch.float32", True)
    assert sdpa["threads"] == eager["threads"] == 1 and sdpa["transformers"] and sdpa["torch"]
    assert rows["pytorch sdpa-bf16"]["kv"]["itemsize"] == 2 and rows["pytorch eager-fp32"]["kv"]["itemsize"] == 4
    assert report["ratios"]["baseline"] == "pytorch sdpa-bf16"  # an extra is never the reference to beat
    baseline, other = rows["pytorch sdpa-bf16"]["metrics"], rows["pytorch eager-fp32"]["metrics"]
    expected = {k: baseline[k]["median"] / v["median"] for k, v in other.items() if isinstance(v, dict)}
    assert set(expected) == {"load", "prefill_8", "time_to_first_token", "decode_b1", "decode_b2"}  # the stages
    assert report["ratios"]["speedups"] == {"pytorch eager-fp32": pytest.approx(expected, rel=1e-12)}
    assert "attention sdpa, dtype torch.bfloat16" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_engine_directory_without_tensorrt_is_one_line_and_exit_2(tmp_path, export_hf):
    engines = tmp_path / "engines"
    shutil.copytree(export_hf, engines)
    manifest = json.loads((engines / "janus_edge.json").read_text())
    for graph in manifest["graphs"].values():
        graph["format"] = "engine"
    (engines / "janus_edge.json").write_text(json.dumps(manifest))
    result = run_cli("bench", engines)
    assert result.returncode == 2 and "TensorRT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [((), "nothing to measure"), (("--stages", "decode,warp"), "unknown stages"),
                                           (("--reference-configs", "flash-fp8"), "unknown reference configuration")])
def test_bad_requests_are_user_errors(tiny_hf, args, message):
    result = run_cli("bench", *(("--reference", tiny_hf) if args else ()), *args)
    assert result.returncode == 2 and message in result.stderr


def test_bench_refuses_a_directory_that_is_not_an_export(tmp_path):
    result = run_cli("bench", tmp_path)
    assert result.returncode == 2 and "not a janus-edge export" in result.stderr
