"""Running every measurement in its own child process, and the report: floors, ratios, text, chart, JSON."""

from __future__ import annotations

import json
import multiprocessing
import platform
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Callable

from .common import Result, Settings, copy_bandwidth_gbs, gemm_gflops

SCHEMA_ID = "janus-edge-bench/2"
DECODE_ROWS = {"b1": (1, "lm_head"), "b2": (2, "generation_head")}  # understanding step; CFG step of one image
FLOOR_KEYS = (("weight_floor_ms", "{:.1f} ms"), ("full_floor_ms", "{:.1f} ms"), ("weight_floor_ratio", "x{:.2f}"),
              ("full_floor_ratio", "x{:.2f}"))
FLOW_FLOOR_KEYS = (("bandwidth_floor_ms", "{:.1f} ms"), ("compute_floor_ms", "{:.1f} ms"), ("bound", "{}"),
                   ("floor_ratio", "x{:.2f}"))


def _child(job) -> Result:
    kind, path, settings, reference = job
    try:
        if kind == "export":
            from .exports import measure_export

            return measure_export(path, settings)
        from .reference import measure_reference

        return measure_reference(path, settings, *reference)
    except Exception as exc:  # reported in the table, so that the other measurements still stand
        label = f"pytorch {reference[0].name}" if reference else Path(path).name
        return Result(label, kind, "?", error=f"{type(exc).__name__}: {exc}")


def run_bench(directories: list[str], reference: str | None, settings: Settings, reference_configs: list = (),
              log: Callable[[str], None] = print) -> dict:
    """Measures each directory, then each reference configuration, one child process at a time (peak memory is
    then per row, and one crash does not hide the others)."""
    from janus_edge.runtime.manifest import load_manifest

    # the reference generates as many images per call as the largest export allows (8 rows, the default, if none)
    manifests = [load_manifest(d, verify=False) for d in directories]
    max_batch = max((m.limits.max_batch for m in manifests), default=8)
    jobs = [("export", str(d), settings, None) for d in directories] + \
        [("reference", str(reference), settings, (c, max_batch)) for c in (reference_configs if reference else ())]
    bandwidth = copy_bandwidth_gbs()
    log(f"copy bandwidth {bandwidth:.1f} GB/s")
    machine = {"platform": platform.platform(), "processor": platform.processor(),
               "cpus": multiprocessing.cpu_count(), "copy_bandwidth_gbs": bandwidth}
    if any(m.flow is not None for m in manifests):  # JanusFlow's flow step is compute-bound: its floor needs a rate
        machine["gemm_gflops"] = gemm_gflops()
        log(f"fp32 GEMM {machine['gemm_gflops']:.1f} GFLOP/s")
    results = []
    for job in jobs:
        log(f"measuring {job[0]} {job[1]}" + (f" ({job[3][0].name})" if job[3] else ""))
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results.append(pool.submit(_child, job).result())
    for result in results:
        add_floors(result, bandwidth, settings.past, machine.get("gemm_gflops"))
    return {"schema": SCHEMA_ID, "machine": machine, "settings": asdict(settings),
            "results": [asdict(r) for r in results], "ratios": ratios(results)}


def add_floors(result: Result, bandwidth_gbs: float, past: int, gemm_gflops: float | None = None) -> None:
    """Per decode step: the bytes it must read (decoder + head weights, and the KV cache of `past` positions per
    row in the KV dtype) over the measured copy bandwidth; the weight-only floor ignores the KV cache. JanusFlow's
    flow step also gets a compute floor (`flow_floor`)."""
    if result.error:
        return
    if "flow_step" in result.floors and gemm_gflops:
        flow_floor(result, bandwidth_gbs, gemm_gflops)
    for tag, (rows, head) in DECODE_ROWS.items():
        if f"decode_{tag}" not in result.metrics:
            continue
        weights = result.weight_bytes["decoder"] + result.weight_bytes[head]
        kv = rows * past * result.kv["bytes_per_position_per_row"]
        weight_floor, full_floor = (weights / (bandwidth_gbs * 1e9) * 1e3, (weights + kv) / (bandwidth_gbs * 1e9) * 1e3)
        step = result.metrics[f"decode_{tag}"]["median"]
        result.floors[tag] = {"rows": rows, "past": past, "weight_bytes": weights, "kv_bytes": kv,
                              "weight_floor_ms": weight_floor, "full_floor_ms": full_floor,
                              "weight_floor_ratio": step / weight_floor, "full_floor_ratio": step / full_floor}


def flow_floor(result: Result, bandwidth_gbs: float, gemm_gflops: float) -> None:
    """The flow step's two floors on this machine: bytes read (decoder, flow encoder and flow decoder weights, the
    cache of the prompt and the 577 positions) over the copy bandwidth, and the LLM's FLOPs (2 per weight per
    position for both rows, plus attention; the flow encoder/decoder's are not counted, so it stays a lower bound)
    over the measured fp32 GEMM rate (a measured rate, not a datasheet peak). The larger is the floor."""
    basis = result.floors["flow_step"]
    weights = sum(result.weight_bytes[g] for g in ("decoder", "flow_encoder", "flow_decoder"))
    bandwidth_ms = (weights + basis["kv_bytes"]) / (bandwidth_gbs * 1e9) * 1e3
    compute_ms = basis["llm_flops"] / (gemm_gflops * 1e9) * 1e3
    bound = "compute" if compute_ms >= bandwidth_ms else "bandwidth"
    step = result.metrics["flow_step"]["median"]
    basis.update(weight_bytes=weights, bandwidth_floor_ms=bandwidth_ms, compute_floor_ms=compute_ms,
                 gemm_gflops=gemm_gflops, bound=bound, floor_ratio=step / max(bandwidth_ms, compute_ms))


def ratios(results: list[Result]) -> dict:
    """Each row's speed-up (baseline time / row time) over the strongest reference: the one with the fastest CFG
    decode step among the references that are not extras, else the first row that ran."""
    references = [r for r in results if r.kind == "reference" and not r.error and not r.reference.get("extra")
                  and "decode_b2" in r.metrics]
    baseline = min(references, key=lambda r: r.metrics["decode_b2"]["median"], default=None) or \
        next((r for r in results if not r.error), None)
    if baseline is None:
        return {}
    speedups = {r.label: {k: baseline.metrics[k]["median"] / v["median"] for k, v in r.metrics.items()
                          if isinstance(v, dict) and k in baseline.metrics and v["median"] > 0}
                for r in results if r is not baseline and not r.error}
    return {"baseline": baseline.label, "speedups": speedups}


def format_report(report: dict) -> str:
    results = report["results"]
    rows = {name: [_metric_cell(r["metrics"].get(name)) for r in results]
            for name in sorted({k for r in results for k in r["metrics"]}, key=_metric_order)}
    for tag, keys in [*((tag, FLOOR_KEYS) for tag in DECODE_ROWS), ("flow_step", FLOW_FLOOR_KEYS)]:
        for key, fmt in keys:
            if any(key in r["floors"].get(tag, {}) for r in results):
                rows[f"{tag} {key}"] = [fmt.format(r["floors"][tag][key]) if key in r["floors"].get(tag, {})
                                        else "-" for r in results]
    for kind, key, count in (("images", "images_per_minute", "n"), ("understanding", "requests_per_minute", "batch")):
        for value in sorted({row[count] for r in results for row in r["throughput"][kind]}):
            cells = [next((f"{row[key]:.2f}" for row in r["throughput"][kind] if row[count] == value), "-")
                     for r in results]
            rows[f"{key} {count}={value}"] = cells
            if kind == "images":
                rows[f"s/image n={value}"] = [next((f"{row['seconds_per_image']['median']:.1f} s"
                                                    for row in r["throughput"][kind] if row["n"] == value), "-")
                                              for r in results]
    width = max(18, *(len(r["label"]) + 2 for r in results))
    lines = [f"{'metric':<28}" + "".join(f"{r['label']:>{width}}" for r in results)]
    lines += [f"{name:<28}" + "".join(f"{c:>{width}}" for c in cells) for name, cells in rows.items()]
    lines += [f"{r['label']}: ERROR {r['error']}" for r in results if r["error"]]
    if any(r["throughput"].get("speculative") for r in results):
        from .speculative import CAVEAT, format_rows

        for r in results:
            lines += format_rows(r["label"], r["throughput"].get("speculative", []))
        lines.append(f"speculative: one image per call, same seed; modelled = plan's floors per target, a pass of w "
                     f"positions = max(bytes / bandwidth, w x FLOPs / peak); {CAVEAT}")
    lines += [f"{r['label']}: " + ", ".join(f"{k} {v}" for k, v in r["reference"].items())
              for r in results if r["reference"]]
    lines.append(f"copy bandwidth {report['machine']['copy_bandwidth_gbs']:.1f} GB/s; weight floor = (decoder + head "
                 "weight bytes) / bandwidth; full floor adds the KV cache read at the past length")
    if "gemm_gflops" in report["machine"]:
        lines.append(f"fp32 GEMM {report['machine']['gemm_gflops']:.1f} GFLOP/s (measured, not a peak); flow_step: one "
                     "JanusFlow Euler step for a CFG pair (577 positions x 2 rows on a 64-token prompt); its compute "
                     "floor = the LLM's FLOPs / that rate (flow encoder/decoder not counted), bandwidth floor = "
                     "(decoder + flow graph weights + KV) / copy bandwidth")
    baseline = report["ratios"].get("baseline")
    for label, table in report["ratios"].get("speedups", {}).items():
        if "decode_b2" in table:
            lines.append(f"{label} vs {baseline}: decode b1 x{table.get('decode_b1', float('nan')):.2f}, "
                         f"CFG decode b2 x{table['decode_b2']:.2f}")
    return "\n".join(lines)


def _metric_cell(value) -> str:
    if isinstance(value, dict):
        return f"{value['median']:.2f} {value['unit']} ±{(value['max'] - value['min']) / 2:.2f}"
    return "-" if value is None else f"{value:.2f}"


def _metric_order(name: str):
    order = ["load", "vision_encoder_per_image", "prefill", "time_to_first_token", "decode", "tokens_per_s",
             "flow_step", "vq_decode", "peak_host_mb"]
    return next((i for i, prefix in enumerate(order) if name.startswith(prefix)), len(order)), name


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in report["results"] if not r["error"]]
    stages = sorted({k for r in results for k, v in r["metrics"].items() if isinstance(v, dict)}, key=_metric_order)
    figure, axis = plt.subplots(figsize=(10, 0.5 * len(stages) * max(len(results), 1) + 1.5))
    height = 0.8 / max(len(results), 1)
    for i, r in enumerate(results):
        values = [r["metrics"].get(s, {}).get("median", 0) * (1e3 if r["metrics"].get(s, {}).get("unit") == "s"
                                                                else 1) for s in stages]
        axis.barh([j + i * height for j in range(len(stages))], values, height=height, label=r["label"])
    axis.set_yticks([j + 0.4 - height / 2 for j in range(len(stages))], stages)
    axis.set_xscale("log")
    axis.set_xlabel("milliseconds (median, log scale)")
    axis.invert_yaxis()
    axis.legend()
    axis.set_title("janus-edge bench")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def load_schema() -> dict:
    return json.loads(resources.files("janus_edge").joinpath("data/bench.schema.json").read_text(encoding="utf-8"))


def validate_report(report: dict) -> None:
    """Raises jsonschema.ValidationError if the report does not follow data/bench.schema.json."""
    import jsonschema

    jsonschema.validate(report, load_schema())


def write_json(report: dict, path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2))
