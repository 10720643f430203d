"""The shape ranges each graph is built for on TensorRT: [min, opt, max] per dynamic input, from the export's
manifest, a row count and a context. Pure shape arithmetic, shared by `janus-edge build` (export/tensorrt/profiles.py
adds the target's limits) and ONNX Runtime's TensorRT execution provider (backends/ort_device.py).

Decoder, text embedding: one profile for prefill (many positions) and one for decode (one position). The decoder
reads a KV cache of `capacity` slots (up to the context) and its mask covers capacity + new positions. Where the
model has image tokens the decoder gets a third profile for speculative decoding's verify pass (1 to `MAX_WINDOW`
positions per row over the cache, opt `DEFAULT_WINDOW`), so a speculative request runs every pass on one profile
tuned for it. The generation embedding and head see up to a window of positions per row (opt one), the lm_head
one. The VQ decoder runs one image at a time (lowest memory), so its shape is fixed. Batch counts rows: up to the
export's max batch, which is 2 x the images per generation request (CFG rows). The first profile of every graph
covers every shape its later ones do (ONNX Runtime's TensorRT EP may run on profile 0 alone).

Only the export's graphs get profiles, plus the sampler engines `build` adds: `sampler` always, `cfg_sampler` only
where the model has image tokens (JanusFlow generates latents: no codebook, no CFG sampler).

JanusFlow: the flow step is unlike Janus-Pro's token loop: every step runs 577 positions (time embedding + 576 latent
tokens) on top of the prompt's cache, for 2 rows per image, so it is compute-bound. The decoder gets a third profile
for exactly that shape (past = a text prompt); the flow encoder and decoder run all rows at once; the VAE one image
at a time (the pipeline calls it so: lowest memory, and the SDXL VAE at 384x384 is the largest activation).
"""

from __future__ import annotations

from .kv import kv_input, request_capacity, tensor_shape
from .manifest import Manifest
from .pipelines.speculative import DEFAULT_WINDOW, MAX_WINDOW
from .tensor_names import (ATTENTION_MASK, CFG_SAMPLER, CFG_WEIGHT, HIDDEN_STATES, IMAGE_IDS, INPUT_IDS, INPUTS_EMBEDS,
                           LATENTS, LOGITS, PIXEL_VALUES, POSITION_IDS, SAMPLER, SAMPLERS, SKIP, TIME_EMBEDDING,
                           TIMESTEPS)

Shape = list[int]
Profile = dict[str, list[Shape]]  # input name -> [min, opt, max]

TYPICAL_PROMPT = 640  # one image (578 tokens) and a question
TYPICAL_TEXT_PROMPT = 64  # tokens of a generation prompt (no image); `plan` and `bench` size a flow request by it


def _same(shape: Shape) -> list[Shape]:
    return [shape, shape, shape]


def _valid(profile: Profile) -> Profile:
    """Clamps every opt dimension into [min, max] (small contexts or batches would otherwise invert them)."""
    return {name: [low, [min(max(o, lo), hi) for o, lo, hi in zip(opt, low, high)], high]
            for name, (low, opt, high) in profile.items()}


def graph_profiles(manifest: Manifest, batch: int, context: int) -> dict[str, list[Profile]]:
    """The profiles of every graph of `manifest` and of the samplers, for up to `batch` rows and `context`
    positions (both within the export's limits)."""
    model = manifest.model
    images = max(1, batch // 2)
    hidden = model.hidden_size
    prompt = min(TYPICAL_PROMPT, context)
    size = model.image_size

    def kv(lo: int, opt: int, hi: int, batches=(1, 1, batch)) -> dict[str, list[Shape]]:
        shapes = [tensor_shape(model, b, t) for b, t in zip(batches, (lo, opt, hi))]
        return {kv_input(name): shapes for name in model.kv_names}

    prompt_slots = request_capacity(prompt, context)
    prefill = {INPUTS_EMBEDS: [[1, 1, hidden], [1, prompt, hidden], [batch, context, hidden]],
               ATTENTION_MASK: [[1, 2], [1, prompt_slots + prompt], [batch, 2 * context]],
               POSITION_IDS: [[1, 1], [1, prompt], [batch, context]], **kv(1, prompt_slots, context)}
    cfg_rows = min(2, batch)
    image_slots = request_capacity(prompt + model.num_image_tokens, context)
    decode = {INPUTS_EMBEDS: [[1, 1, hidden], [cfg_rows, 1, hidden], [batch, 1, hidden]],
              ATTENTION_MASK: [[1, 2], [cfg_rows, image_slots + 1], [batch, context + 1]],
              POSITION_IDS: [[1, 1], [cfg_rows, 1], [batch, 1]],
              **kv(1, image_slots, context, (1, cfg_rows, batch))}
    window = min(MAX_WINDOW, context)  # a verify pass: up to a window of new positions on a cache of the context
    verify = {INPUTS_EMBEDS: [[1, 1, hidden], [cfg_rows, DEFAULT_WINDOW, hidden], [batch, window, hidden]],
              ATTENTION_MASK: [[1, 2], [cfg_rows, image_slots + DEFAULT_WINDOW], [batch, context + window]],
              POSITION_IDS: [[1, 1], [cfg_rows, DEFAULT_WINDOW], [batch, window]],
              **kv(1, image_slots, context, (1, cfg_rows, batch))}
    one_position = lambda width: {HIDDEN_STATES: [[1, 1, width], [cfg_rows, 1, width], [batch, 1, width]]}  # noqa
    profiles = {
        "vision_encoder": [{PIXEL_VALUES: [[1, 3, size, size], [1, 3, size, size], [images, 3, size, size]]}],
        "text_embedding": [{INPUT_IDS: [[1, 1], [1, prompt], [batch, context]]},
                           {INPUT_IDS: [[1, 1], [cfg_rows, 1], [batch, 1]]}],
        # up to a speculative window of positions per row (the verify pass); one position per row is the opt
        "generation_embedding": [{IMAGE_IDS: [[1, 1], [cfg_rows, 1], [batch, MAX_WINDOW]]}],
        "decoder": [prefill, decode],
        "lm_head": [one_position(hidden)],
        "generation_head": [{HIDDEN_STATES: [[1, 1, hidden], [cfg_rows, 1, hidden], [batch, MAX_WINDOW, hidden]]}],
        "vq_decoder": [{IMAGE_IDS: _same([1, model.num_image_tokens])}],
        SAMPLER: [{LOGITS: [[1, model.vocab_size], [1, model.vocab_size], [batch, model.vocab_size]]}],
    }
    if model.codebook_size:
        profiles["decoder"].append(verify)
        profiles[CFG_SAMPLER] = [{LOGITS: [[cfg_rows, model.codebook_size], [cfg_rows, model.codebook_size],
                                           [batch, model.codebook_size]], CFG_WEIGHT: _same([1])}]
    if manifest.flow is not None:
        flow = flow_profiles(manifest, batch, context)
        profiles["decoder"].append(flow.pop("decoder_flow_step")[0])
        profiles.update(flow)
    wanted = set(manifest.graphs) | set(SAMPLERS)
    return {graph: [_valid(p) for p in ranges] for graph, ranges in profiles.items() if graph in wanted}


def flow_profiles(manifest: Manifest, batch: int, context: int) -> dict[str, list[Profile]]:
    """Profiles of the flow graphs and the decoder's flow step; `batch` counts rows (2 per image)."""
    model = manifest.model
    encoder = manifest.graphs["flow_encoder"]
    latent = [int(d) for d in encoder.inputs[0].shape[1:]]
    skip = [int(d) for d in encoder.outputs[1].shape[1:]]
    tokens, hidden = int(encoder.outputs[0].shape[1]), model.hidden_size
    rows = min(2, batch)
    past = min(TYPICAL_TEXT_PROMPT, context - tokens)

    def rows_of(*shape: int) -> list[Shape]:
        return [[rows, *shape], [rows, *shape], [batch, *shape]]

    slots = request_capacity(past + tokens, context)  # the capacity the pipeline allocates for such a prompt
    kv = [tensor_shape(model, rows, 1), tensor_shape(model, rows, slots), tensor_shape(model, batch, context)]
    step = {INPUTS_EMBEDS: rows_of(tokens, hidden),
            ATTENTION_MASK: [[rows, tokens + 1], [rows, slots + tokens], [batch, context + tokens]],
            POSITION_IDS: rows_of(tokens),
            **{kv_input(name): kv for name in model.kv_names}}
    return {
        "decoder_flow_step": [step],  # the third decoder profile, beside prefill and decode
        "flow_encoder": [{LATENTS: rows_of(*latent), TIMESTEPS: rows_of()}],
        "flow_decoder": [{HIDDEN_STATES: rows_of(tokens, hidden), SKIP: rows_of(*skip),
                          TIME_EMBEDDING: rows_of(hidden)}],
        "vae_decoder": [{LATENTS: [[1, *latent]] * 3}],
    }
