"""`janus-edge plan`: will a model fit a target at a precision, context and batch, and how fast can it be?

All numbers are computed from the model's `ModelInfo` (parameter counts per graph from its family in
export/families, bytes per weight for each precision scheme, KV cache per token) and the target's memory, bandwidth
and datasheet peak compute. Each step has two floors: the bytes it must read (weights, plus the KV cache) over
bandwidth, and its FLOPs over the peak rate of the precision each graph computes in; the larger is the floor. Janus-Pro's token decode is memory-bound (one
position per row); a JanusFlow step runs 577 positions per row and is compute-bound on most targets.
Activation figures are estimates (documented in docs/BENCHMARKS.md); weights and KV are exact.

Memory is stated the way the TensorRT backend holds it: engines (weights), contexts (ONE scratch allocation shared by
every execution context), KV cache, KV spare + decode-step buffers, and the prefill's request-sized buffers; the
build's own peak (`targets.build_peak_bytes`) is a build-time cost, stated apart and not in the runtime total.
`plan_engines(ENGINE_DIR, images, context)` reads what `build` recorded and computes the figures the backend
allocates from (`runtime.backends.trt_memory`).

With a speculative window (`make_plan(..., window=W)`, `plan_engines(..., window=W)`), the generation request's
verify pass is counted too: its step buffers for W positions per row and the head's logits for every position
(rows x W x codebook x 4 bytes), and `Plan.speculative` gives the pass's floor beside a one-token step's
(`pass_floors_s`, which `bench --speculative` models with).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from janus_edge.export.families import MODELS, family_named, graph_parameters
from janus_edge.export.families.parameters import llm_decoder
from janus_edge.export.precision import Precision, parse_precision
from janus_edge.export.tensorrt.targets import GIB, TARGETS, Target, build_peak_bytes
from janus_edge.runtime import kv
from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.backends.trt_decoder import PREFILL_CHUNK, prefill_layout, step_io_bytes
from janus_edge.runtime.manifest import ModelInfo
from janus_edge.runtime.pipelines.speculative import MAX_WINDOW
from janus_edge.runtime.profiles import TYPICAL_TEXT_PROMPT

W4_BLOCK = 128
SMALLEST = "int8,w4,fp16"  # every graph reduced: the last precision a suggestion tries


def bytes_per_weight(scheme: str) -> float:
    """Storage per weight, with the scales: per-channel fp16 scales are negligible; w4 has one fp16 per 128."""
    return {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "w8": 1.0, "w4": 0.5 + 2 / W4_BLOCK}[scheme]


@dataclass
class Plan:
    model: str
    target: str
    precision: str
    context: int
    images: int
    weights_bytes: dict[str, float]
    kv_cache_bytes: float  # the largest request's: CFG rows at the context (Janus-Pro); for JanusFlow the larger of
    # its flow request (`flow`) and one understanding row at the context
    runtime_buffers_bytes: float  # TensorRT backend: the KV spare tensor and the decode step's IO buffers
    activation_bytes: float  # contexts: the one scratch allocation every execution context shares
    build_peak_bytes: float  # `build`'s own peak (a build-time cost, not in the total)
    total_bytes: float
    usable_bytes: float
    fits: bool
    decode_floor_ms: dict[str, float]
    image_floor_s: float  # per image: the larger of the bandwidth and the compute floor
    image_steps: int  # decode steps per image (its image tokens), or Euler steps of the flow
    graph_precisions: dict[str, str] = field(default_factory=dict)  # what `calibrate`/`export` make of each graph
    kv_dtype: str = "float32"
    suggestion: str = ""
    image_floors_s: dict[str, float] = field(default_factory=dict)  # "bandwidth", "compute": per image
    image_bound: str = ""  # which of the two is the floor
    flow: dict = field(default_factory=dict)  # JanusFlow: the flow request and its step's floors
    prefill_bytes: float = 0.0  # the prefill's request-sized buffers (inputs, hidden states, new keys/values)
    io_bytes: float = 0.0  # other engines' IO buffers (engine directories only)
    staging_bytes: float = 0.0  # pinned host staging (engine directories only; a Jetson's one DRAM)
    source: str = "estimate"  # "estimate" (a preset or checkpoint) or "engines" (recorded by `build`)
    requests: dict = field(default_factory=dict)  # engine directories: per request kind, bytes per category
    speculative: dict = field(default_factory=dict)  # with a window: the verify pass's floors (`pass_floors_s`)

    def to_dict(self) -> dict:
        return asdict(self)


def kv_cache_bytes(d: ModelInfo, kv_dtype: str, rows: int, context: int, capacity: int | None = None) -> int:
    """What a backend allocates for `rows` rows of a request that may fill `context` (or of `capacity` slots):
    `runtime.kv`'s numbers."""
    return kv.cache_bytes(d, kv_dtype, rows, capacity or kv.request_capacity(context, context))


def runtime_buffers_bytes(d: ModelInfo, kv_dtype: str, rows: int, context: int, capacity: int | None = None,
                          width: int = 1) -> int:
    """What the TensorRT backend allocates next to the cache for such a request (`runtime.kv`'s numbers): the
    spare cache tensor for bucket crossings and the step's IO buffers (`width` positions per row: a verify pass).
    Its engines have one execution context each, so activations count once (the largest of prefill, vision and VQ,
    below)."""
    capacity = capacity or kv.request_capacity(context, context)
    return kv.spare_bytes(d, kv_dtype, rows, capacity) + sum(step_io_bytes(d, kv_dtype, rows, capacity, width).values())


def pass_floors_s(image_floors: dict[str, float], tokens: int, window: int) -> tuple[float, float]:
    """(t_1, t_w): a one-token step's floor and a `window`-position pass's, from a plan's per-image floors over its
    `tokens` steps. A pass reads the weights and the cache once (bandwidth B, as one step) and does `window` times
    a step's FLOPs (C): t_1 = max(B, C), t_w = max(B, window * C)."""
    bandwidth, compute = (image_floors[kind] / tokens for kind in ("bandwidth", "compute"))
    return max(bandwidth, compute), max(bandwidth, window * compute)


def prefill_bytes(d: ModelInfo, kv_dtype: str, rows: int, positions: int, context: int, chunked: bool = True) -> int:
    """The TensorRT decoder's prefill buffer for `rows` rows of `positions` positions in a cache of `context`: one
    chunk of at most `PREFILL_CHUNK` positions (a pass that wants every hidden state, `chunked` False, is one)."""
    slots = min(kv.bucket(positions), context)
    chunk = min(positions, PREFILL_CHUNK) if chunked else positions
    return sum(prefill_layout(d, kv_dtype, rows, chunk, slots).values())


def compute_kind(chosen: Precision, graph: str) -> str:
    """The datasheet peak graph `graph` runs at: INT8 Q/DQ graphs on INT8 Tensor Cores, graphs computing in fp16
    (fp16, and weight-only graphs when fp16 is asked too) on fp16 ones, the rest (fp32, weight-only alone) on the
    CUDA cores."""
    if chosen.graph(graph) == "int8":
        return "int8"
    return "fp16" if chosen.activation_dtype(graph) == "float16" else "fp32"


def _attention_flops(d: ModelInfo, positions: int, keys: int) -> float:
    """QK^T and AV of `positions` new positions over `keys` cached + new ones, every layer, one row."""
    return 4.0 * d.num_layers * d.num_heads * d.head_dim * positions * keys


def decoder_flops(d: ModelInfo, rows: int, positions: int, past: int) -> float:
    """The LLM decoder's FLOPs for `positions` new positions per row on `past` cached ones: 2 per weight per
    position, plus attention."""
    return rows * (2.0 * llm_decoder(d) * positions + _attention_flops(d, positions, past + positions))


def check_window(window: int | None, model: str, flow: bool) -> None:
    """Refuses a speculative window outside 1..MAX_WINDOW, or any window for JanusFlow."""
    if window is not None and (flow or not 1 <= window <= MAX_WINDOW):
        raise RequestError(f"a speculative window of {window} cannot be planned for {model}",
                           f"use 1 to {MAX_WINDOW} positions, on a Janus-Pro model (JanusFlow has no token steps)")


def make_plan(model: str, d: ModelInfo, target: Target, precision: str, context: int, images: int,
              suggest: bool = True, window: int | None = None) -> Plan:
    """`window`: generation decodes speculatively, verify passes of that many positions (None: the plain loop)."""
    tokens = d.num_image_tokens
    if context < tokens + 16 or images < 1:
        raise RequestError(f"context {context} / images {images} cannot hold one request",
                           f"use a context >= {tokens + 16} and at least 1 image")
    family = family_named(d.family)
    flow = family.generation == "flow"
    check_window(window, model, flow)
    chosen = parse_precision(precision)
    kv.check_support(precision_words=chosen.words, backend=kv.TENSORRT, family=d.family)
    params = graph_parameters(d)
    pinned = lambda g: g in family.fp32_graphs  # noqa: E731  graphs the family exports fp32 whatever is asked
    schemes = {g: "fp32" if pinned(g) else chosen.graph(g) for g in params}
    kinds = {g: "fp32" if pinned(g) else compute_kind(chosen, g) for g in params}
    itemsize = {g: 2 if kinds[g] == "fp16" else 4 for g in params}  # activations
    weights = {g: params[g] * bytes_per_weight(schemes[g]) for g in params}
    rows = 2 * images  # CFG generation is the widest request; understanding uses 1 row per conversation
    bandwidth = target.bandwidth_gbs * 1e9
    kv_token = kv.bytes_per_position(d, chosen.kv_dtype)
    seconds = lambda flops, graph: flops / target.peak_flops(kinds[graph])  # noqa: E731
    # MLP gate/up and a few hidden copies per position; logits of every row
    per_position = (2 * d.intermediate_size + 4 * d.hidden_size) * itemsize["decoder"]
    vision = images * tokens * (d.vision_intermediate_size + 4 * d.vision_hidden_size) \
        * itemsize["vision_encoder"]
    mean_length = context // 2
    floors = {"understanding_b1": (weights["decoder"] + weights["lm_head"] + kv_token * mean_length) / bandwidth * 1e3}
    if not flow:
        kv_bytes = kv_cache_bytes(d, chosen.kv_dtype, rows, context)
        buffers = runtime_buffers_bytes(d, chosen.kv_dtype, rows, context, width=window or 1)
        # two full-resolution VQ feature maps and a temporary, per image
        vq = 3 * d.vq_base_channels * d.image_size ** 2 * itemsize["vq_decoder"]
        # logits of every row (a verify pass: of every window position)
        activations = max(context * per_position, vq, vision) + rows * (d.vocab_size + (window or 1)
                                                                          * d.codebook_size) * 4
        step_weights = weights["decoder"] + weights["generation_head"]
        floors[f"generation_b{rows}"] = (step_weights + kv_token * mean_length * rows) / bandwidth * 1e3
        past = tokens // 2 + 64  # the mean cache length over an image's decode steps
        step_flops = {"decoder": decoder_flops(d, rows, 1, past),
                      "generation_head": rows * 2.0 * params["generation_head"]}
        image_floors = {"bandwidth": tokens * (step_weights + kv_token * past * rows) / bandwidth,
                        "compute": tokens * sum(seconds(f, g) for g, f in step_flops.items())}
        steps, flow_plan = tokens, {}
    else:
        flow_plan = _flow_plan(d, family.graph_flops(d), chosen.kv_dtype, rows, context, weights, seconds, bandwidth)
        kv_bytes = max(flow_plan["kv_cache_bytes"], kv_cache_bytes(d, chosen.kv_dtype, 1, context))
        buffers = flow_plan["runtime_buffers_bytes"] if kv_bytes == flow_plan["kv_cache_bytes"] else \
            runtime_buffers_bytes(d, chosen.kv_dtype, 1, context)
        flow_step = rows * flow_plan["flow_tokens"] * (per_position + kv_token)  # the step's MLP and new K/V
        vae = 3 * d.vae_widths[0] * d.image_size ** 2 * itemsize["vae_decoder"]  # one image
        activations = max(context * per_position, flow_step, vae, vision) + d.vocab_size * 4
        image_floors = {kind: flow_plan[f"{kind}_floor_s"] / images for kind in ("bandwidth", "compute")}
        steps = flow_plan["steps"]
    prefill = max(prefill_bytes(d, chosen.kv_dtype, 1, context - 1, context),  # understanding, then generation
                  prefill_bytes(d, chosen.kv_dtype, rows, context - tokens + 1, context) if not flow else
                  prefill_bytes(d, chosen.kv_dtype, rows, flow_plan["flow_tokens"], context, chunked=False))
    total = sum(weights.values()) + kv_bytes + buffers + activations + prefill
    bound = max(image_floors, key=image_floors.get)
    peak = build_peak_bytes(weights, target)  # engines are built on the target itself: it must hold this too
    plan = Plan(model, target.name, precision, context, images, weights, kv_bytes, buffers, activations, peak,
                total, target.usable_bytes, max(total, peak) <= target.usable_bytes, floors,
                image_floors[bound], steps, schemes, chosen.kv_dtype, image_floors_s=image_floors, image_bound=bound,
                flow=flow_plan, prefill_bytes=prefill)
    if window is not None:
        one, wide = pass_floors_s(image_floors, tokens, window)
        plan.speculative = {"window": window, "one_token_step_ms": one * 1e3, "pass_ms": wide * 1e3,
                            "free_window": image_floors["bandwidth"] / image_floors["compute"]}
    if suggest and not plan.fits:
        plan.suggestion = _suggest(model, d, target, precision, context, images, window)
    return plan


def _flow_plan(d: ModelInfo, flops: dict[str, float], kv_dtype: str, rows: int, context: int, weights: dict, seconds,
               bandwidth: float, steps: int = 30) -> dict:
    """A flow family's generation request: a text prompt's cache plus the 577 flow positions for `rows` rows; each
    of `steps` Euler steps reads the decoder's and the flow graphs' weights and the cache once, and computes every
    row's 577 positions (`flops`: the flow graphs' per row, the VAE decoder's per image); the VAE decodes each image
    once. Floors for the whole request (all its images)."""
    prompt, flow_tokens = TYPICAL_TEXT_PROMPT, d.num_image_tokens + 1
    if context < prompt + flow_tokens:
        raise RequestError(f"context {context} cannot hold a {prompt}-token prompt and {flow_tokens} flow positions",
                           f"use a context >= {prompt + flow_tokens}")
    capacity = kv.request_capacity(prompt + flow_tokens, context)
    kv_token = kv.bytes_per_position(d, kv_dtype)
    images = rows // 2
    step_bytes = weights["decoder"] + weights["flow_encoder"] + weights["flow_decoder"] \
        + kv_token * rows * (prompt + flow_tokens)
    step_flops = {"decoder": decoder_flops(d, rows, flow_tokens, prompt),
                  "flow_encoder": rows * flops["flow_encoder"], "flow_decoder": rows * flops["flow_decoder"]}
    step_bandwidth, step_compute = step_bytes / bandwidth, sum(seconds(v, g) for g, v in step_flops.items())
    return {"prompt_tokens": prompt, "flow_tokens": flow_tokens, "rows": rows, "steps": steps, "capacity": capacity,
            "kv_cache_bytes": kv_cache_bytes(d, kv_dtype, rows, context, capacity),
            "runtime_buffers_bytes": runtime_buffers_bytes(d, kv_dtype, rows, context, capacity),
            "step_bytes": step_bytes, "step_flops": sum(step_flops.values()),
            "step_bandwidth_floor_ms": step_bandwidth * 1e3, "step_compute_floor_ms": step_compute * 1e3,
            "vae_flops_per_image": flops["vae_decoder"],
            "bandwidth_floor_s": steps * step_bandwidth + images * weights["vae_decoder"] / bandwidth,
            "compute_floor_s": steps * step_compute + images * seconds(flops["vae_decoder"], "vae_decoder")}


def plan_model(name: str) -> ModelInfo:
    """A preset's description (any registered family's), or a checkpoint directory's (read by its family)."""
    if name in MODELS:
        return MODELS[name]
    from janus_edge.export.checkpoint import load_config

    return load_config(name)


def _suggest(model: str, d: ModelInfo, target: Target, precision: str, context: int, images: int,
             window: int | None = None) -> str:
    """The first change that fits, trying precision, then context, then images per request."""
    fits = lambda scheme, ctx, n: make_plan(model, d, target, scheme, ctx, n, False, window).fits  # noqa: E731
    for candidate in ("fp16", "w8,fp16", "int8,w8,fp16", "w4,fp16", SMALLEST):
        if candidate != precision and fits(candidate, context, images):
            return f"--precision {candidate}"
    for candidate in (2048, 1024):
        for scheme in (precision, SMALLEST):
            if candidate < context and fits(scheme, candidate, images):
                return f"--precision {scheme} --context {candidate}"
    for n in range(images - 1, 0, -1):
        if fits(SMALLEST, min(context, 1024), n):
            return f"--precision {SMALLEST} --context {min(context, 1024)} --images {n}"
    return "nothing fits: choose a smaller model or a larger target"


def plan_engines(engine_dir: str | Path, images: int, context: int, window: int | None = None) -> Plan:
    """The TensorRT backend's memory for `images` images and `context` tokens on the engines in `engine_dir`, from
    what `build` recorded (engine sizes, device memory) and the figures the backend allocates from; the fit is
    judged against the target the engines were built for. `total_bytes` is the larger request kind's peak;
    `window`: generation decodes speculatively with verify passes that wide."""
    from janus_edge.runtime.backends.engine_manifest import EngineManifest
    from janus_edge.runtime.backends.trt_memory import request_memory
    from janus_edge.runtime.manifest import load_manifest

    engines = EngineManifest.read(Path(engine_dir))
    manifest = load_manifest(engine_dir, verify=False)
    if images < 1 or context < 1 or 2 * images > manifest.limits.max_batch or context > manifest.limits.max_context:
        raise RequestError(f"--images {images} / --context {context} is outside what these engines were built for "
                           f"({manifest.limits.max_batch // 2} image(s), context {manifest.limits.max_context})",
                           f"rebuild them: janus-edge build {engines.export_dir} {engine_dir} --target "
                           f"{engines.target} --images {images} --context {context}")
    check_window(window, str(engine_dir), manifest.flow is not None)
    target = TARGETS[engines.target]
    requests = request_memory(manifest, engines, images, context, window)
    peak = max(requests.values(), key=lambda r: sum(r.values()))
    weights = {name: float(info.engine_bytes) for name, info in engines.engines.items()}
    total = float(sum(peak.values()))
    return Plan(str(engine_dir), target.name, str(manifest.precision), context, images, weights, peak["kv_cache"],
                peak["kv_spare"] + peak["step_io"], peak["scratch"], build_peak_bytes(weights, target), total,
                target.usable_bytes, total <= target.usable_bytes, {}, 0.0, manifest.model.num_image_tokens,
                kv_dtype=manifest.kv_dtype, prefill_bytes=peak["prefill_io"], io_bytes=peak["io"],
                staging_bytes=peak["staging"], source="engines", requests=requests)


def format_plan(plan: Plan) -> str:
    gib = lambda b: f"{b / GIB:7.2f} GiB"  # noqa: E731
    estimate = " (estimate)" if plan.source == "estimate" else ""
    lines = [f"{plan.model} on {plan.target}, precision {plan.precision}, context {plan.context}, "
             f"{plan.images} image(s) per request ({2 * plan.images} CFG rows)"]
    lines += [f"  {'engine' if plan.source == 'engines' else 'weights'} {name:<21}{gib(b)}"
              for name, b in plan.weights_bytes.items()]
    lines += [f"  engines (weights) total{'':<6}{gib(sum(plan.weights_bytes.values()))}",
              f"  contexts (shared scratch){'':<4}{gib(plan.activation_bytes)}{estimate}",
              f"  KV cache{'':<21}{gib(plan.kv_cache_bytes)}",
              f"  KV spare + step buffers{'':<6}{gib(plan.runtime_buffers_bytes)}",
              f"  prefill buffers{'':<14}{gib(plan.prefill_bytes)}"]
    if plan.source == "engines":
        lines += [f"  other engines' IO buffers{'':<4}{gib(plan.io_bytes)}",
                  f"  pinned host staging{'':<10}{gib(plan.staging_bytes)}"]
    lines += [f"  total{'':<24}{gib(plan.total_bytes)}  of {gib(plan.usable_bytes).strip()} usable -> "
              + ("FITS" if plan.total_bytes <= plan.usable_bytes else "DOES NOT FIT"),
              f"  build peak{'':<19}{gib(plan.build_peak_bytes)}  (2 x the largest graph's weights + the builder "
              "workspace; while building only) -> " + ("fits" if plan.build_peak_bytes <= plan.usable_bytes
                                                          else "DOES NOT FIT: build refuses this target")]
    lines += [f"  decode floor {k}: {v:.1f} ms/step" for k, v in plan.decode_floor_ms.items()]
    if plan.flow:
        f = plan.flow
        lines.append(f"  flow step ({f['flow_tokens']} positions x {f['rows']} rows on a {f['prompt_tokens']}-token "
                     f"prompt, KV {gib(f['kv_cache_bytes']).strip()}): bandwidth floor "
                     f"{f['step_bandwidth_floor_ms']:.1f} ms, compute floor {f['step_compute_floor_ms']:.1f} ms")
    floors = plan.image_floors_s
    if floors:
        lines.append(f"  image floor: {plan.image_floor_s:.2f} s per image for {plan.image_steps} steps, "
                     f"{plan.image_bound}-bound (bandwidth {floors['bandwidth']:.2f} s, compute "
                     f"{floors['compute']:.2f} s at datasheet peak rates)")
    if plan.speculative:
        s = plan.speculative
        lines.append(f"  speculative verify pass ({s['window']} positions x {2 * plan.images} rows): floor "
                     f"{s['pass_ms']:.2f} ms vs {s['one_token_step_ms']:.2f} ms for one token (a pass is free up to "
                     f"a window of ~{s['free_window']:.0f}); memory above counts its buffers and logits")
    if plan.suggestion:
        lines.append(f"  would fit with: {plan.suggestion}")
    return "\n".join(lines)
