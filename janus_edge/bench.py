"""`janus-edge bench`: latency and memory of export directories (and the PyTorch reference), side by side.

Each directory (and the reference) is measured in its own child process, one after the other, so that peak memory
is per directory and one crash does not hide the others; all of them run in the same invocation so that ratios
between them are meaningful on a noisy machine. Every timing is a median over `runs` after `warmup` runs, with the
min and max as spread. Decode steps are also given as a multiple of the memory-bandwidth floor: the bytes of
weights one step must read (decoder + head) over this machine's measured copy bandwidth (KV cache and activations
ignored, as in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import multiprocessing
import platform
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

SCHEMA = "janus-edge-bench/1"


@dataclass
class Settings:
    runs: int = 5
    warmup: int = 1
    prompt_lengths: tuple = (64, 640)
    past: int = 600  # KV length at which decode steps are timed (one image + a question)
    images: int = 1  # images per generation request: the CFG batch is 2 x images
    image_runs: int = 1  # full 576-step generations to time (0 skips the stage)
    seed: int = 0


@dataclass
class Result:
    label: str
    kind: str  # "export" or "reference"
    precision: str
    metrics: dict = field(default_factory=dict)  # name -> {"median", "min", "max", "unit"} or a number
    weight_bytes: dict = field(default_factory=dict)
    error: str = ""


def timed(fn: Callable[[], object], runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "unit": "ms",
            "runs": len(samples)}


def copy_bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """STREAM-style copy bandwidth (bytes read + written per second), best of `repeats`, in GB/s."""
    source = np.ones(megabytes * (1 << 20) // 4, dtype=np.float32)
    target = np.empty_like(source)
    best = min(_once(lambda: np.copyto(target, source)) for _ in range(repeats))
    return 2 * source.nbytes / best / 1e9


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _peak_host_mb() -> float:
    """This process's peak resident memory. VmHWM (Linux) restarts at exec; ru_maxrss would carry the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_export(directory: str, settings: Settings) -> Result:
    from janus_edge.runtime import JanusRuntime

    start = time.perf_counter()
    runtime = JanusRuntime.load(directory)
    for name in runtime.manifest.graphs:
        runtime.backend.graph(name)
    manifest, backend, rng = runtime.manifest, runtime.backend, np.random.default_rng(settings.seed)
    result = Result(Path(directory).name, "export", manifest.precision)
    metrics = result.metrics
    metrics["load"] = {"median": (time.perf_counter() - start) * 1e3, "min": 0, "max": 0, "unit": "ms", "runs": 1}
    hidden = manifest.model.hidden_size
    pixels = rng.standard_normal((1, 3, 384, 384), dtype=np.float32)
    metrics["vision_encoder_per_image"] = timed(lambda: backend.run("vision_encoder", pixel_values=pixels),
                                                settings.runs, settings.warmup)
    for length in settings.prompt_lengths:
        embeds = rng.standard_normal((1, length, hidden), dtype=np.float32)
        mask, positions = np.ones((1, length), np.int64), np.arange(length)[None]
        metrics[f"prefill_{length}"] = timed(lambda: backend.kv_decoder(1).step(embeds, mask, positions),
                                             settings.runs, settings.warmup)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    metrics["time_to_first_token"] = timed(lambda: runtime.understand([image], "Describe this image.",
                                                                      max_new_tokens=1), settings.runs,
                                           settings.warmup)
    rows = {"b1": (1, "text_embedding", "input_ids", "lm_head"),
            f"b{2 * settings.images}": (2 * settings.images, "generation_embedding", "image_ids", "generation_head")}
    for tag, (batch, embedding, ids_name, head) in rows.items():
        decoder = backend.kv_decoder(batch)
        past = rng.standard_normal((batch, settings.past, hidden), dtype=np.float32)
        decoder.step(past, np.ones((batch, settings.past), np.int64), np.arange(settings.past)[None].repeat(batch, 0))
        ids = np.zeros((batch, 1), np.int64)

        def step(decoder=decoder, batch=batch, embedding=embedding, ids_name=ids_name, head=head):
            embeds = backend.run(embedding, **{ids_name: ids})["inputs_embeds"]
            out = decoder.step(embeds, np.ones((batch, decoder.length + 1), np.int64),
                               np.full((batch, 1), decoder.length, np.int64))
            backend.run(head, hidden_states=out)

        metrics[f"decode_{tag}"] = timed(step, settings.runs * 4, settings.warmup)
        metrics[f"tokens_per_s_{tag}"] = 1e3 / metrics[f"decode_{tag}"]["median"]
    if settings.image_runs:
        metrics["image_per_image"] = timed(lambda: runtime.generate_images("a red fox", n=settings.images, seed=0),
                                           settings.image_runs, 0)
        for key in ("median", "min", "max"):
            metrics["image_per_image"][key] /= 1e3 * settings.images
        metrics["image_per_image"]["unit"] = "s"
    ids = rng.integers(0, manifest.model.codebook_size, (1, 576))
    metrics["vq_decode"] = timed(lambda: backend.run("vq_decoder", image_ids=ids), settings.runs, settings.warmup)
    metrics["peak_host_mb"] = _peak_host_mb()
    directory = Path(directory)
    for name, graph in manifest.graphs.items():
        files = [graph.file] + [f for f in manifest.files if f.startswith(graph.file + ".")]
        result.weight_bytes[name] = sum((directory / f).stat().st_size for f in files)
    return result


def measure_reference(model_dir: str, settings: Settings) -> Result:
    import torch
    from transformers import DynamicCache

    from janus_edge.export.checkpoint import load_checkpoint

    start = time.perf_counter()
    model = load_checkpoint(model_dir).model
    result = Result("pytorch-reference", "reference", "fp32")
    metrics, rng = result.metrics, np.random.default_rng(settings.seed)
    metrics["load"] = {"median": (time.perf_counter() - start) * 1e3, "min": 0, "max": 0, "unit": "ms", "runs": 1}
    llm, hidden = model.model.language_model, model.config.text_config.hidden_size
    run = lambda fn: lambda: torch.inference_mode()(fn)()  # noqa: E731
    pixels = torch.from_numpy(rng.standard_normal((1, 3, 384, 384), dtype=np.float32))
    metrics["vision_encoder_per_image"] = timed(run(lambda: model.model.get_image_features(pixels)), settings.runs,
                                                settings.warmup)
    for length in settings.prompt_lengths:
        embeds = torch.from_numpy(rng.standard_normal((1, length, hidden), dtype=np.float32))
        metrics[f"prefill_{length}"] = timed(run(lambda: llm(inputs_embeds=embeds, cache=DynamicCache(),
                                                             use_cache=True)), settings.runs, settings.warmup)
    for tag, batch, head in (("b1", 1, model.lm_head), (f"b{2 * settings.images}", 2 * settings.images,
                                                        model.model.generation_head)):
        cache = DynamicCache()
        with torch.inference_mode():
            llm(inputs_embeds=torch.randn(batch, settings.past, hidden), cache=cache, use_cache=True)
        token = torch.randn(batch, 1, hidden)

        def step(cache=cache, head=head, token=token):
            head(llm(inputs_embeds=token, cache=cache, use_cache=True).last_hidden_state)

        metrics[f"decode_{tag}"] = timed(run(step), settings.runs * 4, settings.warmup)
        metrics[f"tokens_per_s_{tag}"] = 1e3 / metrics[f"decode_{tag}"]["median"]
    text = model.config.text_config
    words = rng.integers(0, min(text.vocab_size, 500), 16).tolist()
    boi = model.generation_config.generation_kwargs["boi_token_id"]
    image_ids = [text.bos_token_id, boi] + [model.config.image_token_id] * 576 + [boi + 1] + words
    prompt = torch.tensor([image_ids])
    metrics["time_to_first_token"] = timed(run(lambda: model.generate(
        input_ids=prompt, attention_mask=torch.ones_like(prompt), pixel_values=pixels, max_new_tokens=1,
        do_sample=False)), settings.runs, settings.warmup)
    if settings.image_runs:
        rows = torch.tensor([[text.bos_token_id] + words + [boi]] * settings.images)
        metrics["image_per_image"] = timed(run(lambda: model.generate(
            input_ids=rows, attention_mask=torch.ones_like(rows), generation_mode="image", do_sample=True)),
            settings.image_runs, 0)
        for key in ("median", "min", "max"):
            metrics["image_per_image"][key] /= 1e3 * settings.images
        metrics["image_per_image"]["unit"] = "s"
    ids = torch.from_numpy(rng.integers(0, model.config.vq_config.num_embeddings, (1, 576)))
    metrics["vq_decode"] = timed(run(lambda: model.model.vqmodel.decode(ids)), settings.runs, settings.warmup)
    metrics["peak_host_mb"] = _peak_host_mb()
    count = lambda *ms: 4 * sum(p.numel() for m in ms for p in m.parameters())  # noqa: E731
    result.weight_bytes = {"decoder": count(llm) - count(llm.embed_tokens), "lm_head": count(model.lm_head),
                           "generation_head": count(model.model.generation_head)}
    return result


def _child(job):
    kind, path, settings = job
    try:
        return measure_export(path, settings) if kind == "export" else measure_reference(path, settings)
    except Exception as exc:  # reported in the table, so that the other measurements still stand
        return Result(Path(path).name, kind, "?", error=f"{type(exc).__name__}: {exc}")


def run_bench(directories: list[str], reference: str | None, settings: Settings,
              log: Callable[[str], None] = print) -> dict:
    jobs = [("export", str(d), settings) for d in directories] + ([("reference", reference, settings)]
                                                                  if reference else [])
    bandwidth = copy_bandwidth_gbs()
    log(f"copy bandwidth {bandwidth:.1f} GB/s")
    results = []
    for job in jobs:
        log(f"measuring {job[0]} {job[1]}")
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results.append(pool.submit(_child, job).result())
    for result in results:
        _add_floors(result, bandwidth, settings)
    return {"schema": SCHEMA, "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                          "cpus": multiprocessing.cpu_count(), "copy_bandwidth_gbs": bandwidth},
            "settings": asdict(settings), "results": [asdict(r) for r in results], "ratios": _ratios(results)}


def _add_floors(result: Result, bandwidth_gbs: float, settings: Settings) -> None:
    if result.error:
        return
    weights = result.weight_bytes
    cfg = f"b{2 * settings.images}"
    for tag, head in (("b1", "lm_head"), (cfg, "generation_head")):
        floor_ms = (weights["decoder"] + weights[head]) / (bandwidth_gbs * 1e9) * 1e3
        result.metrics[f"floor_{tag}"] = floor_ms
        result.metrics[f"floor_ratio_{tag}"] = result.metrics[f"decode_{tag}"]["median"] / floor_ms


def _ratios(results: list[Result]) -> dict:
    """Each measured directory's speed-up over the reference (and over the first directory), stage by stage."""
    baseline = next((r for r in results if r.kind == "reference" and not r.error), None) or \
        next((r for r in results if not r.error), None)
    if baseline is None:
        return {}
    ratios = {"baseline": baseline.label}
    for r in results:
        if r is baseline or r.error:
            continue
        ratios[r.label] = {k: baseline.metrics[k]["median"] / v["median"] for k, v in r.metrics.items()
                           if isinstance(v, dict) and k in baseline.metrics and v["median"] > 0}
    return ratios


def format_report(report: dict) -> str:
    results = [r for r in report["results"]]
    names = sorted({k for r in results for k in r["metrics"]}, key=_metric_order)
    width = max(18, *(len(r["label"]) + 2 for r in results))
    lines = [f"{'metric':<26}" + "".join(f"{r['label']:>{width}}" for r in results)]
    for name in names:
        cells = []
        for r in results:
            value = r["metrics"].get(name)
            if isinstance(value, dict):
                unit = value["unit"]
                cells.append(f"{value['median']:.2f} {unit} ±{(value['max'] - value['min']) / 2:.2f}")
            elif value is None:
                cells.append("-")
            else:
                cells.append(f"{value:.2f}")
        lines.append(f"{name:<26}" + "".join(f"{c:>{width}}" for c in cells))
    lines += [f"{r['label']}: ERROR {r['error']}" for r in results if r["error"]]
    lines.append(f"copy bandwidth {report['machine']['copy_bandwidth_gbs']:.1f} GB/s; floor = (decoder + head "
                 "weight bytes) / bandwidth; floor_ratio = measured decode step / floor")
    for label, ratios in report["ratios"].items():
        if label != "baseline" and "decode_b1" in ratios:
            lines.append(f"{label} vs {report['ratios']['baseline']}: decode b1 x{ratios['decode_b1']:.2f}, "
                         + ", ".join(f"{k} x{v:.2f}" for k, v in ratios.items() if k.startswith("decode_b")
                                     and k != "decode_b1"))
    return "\n".join(lines)


def _metric_order(name: str):
    order = ["load", "vision_encoder_per_image", "prefill", "time_to_first_token", "decode", "tokens_per_s",
             "floor", "image_per_image", "vq_decode", "peak_host_mb"]
    return next((i for i, prefix in enumerate(order) if name.startswith(prefix)), len(order)), name


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in report["results"] if not r["error"]]
    stages = [k for k in sorted({k for r in results for k, v in r["metrics"].items() if isinstance(v, dict)},
                                key=_metric_order)]
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


def write_json(report: dict, path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2))
