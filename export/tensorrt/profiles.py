"""TensorRT optimisation profiles for each exported graph, from the export's limits and the target's.

Decoder, text embedding: one profile for prefill (many positions) and one for decode (one position). The decoder
reads a KV cache of `capacity` slots (up to the context) and its mask covers capacity + new positions. Heads and
the generation embedding see one position per row. The VQ decoder runs one image at a time (lowest memory), so its
shape is fixed. Batch counts rows: 2 x the images per generation request (CFG rows), the same `images` and
`context` `janus-edge plan` is given (`request_limits`), never more than the export's limits.

Only the export's graphs get profiles, plus the sampler engines `build` adds: `sampler` always, `cfg_sampler` only
where the model has image tokens (JanusFlow generates latents: no codebook, no CFG sampler). JanusFlow's flow graphs
and the decoder's third profile (the 577-token flow step) come from `flow_profiles`.
"""

from __future__ import annotations

from janus_edge.runtime.manifest import Manifest, kv_input
from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.kv import request_capacity

from .flow_profiles import flow_profiles
from .targets import Target

Shape = list[int]
Profile = dict[str, list[Shape]]  # input name -> [min, opt, max]

SAMPLERS = ("sampler", "cfg_sampler")  # graphs `build` makes itself (export/tensorrt/sampler_graph.py)
TYPICAL_PROMPT = 640  # one image (578 tokens) and a question


def _same(shape: Shape) -> list[Shape]:
    return [shape, shape, shape]


def _valid(profile: dict[str, list[Shape]]) -> dict[str, list[Shape]]:
    """Clamps every opt dimension into [min, max] (small contexts or batches would otherwise invert them)."""
    return {name: [low, [min(max(o, lo), hi) for o, lo, hi in zip(opt, low, high)], high]
            for name, (low, opt, high) in profile.items()}


def request_limits(manifest: Manifest, target: Target, images: int | None = None,
                   context: int | None = None) -> tuple[int, int]:
    """(rows, context) the engines are built for: `images` per generation request (default 1) are 2 x images CFG
    rows; `context` defaults to the target's limit; neither beyond the export's."""
    if (images is not None and images < 1) or (context is not None and context < 1):
        raise RequestError(f"--images {images} / --context {context} must be positive",
                           "leave them out to build for one image and the target's context")
    rows = min(2 * (images or 1), manifest.limits.max_batch)
    return rows, min(context or target.max_context, manifest.limits.max_context)


def engine_profiles(manifest: Manifest, target: Target, images: int | None = None,
                    context: int | None = None) -> dict[str, list[Profile]]:
    model = manifest.model
    batch, context = request_limits(manifest, target, images, context)
    images = max(1, batch // 2)
    hidden, heads, head_dim = model.hidden_size, model.num_kv_heads, model.head_dim
    prompt = min(TYPICAL_PROMPT, context)
    size = model.image_size

    def kv(lo: int, opt: int, hi: int, batches=(1, 1, batch)) -> dict[str, list[Shape]]:
        shapes = [[b, heads, t, head_dim] for b, t in zip(batches, (lo, opt, hi))]
        return {kv_input(name): shapes for name in model.kv_names}

    prompt_slots = request_capacity(prompt, context)
    prefill = {"inputs_embeds": [[1, 1, hidden], [1, prompt, hidden], [batch, context, hidden]],
               "attention_mask": [[1, 2], [1, prompt_slots + prompt], [batch, 2 * context]],
               "position_ids": [[1, 1], [1, prompt], [batch, context]], **kv(1, prompt_slots, context)}
    cfg_rows = min(2, batch)
    image_slots = request_capacity(prompt + model.num_image_tokens, context)
    decode = {"inputs_embeds": [[1, 1, hidden], [cfg_rows, 1, hidden], [batch, 1, hidden]],
              "attention_mask": [[1, 2], [cfg_rows, image_slots + 1], [batch, context + 1]],
              "position_ids": [[1, 1], [cfg_rows, 1], [batch, 1]],
              **kv(1, image_slots, context, (1, cfg_rows, batch))}
    one_position = lambda width: {"hidden_states": [[1, 1, width], [cfg_rows, 1, width], [batch, 1, width]]}  # noqa
    profiles = {
        "vision_encoder": [{"pixel_values": [[1, 3, size, size], [1, 3, size, size], [images, 3, size, size]]}],
        "text_embedding": [{"input_ids": [[1, 1], [1, prompt], [batch, context]]},
                           {"input_ids": [[1, 1], [cfg_rows, 1], [batch, 1]]}],
        "generation_embedding": [{"image_ids": [[1, 1], [cfg_rows, 1], [batch, 1]]}],
        "decoder": [prefill, decode],
        "lm_head": [one_position(hidden)],
        "generation_head": [one_position(hidden)],
        "vq_decoder": [{"image_ids": _same([1, model.num_image_tokens])}],
        "sampler": [{"logits": [[1, model.vocab_size], [1, model.vocab_size], [batch, model.vocab_size]]}],
    }
    if model.codebook_size:
        profiles["cfg_sampler"] = [{"logits": [[cfg_rows, model.codebook_size], [cfg_rows, model.codebook_size],
                                               [batch, model.codebook_size]], "cfg_weight": _same([1])}]
    if manifest.flow is not None:
        flow = flow_profiles(manifest, batch, context)
        profiles["decoder"].append(flow.pop("decoder_flow_step")[0])
        profiles.update(flow)
    wanted = set(manifest.graphs) | set(SAMPLERS)
    return {graph: [_valid(p) for p in ranges] for graph, ranges in profiles.items() if graph in wanted}
