"""The seven graphs janus-edge exports: one small `torch.nn.Module` wrapper and one `GraphSpec` each.

A spec says everything the exporter, the manifest and `compare` need: the wrapper, the inputs and outputs (the
manifest's own `Tensor`s, with symbolic dimensions), and how to make sample inputs for a `ModelInfo`. Sample sizes
are >= 2 in every dynamic dimension, because exporters specialise dimensions of size 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from janus_edge.runtime.kv import kv_form, kv_input
from janus_edge.runtime.manifest import ModelInfo, Tensor
from janus_edge.runtime.tensor_names import (ATTENTION_MASK, HIDDEN_STATES, IMAGE_EMBEDS, IMAGE_IDS, INPUT_IDS,
                                             INPUTS_EMBEDS, LOGITS, PIXEL_VALUES, PIXELS, POSITION_IDS)


@dataclass
class GraphSpec:
    name: str
    make_module: Callable[[object], nn.Module]  # the loaded `Checkpoint` -> the graph's module
    inputs: list[Tensor]
    outputs: list[Tensor]
    sample: Callable[[ModelInfo, dict[str, int]], dict[str, torch.Tensor]] = field(repr=False)
    batch_only: bool = False  # a heavy graph, whose size is all in fixed dimensions: `compare` varies its batch only
    # the decoder: exported without holding its weights (bound_weights), and run by `compare` one layer's weights at
    # a time; its modules must use their parameters in their own forward only (lazy_model.LazyWeights.on_call)
    streamed: bool = False


class VisionEncoder(nn.Module):
    """SigLIP + aligner: pixel_values [B,3,H,W] -> image_embeds [B,T,D] (384 x 384 -> 576 tokens in Janus)."""

    def __init__(self, model):
        super().__init__()
        self.vision_model, self.aligner = model.model.vision_model, model.model.aligner

    def forward(self, pixel_values):
        return self.aligner(self.vision_model(pixel_values).last_hidden_state)


class Submodule(nn.Module):
    """A graph that is one submodule of the model applied to the graph's one input (embedding table, head)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


class GenerationEmbedding(nn.Module):
    """gen_embed + gen_aligner: image token ids -> LLM input embeddings."""

    def __init__(self, model):
        super().__init__()
        self.embed, self.aligner = model.model.generation_embeddings, model.model.generation_aligner

    def forward(self, image_ids):
        return self.aligner(self.embed(image_ids))


class Decoder(nn.Module):
    """The Janus LLM as a decoder graph over the runtime's KV cache, in either form (see `llm_decoder`)."""

    def __init__(self, model, form: str = "in_place"):
        super().__init__()
        from .llm_decoder import KVCacheDecoder

        self.decoder = KVCacheDecoder(model.model.language_model, form)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        return self.decoder(inputs_embeds, attention_mask, position_ids, *past)


class VQDecoder(nn.Module):
    """Image token ids [B,T] -> pixels [B,3,H,W] in [-1,1] (not clipped)."""

    def __init__(self, model):
        super().__init__()
        self.vqmodel = model.model.vqmodel

    def forward(self, image_ids):
        return self.vqmodel.decode(image_ids)


def _ids(high: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, high, shape, dtype=torch.int64)


def _decoder_sample(m: ModelInfo, s: dict[str, int], form: str = "in_place") -> dict[str, torch.Tensor]:
    """A cache of `capacity` slots holding `past_sequence` positions (the rest unused), then `sequence` new ones;
    the mask as `form` takes it (in_place: every slot, then the new positions; ort_gqa: filled slots and new)."""
    b, seq, past = s["batch"], s["sequence"], s["past_sequence"]
    capacity = s.get("capacity", past + seq + 2)
    valid = torch.ones(b, past + seq, dtype=torch.int64)
    if b > 1 and past + seq > 2:  # left padding in the last row, as batched prompts have
        valid[-1, 0] = 0
    position_ids = (valid.cumsum(-1) - 1).clamp(min=0)[:, past:]
    mask = valid
    if not kv_form(form).writes_cache:  # the in_place mask covers every slot
        mask = torch.zeros(b, capacity + seq, dtype=torch.int64)
        mask[:, :past], mask[:, capacity:] = valid[:, :past], valid[:, past:]
    feeds = {INPUTS_EMBEDS: torch.randn(b, seq, m.hidden_size), ATTENTION_MASK: mask, POSITION_IDS: position_ids}
    for name in m.kv_names:
        feeds[kv_input(name)] = torch.randn(b, m.num_kv_heads, capacity, m.head_dim)
    return feeds


def decoder_spec(m: ModelInfo, make_module: Callable[[object], nn.Module], kv_dtype: str = "float32",
                 form: str = "in_place") -> GraphSpec:
    """The KV-cache decoder's spec (every family's: `make_module` wraps its LLM in a `llm_decoder.KVCacheDecoder`);
    the cache in `kv_dtype`, updated as `form` says (see llm_decoder)."""
    hidden = ["batch", "sequence", m.hidden_size]
    cache = lambda name, length: Tensor(name, kv_dtype, ["batch", m.num_kv_heads, length, m.head_dim])  # noqa: E731
    written = kv_form(form)
    mask, outputs = written.mask_length, [cache(written.output(name), written.output_length) for name in m.kv_names]
    return GraphSpec("decoder", make_module,
                     [Tensor(INPUTS_EMBEDS, "float32", hidden),
                      Tensor(ATTENTION_MASK, "int64", ["batch", mask]),
                      Tensor(POSITION_IDS, "int64", ["batch", "sequence"])]
                     + [cache(kv_input(name), "capacity") for name in m.kv_names],
                     [Tensor(HIDDEN_STATES, "float32", hidden)] + outputs,
                     lambda m, s: _decoder_sample(m, s, form), streamed=True)


def head_spec(name: str, head: Callable[[object], nn.Module], m: ModelInfo, width: int) -> GraphSpec:
    """A head graph: hidden states -> logits over `width` entries (`head` finds the module in a checkpoint)."""
    hidden = ["batch", "sequence", m.hidden_size]
    return GraphSpec(name, lambda checkpoint: Submodule(head(checkpoint)), [Tensor(HIDDEN_STATES, "float32", hidden)],
                     [Tensor(LOGITS, "float32", ["batch", "sequence", width])], _hidden_sample)


def vision_spec(m: ModelInfo, make_module: Callable[[object], nn.Module]) -> GraphSpec:
    """The vision encoder: images -> one LLM embedding per image token (every family's)."""
    size = m.image_size
    return GraphSpec("vision_encoder", make_module, [Tensor(PIXEL_VALUES, "float32", ["batch", 3, size, size])],
                     [Tensor(IMAGE_EMBEDS, "float32", ["batch", m.num_image_tokens, m.hidden_size])],
                     lambda m, s: {PIXEL_VALUES: torch.randn(s["batch"], 3, m.image_size, m.image_size)},
                     batch_only=True)


def graph_specs(m: ModelInfo, kv_dtype: str = "float32", form: str = "in_place") -> list[GraphSpec]:
    """The specs of every Janus-Pro graph, in the order the manifest lists them; the KV cache in `kv_dtype`, its
    form `form`."""
    hidden = ["batch", "sequence", m.hidden_size]
    size, tokens = m.image_size, m.num_image_tokens
    return [
        vision_spec(m, lambda checkpoint: VisionEncoder(checkpoint.model)),
        GraphSpec("text_embedding", lambda checkpoint: Submodule(checkpoint.model.model.language_model.embed_tokens),
                  [Tensor(INPUT_IDS, "int64", ["batch", "sequence"])],
                  [Tensor(INPUTS_EMBEDS, "float32", hidden)],
                  lambda m, s: {INPUT_IDS: _ids(m.vocab_size, s["batch"], s["sequence"])}),
        GraphSpec("generation_embedding", lambda checkpoint: GenerationEmbedding(checkpoint.model),
                  [Tensor(IMAGE_IDS, "int64", ["batch", "sequence"])],
                  [Tensor(INPUTS_EMBEDS, "float32", hidden)],
                  lambda m, s: {IMAGE_IDS: _ids(m.codebook_size, s["batch"], s["sequence"])}),
        decoder_spec(m, lambda checkpoint: Decoder(checkpoint.model, form), kv_dtype, form),
        head_spec("lm_head", lambda checkpoint: checkpoint.model.lm_head, m, m.vocab_size),
        head_spec("generation_head", lambda checkpoint: checkpoint.model.model.generation_head, m, m.codebook_size),
        GraphSpec("vq_decoder", lambda checkpoint: VQDecoder(checkpoint.model),
                  [Tensor(IMAGE_IDS, "int64", ["batch", tokens])],
                  [Tensor(PIXELS, "float32", ["batch", 3, size, size])],
                  lambda m, s: {IMAGE_IDS: _ids(m.codebook_size, s["batch"], m.num_image_tokens)}, batch_only=True),
    ]


def _hidden_sample(m: ModelInfo, s: dict[str, int]) -> dict[str, torch.Tensor]:
    return {HIDDEN_STATES: torch.randn(s["batch"], s["sequence"], m.hidden_size)}
