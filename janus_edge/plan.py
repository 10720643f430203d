"""`janus-edge plan`: will a model fit a target at a precision, context and batch, and how fast can it be?

All numbers are computed from the architecture's dimensions (parameter counts per graph, bytes per weight for each
precision scheme, KV cache per token) and the target's memory and bandwidth. Decode is memory-bound, so the
latency floor of a step is the bytes it must read (weights of the decoder and the head, plus the KV cache) divided
by bandwidth. Activation figures are estimates (documented in docs/BENCHMARKS.md); weights and KV are exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from janus_edge.runtime import sizing
from janus_edge.runtime.errors import RequestError

from janus_edge.export.tensorrt.targets import GIB, Target

NUM_IMAGE_TOKENS = 576
LLM_GRAPHS = ("text_embedding", "decoder", "lm_head", "generation_head")
WEIGHT_ONLY_GRAPHS = ("decoder", "lm_head", "generation_head")  # the text embedding stays fp16 (see PRECISION.md)
VISUAL_GRAPHS = ("vision_encoder", "vq_decoder")
SCHEMES = ("fp32", "fp16", "int8", "w8", "w4")
W4_BLOCK = 128


@dataclass(frozen=True)
class Dims:
    """Architecture dimensions (defaults: the shared parts of every Janus-Pro size)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: int = 128
    vision_width: int = 1024
    vision_layers: int = 24
    vision_mlp: int = 4096
    codebook: int = 16384
    codebook_dim: int = 8
    vq_channels: int = 128
    vq_multipliers: tuple = (1, 1, 2, 2, 4)
    vq_latent: int = 256
    vq_res_blocks: int = 2


MODELS = {
    "janus-pro-1b": Dims(hidden=2048, intermediate=5632, layers=24, heads=16, kv_heads=16, vocab=102400),
    "janus-pro-7b": Dims(hidden=4096, intermediate=11008, layers=30, heads=32, kv_heads=32, vocab=102400),
}


def dims_from_config(config) -> Dims:
    """Dims of a transformers `JanusConfig` (e.g. read from a checkpoint directory)."""
    text, vision, vq = config.text_config, config.vision_config, config.vq_config
    return Dims(hidden=text.hidden_size, intermediate=text.intermediate_size, layers=text.num_hidden_layers,
                heads=text.num_attention_heads, kv_heads=text.num_key_value_heads, vocab=text.vocab_size,
                head_dim=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
                vision_width=vision.hidden_size, vision_layers=vision.num_hidden_layers,
                vision_mlp=int(vision.hidden_size * vision.mlp_ratio), codebook=vq.num_embeddings,
                codebook_dim=vq.embed_dim, vq_channels=vq.base_channels, vq_multipliers=tuple(vq.channel_multiplier),
                vq_latent=vq.latent_channels, vq_res_blocks=vq.num_res_blocks)


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _resblock(c_in: int, c_out: int) -> int:
    conv = c_in * c_out * 9 + c_out + c_out * c_out * 9 + c_out
    return 2 * c_in + 2 * c_out + conv + (_linear(c_in, c_out) if c_in != c_out else 0)


def _attnblock(c: int) -> int:
    return 2 * c + 4 * _linear(c, c)


def graph_parameters(d: Dims) -> dict[str, int]:
    """Parameter count of each exported graph."""
    attention = _linear(d.hidden, d.heads * d.head_dim, False) + 2 * _linear(d.hidden, d.kv_heads * d.head_dim, False) \
        + _linear(d.heads * d.head_dim, d.hidden, False)
    layer = attention + 3 * d.intermediate * d.hidden + 2 * d.hidden
    w = d.vision_width
    vision_layer = 4 * w + 3 * _linear(w, w) + _linear(w, w) + _linear(w, d.vision_mlp) + _linear(d.vision_mlp, w)
    vision = 3 * 16 * 16 * w + w + NUM_IMAGE_TOKENS * w + d.vision_layers * vision_layer + 2 * w
    aligner = _linear(w, d.hidden) + _linear(d.hidden, d.hidden)
    channels = [d.vq_channels * m for m in d.vq_multipliers]
    c = channels[-1]
    vq = d.codebook * d.codebook_dim + _linear(d.codebook_dim, d.vq_latent) + d.vq_latent * c * 9 + c
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
        "text_embedding": d.vocab * d.hidden,
        "generation_embedding": d.codebook * d.codebook_dim + _linear(d.codebook_dim, d.hidden)
        + _linear(d.hidden, d.hidden),
        "decoder": d.layers * layer + d.hidden,
        "lm_head": d.vocab * d.hidden,
        "generation_head": _linear(d.hidden, d.hidden) + _linear(d.hidden, d.codebook),
        "vq_decoder": vq,
    }


def parse_precision(precision: str) -> dict[str, str]:
    """'fp16', 'int8', 'w4', 'int8,w4', ... -> the scheme of each graph (unnamed graphs are fp16; fp32 is alone)."""
    parts = [p.strip() for p in precision.split(",") if p.strip()]
    if not parts or any(p not in SCHEMES for p in parts) or ("fp32" in parts and len(parts) > 1) or \
            ("w8" in parts and "w4" in parts):
        raise RequestError(f"precision {precision!r} is not a scheme janus-edge builds",
                           "use fp32, fp16, int8, w8, w4 or a combination such as int8,w4")
    if parts == ["fp32"]:
        return {g: "fp32" for g in VISUAL_GRAPHS + LLM_GRAPHS + ("generation_embedding",)}
    schemes = {g: "fp16" for g in VISUAL_GRAPHS + LLM_GRAPHS + ("generation_embedding",)}
    for part in parts:
        if part == "int8":
            schemes.update({g: "int8" for g in VISUAL_GRAPHS})
        elif part in ("w8", "w4"):
            schemes.update({g: part for g in WEIGHT_ONLY_GRAPHS})
    return schemes


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
    suggestion: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def kv_bytes_per_token(d: Dims, kv_dtype_bytes: int) -> int:
    return 2 * d.layers * d.kv_heads * d.head_dim * kv_dtype_bytes


def kv_dtype(decoder_scheme: str) -> str:
    """The KV cache dtype an export with this decoder scheme holds: fp16 from `export --precision fp16`; fp32 from
    an fp32 export, and from `calibrate` (weight-only schemes keep the fp32 graph's activations and cache)."""
    return "float16" if decoder_scheme == "fp16" else "float32"


def kv_cache_bytes(d: Dims, decoder_scheme: str, rows: int, context: int) -> int:
    """What a backend allocates for `rows` rows of a request that may fill `context`: `runtime.sizing`'s numbers."""
    capacity = sizing.request_capacity(context, context)
    return sizing.kv_cache_bytes(d.layers, d.kv_heads, d.head_dim, kv_dtype(decoder_scheme), rows, capacity)


def runtime_buffers_bytes(d: Dims, decoder_scheme: str, rows: int, context: int) -> int:
    """What the TensorRT backend allocates next to the cache for such a request (`runtime.sizing`'s numbers): the
    spare cache tensor for bucket crossings and the decode step's IO buffers. Its engines have one execution context
    each, so activations count once (the largest of prefill, vision and VQ, below)."""
    capacity, dtype = sizing.request_capacity(context, context), kv_dtype(decoder_scheme)
    io = sizing.decode_io_bytes(d.layers, d.kv_heads, d.head_dim, d.hidden, dtype, rows, capacity)
    return sizing.kv_spare_bytes(d.kv_heads, d.head_dim, dtype, rows, capacity) + sum(io.values())


def make_plan(model: str, d: Dims, target: Target, precision: str, context: int, images: int,
              suggest: bool = True) -> Plan:
    if context < NUM_IMAGE_TOKENS + 16 or images < 1:
        raise RequestError(f"context {context} / images {images} cannot hold one request",
                           f"use a context >= {NUM_IMAGE_TOKENS + 16} and at least 1 image")
    schemes = parse_precision(precision)
    params = graph_parameters(d)
    weights = {g: params[g] * bytes_per_weight(schemes[g]) for g in params}
    act_bytes = 4 if schemes["decoder"] == "fp32" else 2
    rows = 2 * images  # CFG generation is the widest request; understanding uses 1 row per conversation
    kv = kv_cache_bytes(d, schemes["decoder"], rows, context)
    buffers = runtime_buffers_bytes(d, schemes["decoder"], rows, context)
    prefill = context * (2 * d.intermediate + 4 * d.hidden) * act_bytes  # MLP gate/up and a few hidden copies
    vq = 3 * d.vq_channels * 384 * 384 * act_bytes  # two full-resolution feature maps and a temporary, per image
    vision = images * NUM_IMAGE_TOKENS * (d.vision_mlp + 4 * d.vision_width) * act_bytes
    activations = max(prefill, vq, vision) + rows * (d.vocab + d.codebook) * 4
    workspace = target.workspace_gib * GIB
    total = sum(weights.values()) + kv + buffers + activations + workspace
    step_weights = weights["decoder"] + weights["generation_head"]
    understanding_weights = weights["decoder"] + weights["lm_head"]
    bandwidth = target.bandwidth_gbs * 1e9
    kv_token = sizing.kv_bytes_per_position(d.layers, d.kv_heads, d.head_dim, kv_dtype(schemes["decoder"]))
    mean_length = context // 2
    floors = {"understanding_b1": (understanding_weights + kv_token * mean_length) / bandwidth * 1e3,
              f"generation_b{rows}": (step_weights + kv_token * mean_length * rows) / bandwidth * 1e3}
    image_floor = sum((step_weights + kv_token * (NUM_IMAGE_TOKENS // 2 + 64) * rows) / bandwidth
                      for _ in range(NUM_IMAGE_TOKENS))
    plan = Plan(model, target.name, precision, context, images, weights, kv, buffers, activations, workspace, total,
                target.usable_bytes, total <= target.usable_bytes, floors, image_floor)
    if not target.fp8 and "fp8" in precision:
        plan.notes.append(f"{target.name} has no FP8")
    if suggest and not plan.fits:
        plan.suggestion = _suggest(model, d, target, precision, context, images)
    return plan


def _suggest(model: str, d: Dims, target: Target, precision: str, context: int, images: int) -> str:
    """The first change that fits, trying precision, then context, then images per request."""
    for candidate in ("fp16", "w8", "int8,w8", "w4", "int8,w4"):
        if candidate != precision and make_plan(model, d, target, candidate, context, images, False).fits:
            return f"--precision {candidate}"
    for candidate in (2048, 1024):
        for scheme in (precision, "int8,w4"):
            if candidate < context and make_plan(model, d, target, scheme, candidate, images, False).fits:
                return f"--precision {scheme} --context {candidate}"
    for n in range(images - 1, 0, -1):
        if make_plan(model, d, target, "int8,w4", min(context, 1024), n, False).fits:
            return f"--precision int8,w4 --context {min(context, 1024)} --images {n}"
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
    lines.append(f"  image floor: {plan.image_floor_s:.1f} s for 576 steps")
    if plan.suggestion:
        lines.append(f"  would fit with: {plan.suggestion}")
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)
