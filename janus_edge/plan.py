"""`janus-edge plan`: will a model fit a target at a precision, context and batch, and how fast can it be?

All numbers are computed from the architecture's dimensions (parameter counts per graph, bytes per weight for each
precision scheme, KV cache per token) and the target's memory and bandwidth. Decode is memory-bound, so the
latency floor of a step is the bytes it must read (weights of the decoder and the head, plus the KV cache) divided
by bandwidth. Activation figures are estimates (documented in docs/BENCHMARKS.md); weights and KV are exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from janus_edge.export.configs import PRESETS
from janus_edge.export.precision import Precision, parse_precision
from janus_edge.export.tensorrt.targets import GIB, Target
from janus_edge.runtime import sizing
from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import ModelInfo, kv_output

MODELS = {name: PRESETS[name] for name in ("janus-pro-1b", "janus-pro-7b")}
W4_BLOCK = 128
SMALLEST = "int8,w4,fp16"  # every graph reduced: the last precision a suggestion tries
ARCHITECTURE = ("intermediate_size", "num_heads", "vision_hidden_size", "vision_layers", "vision_intermediate_size",
                "codebook_dim", "vq_base_channels", "vq_channel_multiplier", "vq_latent_channels", "vq_res_blocks")


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _resblock(c_in: int, c_out: int) -> int:
    conv = c_in * c_out * 9 + c_out + c_out * c_out * 9 + c_out
    return 2 * c_in + 2 * c_out + conv + (_linear(c_in, c_out) if c_in != c_out else 0)


def _attnblock(c: int) -> int:
    return 2 * c + 4 * _linear(c, c)


def graph_parameters(d: ModelInfo) -> dict[str, int]:
    """Parameter count of each exported graph."""
    missing = [name for name in ARCHITECTURE if getattr(d, name) is None]
    if missing:
        raise RequestError(f"the {d.family} model description lacks {', '.join(missing)}, which plan counts",
                           "plan a Janus or Janus-Pro checkpoint directory or preset (janus-pro-1b, janus-pro-7b)")
    hidden, heads, kv_heads, head_dim = d.hidden_size, d.num_heads, d.num_kv_heads, d.head_dim
    attention = _linear(hidden, heads * head_dim, False) + 2 * _linear(hidden, kv_heads * head_dim, False) \
        + _linear(heads * head_dim, hidden, False)
    layer = attention + 3 * d.intermediate_size * hidden + 2 * hidden
    w, mlp, patch = d.vision_hidden_size, d.vision_intermediate_size, d.patch_size
    vision_layer = 4 * w + 3 * _linear(w, w) + _linear(w, w) + _linear(w, mlp) + _linear(mlp, w)
    vision = 3 * patch * patch * w + w + d.num_image_tokens * w + d.vision_layers * vision_layer + 2 * w
    aligner = _linear(w, hidden) + _linear(hidden, hidden)
    channels = [d.vq_base_channels * m for m in d.vq_channel_multiplier]
    c = channels[-1]
    vq = d.codebook_size * d.codebook_dim + _linear(d.codebook_dim, d.vq_latent_channels) \
        + d.vq_latent_channels * c * 9 + c
    vq += 2 * _resblock(c, c) + _attnblock(c)
    for level in reversed(range(len(channels))):
        for _ in range(d.vq_res_blocks + 1):
            vq += _resblock(c, channels[level]) + (_attnblock(channels[level]) if level == len(channels) - 1 else 0)
            c = channels[level]
        if level:
            vq += c * c * 9 + c
    vq += 2 * c + c * 3 * 9 + 3
    return {
        "vision_encoder": vision + aligner,
        "text_embedding": d.vocab_size * hidden,
        "generation_embedding": d.codebook_size * d.codebook_dim + _linear(d.codebook_dim, hidden)
        + _linear(hidden, hidden),
        "decoder": d.num_layers * layer + hidden,
        "lm_head": d.vocab_size * hidden,
        "generation_head": _linear(hidden, hidden) + _linear(hidden, d.codebook_size),
        "vq_decoder": vq,
    }


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
    kv_cache_bytes: float
    runtime_buffers_bytes: float  # TensorRT backend: the KV spare tensor and the decode step's IO buffers
    activation_bytes: float
    workspace_bytes: float
    total_bytes: float
    usable_bytes: float
    fits: bool
    decode_floor_ms: dict[str, float]
    image_floor_s: float
    image_steps: int  # decode steps per image (its image tokens)
    graph_precisions: dict[str, str] = field(default_factory=dict)  # what `calibrate`/`export` make of each graph
    kv_dtype: str = "float32"
    suggestion: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def kv_bytes_per_token(d: ModelInfo, kv_dtype_bytes: int) -> int:
    return 2 * d.num_layers * d.num_kv_heads * d.head_dim * kv_dtype_bytes


def kv_cache_bytes(d: ModelInfo, kv_dtype: str, rows: int, context: int) -> int:
    """What a backend allocates for `rows` rows of a request that may fill `context`: `runtime.sizing`'s numbers."""
    capacity = sizing.request_capacity(context, context)
    return sizing.kv_cache_bytes(d.num_layers, d.num_kv_heads, d.head_dim, kv_dtype, rows, capacity)


def runtime_buffers_bytes(d: ModelInfo, kv_dtype: str, rows: int, context: int) -> int:
    """What the TensorRT backend allocates next to the cache for such a request (`runtime.sizing`'s numbers): the
    spare cache tensor for bucket crossings and the decode step's IO buffers. Its engines have one execution context
    each, so activations count once (the largest of prefill, vision and VQ, below)."""
    capacity = sizing.request_capacity(context, context)
    io = sizing.decode_io_bytes([kv_output(n) for n in d.kv_names], d.num_kv_heads, d.head_dim, d.hidden_size,
                                kv_dtype, rows, capacity)
    return sizing.kv_spare_bytes(d.num_kv_heads, d.head_dim, kv_dtype, rows, capacity) + sum(io.values())


def _itemsize(precision: Precision, graph: str) -> int:
    return 2 if precision.activation_dtype(graph) == "float16" else 4


def make_plan(model: str, d: ModelInfo, target: Target, precision: str, context: int, images: int,
              suggest: bool = True) -> Plan:
    tokens = d.num_image_tokens
    if context < tokens + 16 or images < 1:
        raise RequestError(f"context {context} / images {images} cannot hold one request",
                           f"use a context >= {tokens + 16} and at least 1 image")
    chosen = parse_precision(precision)
    params = graph_parameters(d)
    schemes = {g: chosen.graph(g) for g in params}
    weights = {g: params[g] * bytes_per_weight(schemes[g]) for g in params}
    rows = 2 * images  # CFG generation is the widest request; understanding uses 1 row per conversation
    kv = kv_cache_bytes(d, chosen.kv_dtype, rows, context)
    buffers = runtime_buffers_bytes(d, chosen.kv_dtype, rows, context)
    # MLP gate/up and a few hidden copies; two full-resolution VQ feature maps and a temporary, per image
    prefill = context * (2 * d.intermediate_size + 4 * d.hidden_size) * _itemsize(chosen, "decoder")
    vq = 3 * d.vq_base_channels * d.image_size ** 2 * _itemsize(chosen, "vq_decoder")
    vision = images * tokens * (d.vision_intermediate_size + 4 * d.vision_hidden_size) \
        * _itemsize(chosen, "vision_encoder")
    activations = max(prefill, vq, vision) + rows * (d.vocab_size + d.codebook_size) * 4
    workspace = target.workspace_gib * GIB
    total = sum(weights.values()) + kv + buffers + activations + workspace
    step_weights = weights["decoder"] + weights["generation_head"]
    understanding_weights = weights["decoder"] + weights["lm_head"]
    bandwidth = target.bandwidth_gbs * 1e9
    kv_token = sizing.kv_bytes_per_position(d.num_layers, d.num_kv_heads, d.head_dim, chosen.kv_dtype)
    mean_length = context // 2
    floors = {"understanding_b1": (understanding_weights + kv_token * mean_length) / bandwidth * 1e3,
              f"generation_b{rows}": (step_weights + kv_token * mean_length * rows) / bandwidth * 1e3}
    image_floor = sum((step_weights + kv_token * (tokens // 2 + 64) * rows) / bandwidth for _ in range(tokens))
    plan = Plan(model, target.name, precision, context, images, weights, kv, buffers, activations, workspace, total,
                target.usable_bytes, total <= target.usable_bytes, floors, image_floor, tokens, schemes,
                chosen.kv_dtype)
    if suggest and not plan.fits:
        plan.suggestion = _suggest(model, d, target, precision, context, images)
    return plan


def _suggest(model: str, d: ModelInfo, target: Target, precision: str, context: int, images: int) -> str:
    """The first change that fits, trying precision, then context, then images per request."""
    for candidate in ("fp16", "w8,fp16", "int8,w8,fp16", "w4,fp16", SMALLEST):
        if candidate != precision and make_plan(model, d, target, candidate, context, images, False).fits:
            return f"--precision {candidate}"
    for candidate in (2048, 1024):
        for scheme in (precision, SMALLEST):
            if candidate < context and make_plan(model, d, target, scheme, candidate, images, False).fits:
                return f"--precision {scheme} --context {candidate}"
    for n in range(images - 1, 0, -1):
        if make_plan(model, d, target, SMALLEST, min(context, 1024), n, False).fits:
            return f"--precision {SMALLEST} --context {min(context, 1024)} --images {n}"
    return "nothing fits: choose a smaller model or a larger target"


def format_plan(plan: Plan) -> str:
    gib = lambda b: f"{b / GIB:7.2f} GiB"  # noqa: E731
    lines = [f"{plan.model} on {plan.target}, precision {plan.precision}, context {plan.context}, "
             f"{plan.images} image(s) per request ({2 * plan.images} CFG rows)"]
    lines += [f"  weights {name:<21}{gib(b)}" for name, b in plan.weights_bytes.items()]
    lines += [f"  weights total{'':<16}{gib(sum(plan.weights_bytes.values()))}",
              f"  KV cache{'':<21}{gib(plan.kv_cache_bytes)}",
              f"  KV spare + step buffers{'':<6}{gib(plan.runtime_buffers_bytes)}",
              f"  activations (estimate){'':<7}{gib(plan.activation_bytes)}",
              f"  TensorRT workspace{'':<11}{gib(plan.workspace_bytes)}",
              f"  total{'':<24}{gib(plan.total_bytes)}  of {gib(plan.usable_bytes).strip()} usable -> "
              + ("FITS" if plan.fits else "DOES NOT FIT")]
    lines += [f"  decode floor {k}: {v:.1f} ms/step" for k, v in plan.decode_floor_ms.items()]
    lines.append(f"  image floor: {plan.image_floor_s:.1f} s for {plan.image_steps} steps")
    if plan.suggestion:
        lines.append(f"  would fit with: {plan.suggestion}")
    return "\n".join(lines)
