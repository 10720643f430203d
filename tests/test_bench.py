"""`bench` measures every stage for exports and the reference, writes JSON and a chart. No duration is asserted."""

from __future__ import annotations

import json

from conftest import run_cli

STAGES = ["load", "vision_encoder_per_image", "prefill_64", "prefill_640", "time_to_first_token", "decode_b1",
          "decode_b2", "tokens_per_s_b1", "tokens_per_s_b2", "image_per_image", "vq_decode", "peak_host_mb",
          "floor_b1", "floor_b2", "floor_ratio_b1", "floor_ratio_b2"]


def test_bench_json_has_every_field_positive(tmp_path, export_hf, export_fp16, tiny_hf):
    report_path, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    result = run_cli("bench", export_hf, export_fp16, "--reference", tiny_hf, "--runs", "1", "--json", report_path,
                     "--plot", chart, check_code=0)
    assert "decode_b2" in result.stdout and "copy bandwidth" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["schema"] == "janus-edge-bench/1"
    assert report["machine"]["copy_bandwidth_gbs"] > 0
    assert [r["kind"] for r in report["results"]] == ["export", "export", "reference"]
    for r in report["results"]:
        assert not r["error"]
        for stage in STAGES:
            value = r["metrics"][stage]
            median = value["median"] if isinstance(value, dict) else value
            assert median > 0, (r["label"], stage)
    assert set(report["ratios"]) >= {"baseline", export_hf.name, export_fp16.name}
    assert chart.stat().st_size > 10_000 and chart.read_bytes()[:4] == b"\x89PNG"


def test_bench_refuses_a_directory_that_is_not_an_export(tmp_path):
    result = run_cli("bench", tmp_path)
    assert result.returncode == 2 and "not a janus-edge export" in result.stderr
