"""Measuring one export or engine directory through the runtime, with the backend its manifest names."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import Result, Settings, peak_host_mb, throughput_rows, timed, timing


def backend_for(manifest) -> str:
    """An engine directory (graphs of format "engine", from `janus-edge build`) runs on TensorRT, else ONNX Runtime."""
    return "tensorrt" if any(g.format == "engine" for g in manifest.graphs.values()) else "onnxruntime"


def check_directory(directory: str) -> None:
    """A clear user error (JanusEdgeError) before any measuring: not an export, or TensorRT missing for engines."""
    from janus_edge.runtime.manifest import load_manifest

    if backend_for(load_manifest(directory, verify=False)) == "tensorrt":
        from janus_edge.runtime.backends.tensorrt import require_tensorrt

        require_tensorrt()


def measure_export(directory: str, settings: Settings) -> Result:
    from janus_edge.runtime import JanusRuntime, Turn

    start = time.perf_counter()
    runtime = JanusRuntime.load(directory)  # an engine directory opens on TensorRT by itself
    backend_name = runtime.backend.name
    for name in runtime.manifest.graphs:
        runtime.backend.graph(name)
    manifest, backend, rng = runtime.manifest, runtime.backend, np.random.default_rng(settings.seed)
    result = Result(Path(directory).name, "export", manifest.precision, backend=backend_name)
    metrics, stages = result.metrics, settings.stages
    metrics["load"] = timing([(time.perf_counter() - start) * 1e3])  # one load: median = min = max
    model = manifest.model
    hidden, size = model.hidden_size, model.image_size
    if "vision" in stages:
        pixels = rng.standard_normal((1, 3, size, size), dtype=np.float32)
        metrics["vision_encoder_per_image"] = timed(lambda: backend.apply("vision_encoder", pixels),
                                                    settings.runs, settings.warmup)
    for length in settings.prompt_lengths if "prefill" in stages else ():
        embeds = rng.standard_normal((1, length, hidden), dtype=np.float32)
        mask, positions = np.ones((1, length), np.int64), np.arange(length)[None]
        metrics[f"prefill_{length}"] = timed(lambda: backend.kv_decoder(1).step(embeds, mask, positions),
                                             settings.runs, settings.warmup)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    if "ttft" in stages:
        metrics["time_to_first_token"] = timed(lambda: runtime.understand([image], "Describe this image.",
                                                                          max_new_tokens=1), settings.runs,
                                               settings.warmup)
    rows = {"b1": (1, "text_embedding", "lm_head"), "b2": (2, "generation_embedding", "generation_head")}
    if manifest.flow is not None:  # no image tokens: the flow step replaces the CFG token step
        del rows["b2"]
        if "decode" in stages:
            metrics["flow_step"], result.floors["flow_step"] = flow_step(runtime, settings)
    for tag, (batch, embedding, head) in rows.items() if "decode" in stages else ():
        decoder = backend.kv_decoder(batch)
        past = rng.standard_normal((batch, settings.past, hidden), dtype=np.float32)
        decoder.step(past, np.ones((batch, settings.past), np.int64), np.arange(settings.past)[None].repeat(batch, 0))
        ids = np.zeros((batch, 1), np.int64)

        def step(decoder=decoder, batch=batch, embedding=embedding, head=head):
            embeds = backend.apply(embedding, ids)
            out = decoder.step(embeds, np.ones((batch, decoder.length + 1), np.int64),
                               np.full((batch, 1), decoder.length, np.int64))
            backend.apply(head, out)

        metrics[f"decode_{tag}"] = timed(step, settings.runs * 4, settings.warmup)
        metrics[f"tokens_per_s_{tag}"] = 1e3 / metrics[f"decode_{tag}"]["median"]
        del decoder, step
    steps = {} if manifest.flow is None else {"steps": settings.flow_steps}
    throughput_rows(result, settings, manifest.limits.max_batch,
                    generate=lambda n: runtime.generate_images("a red fox", n=n, seed=0, **steps),
                    understand=lambda batch: runtime.understand_batch(
                        [[Turn("Describe this image.", [image])]] * batch, max_new_tokens=settings.understand_tokens))
    if settings.speculative and manifest.flow is None:
        from .speculative import speculative_rows

        result.throughput["speculative"] = speculative_rows(runtime, settings)
    if "vq" in stages and manifest.flow is None:
        ids = rng.integers(0, model.codebook_size, (1, model.num_image_tokens))
        metrics["vq_decode"] = timed(lambda: backend.apply("vq_decoder", ids), settings.runs, settings.warmup)
    metrics["peak_host_mb"] = peak_host_mb()
    directory_path = Path(directory)
    for name, graph in manifest.graphs.items():
        files = [graph.file] + [f for f in manifest.files if f.startswith(graph.file + ".")]
        result.weight_bytes[name] = sum((directory_path / f).stat().st_size for f in files)
    result.kv = {"bytes_per_position_per_row": manifest.kv_cache_bytes(1, 1),
                 "itemsize": np.dtype(manifest.kv_dtype).itemsize}
    return result


def flow_step(runtime, settings: Settings) -> tuple[dict, dict]:
    """Times one Euler step of JanusFlow for one image (its CFG pair of rows) on a text prompt's cache, as the flow
    pipeline runs it: flow encoder, the decoder over the 577 flow positions, flow decoder, rewind to the prompt.
    Returns the timing and what the step's floors need (`report.add_floors` divides by this machine's rates)."""
    from janus_edge.runtime.profiles import TYPICAL_TEXT_PROMPT
    from janus_edge.plan import decoder_flops
    from janus_edge.runtime.kv import request_capacity
    from janus_edge.runtime.tensor_names import HIDDEN_STATES, INPUTS_EMBEDS, LATENTS, SKIP, TIME_EMBEDDING, TIMESTEPS

    backend, manifest = runtime.backend, runtime.manifest
    encoder = manifest.graphs["flow_encoder"]
    latent, positions = encoder.inputs[0].shape[1:], encoder.outputs[0].shape[1]
    rng, prompt, rows = np.random.default_rng(settings.seed), TYPICAL_TEXT_PROMPT, 2
    decoder = backend.kv_decoder(rows, request_capacity(prompt + positions, manifest.limits.max_context))
    embeds = rng.standard_normal((rows, prompt, manifest.model.hidden_size), dtype=np.float32)
    decoder.step(embeds, np.ones((rows, prompt), np.int64), np.arange(prompt)[None].repeat(rows, 0))
    z, t = rng.standard_normal((rows, *latent), dtype=np.float32), np.full(rows, 500.0, np.float32)
    mask = np.ones((rows, prompt + positions), np.int64)
    ids = np.arange(prompt, prompt + positions)[None].repeat(rows, 0)

    def step():
        encoded = backend.run("flow_encoder", **{LATENTS: z, TIMESTEPS: t})
        hidden = decoder.step(encoded[INPUTS_EMBEDS], mask, ids)
        backend.run("flow_decoder", **{HIDDEN_STATES: hidden, SKIP: encoded[SKIP],
                                       TIME_EMBEDDING: encoded[TIME_EMBEDDING]})
        decoder.rewind(prompt)

    timing_ms = timed(step, settings.runs, settings.warmup)
    decoder.close()
    basis = {"rows": rows, "prompt": prompt, "positions": positions,
             "kv_bytes": rows * (prompt + positions) * manifest.kv_cache_bytes(1, 1),
             "llm_flops": decoder_flops(manifest.model, rows, positions, prompt)}
    return timing_ms, basis
