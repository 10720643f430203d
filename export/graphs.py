"""The seven graphs janus-edge exports: one small `torch.nn.Module` wrapper and one `GraphSpec` each.

A spec says everything the exporter, the manifest and `compare` need: the wrapper, the input and output names,
the symbolic dimensions, and how to make sample inputs. Sample sizes are >= 2 in every dynamic dimension, because
exporters specialise dimensions of size 0 or 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

NUM_IMAGE_TOKENS = 576
IMAGE_SIZE = 384


@dataclass
class Dims:
    """The model sizes the graphs' shapes are built from (read from the loaded model's config)."""

    hidden: int
    vocab: int
    codebook: int
    layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, model) -> "Dims":
        text = model.config.text_config
        return cls(hidden=text.hidden_size, vocab=text.vocab_size, codebook=model.config.vq_config.num_embeddings,
                   layers=text.num_hidden_layers, kv_heads=text.num_key_value_heads,
                   head_dim=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)


@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64"
    shape: list  # ints and symbolic names ("batch", "sequence", "capacity", "capacity_and_sequence")


@dataclass
class GraphSpec:
    name: str
    make_module: Callable[[nn.Module], nn.Module]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sample: Callable[[Dims, dict[str, int]], dict[str, torch.Tensor]] = field(repr=False)


class VisionEncoder(nn.Module):
    """SigLIP + aligner: pixel_values [B,3,384,384] -> image_embeds [B,576,D]."""

    def __init__(self, model):
        super().__init__()
        self.vision_model, self.aligner = model.model.vision_model, model.model.aligner

    def forward(self, pixel_values):
        return self.aligner(self.vision_model(pixel_values).last_hidden_state)


class TextEmbedding(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.embed_tokens = model.model.language_model.embed_tokens

    def forward(self, input_ids):
        return self.embed_tokens(input_ids)


class GenerationEmbedding(nn.Module):
    """gen_embed + gen_aligner: image token ids -> LLM input embeddings."""

    def __init__(self, model):
        super().__init__()
        self.embed, self.aligner = model.model.generation_embeddings, model.model.generation_aligner

    def forward(self, image_ids):
        return self.aligner(self.embed(image_ids))


class Decoder(nn.Module):
    """The Janus LLM as an in-place KV-cache decoder graph (see `llm_decoder`)."""

    def __init__(self, model):
        super().__init__()
        from .llm_decoder import InPlaceKVDecoder

        self.decoder = InPlaceKVDecoder(model.model.language_model)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        return self.decoder(inputs_embeds, attention_mask, position_ids, *past)


class LmHead(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.lm_head = model.lm_head

    def forward(self, hidden_states):
        return self.lm_head(hidden_states)


class GenerationHead(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.head = model.model.generation_head

    def forward(self, hidden_states):
        return self.head(hidden_states)


class VQDecoder(nn.Module):
    """Image token ids [B,576] -> pixels [B,3,384,384] in [-1,1] (not clipped)."""

    def __init__(self, model):
        super().__init__()
        self.vqmodel = model.model.vqmodel

    def forward(self, image_ids):
        return self.vqmodel.decode(image_ids)


def _ids(high: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, high, shape, dtype=torch.int64)


def _decoder_sample(d: Dims, s: dict[str, int]) -> dict[str, torch.Tensor]:
    """A cache of `capacity` slots holding `past_sequence` positions (the rest unused), then `sequence` new ones."""
    b, seq, past = s["batch"], s["sequence"], s["past_sequence"]
    capacity = s.get("capacity", past + 2)
    mask = torch.zeros(b, capacity + seq, dtype=torch.int64)
    mask[:, :past], mask[:, capacity:] = 1, 1
    if b > 1 and past + seq > 2:  # left padding in the last row, as batched prompts have
        mask[-1, 0 if past else capacity] = 0
    valid = torch.cat([mask[:, :past], mask[:, capacity:]], dim=1)
    position_ids = (valid.cumsum(-1) - 1).clamp(min=0)[:, past:]
    feeds = {"inputs_embeds": torch.randn(b, seq, d.hidden), "attention_mask": mask, "position_ids": position_ids}
    for name in kv_names(d.layers):
        feeds[f"past_key_values.{name}"] = torch.randn(b, d.kv_heads, capacity, d.head_dim)
    return feeds


def kv_names(layers: int) -> list[str]:
    return [f"{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def _kv_specs(d: Dims, prefix: str, length: str, dtype: str = "float32") -> list[TensorSpec]:
    return [TensorSpec(f"{prefix}.{name}", dtype, ["batch", d.kv_heads, length, d.head_dim])
            for name in kv_names(d.layers)]


def graph_specs(d: Dims, kv_dtype: str = "float32") -> list[GraphSpec]:
    """The specs of every graph, in the order the manifest lists them; the KV cache in `kv_dtype`."""
    hidden = ["batch", "sequence", d.hidden]
    return [
        GraphSpec("vision_encoder", VisionEncoder,
                  [TensorSpec("pixel_values", "float32", ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
                  [TensorSpec("image_embeds", "float32", ["batch", NUM_IMAGE_TOKENS, d.hidden])],
                  lambda d, s: {"pixel_values": torch.randn(s["batch"], 3, IMAGE_SIZE, IMAGE_SIZE)}),
        GraphSpec("text_embedding", TextEmbedding,
                  [TensorSpec("input_ids", "int64", ["batch", "sequence"])],
                  [TensorSpec("inputs_embeds", "float32", hidden)],
                  lambda d, s: {"input_ids": _ids(d.vocab, s["batch"], s["sequence"])}),
        GraphSpec("generation_embedding", GenerationEmbedding,
                  [TensorSpec("image_ids", "int64", ["batch", "sequence"])],
                  [TensorSpec("inputs_embeds", "float32", hidden)],
                  lambda d, s: {"image_ids": _ids(d.codebook, s["batch"], s["sequence"])}),
        GraphSpec("decoder", Decoder,
                  [TensorSpec("inputs_embeds", "float32", hidden),
                   TensorSpec("attention_mask", "int64", ["batch", "capacity_and_sequence"]),
                   TensorSpec("position_ids", "int64", ["batch", "sequence"])]
                  + _kv_specs(d, "past_key_values", "capacity", kv_dtype),
                  [TensorSpec("hidden_states", "float32", hidden)]
                  + _kv_specs(d, "new_key_values", "sequence", kv_dtype),
                  _decoder_sample),
        GraphSpec("lm_head", LmHead,
                  [TensorSpec("hidden_states", "float32", hidden)],
                  [TensorSpec("logits", "float32", ["batch", "sequence", d.vocab])],
                  lambda d, s: {"hidden_states": torch.randn(s["batch"], s["sequence"], d.hidden)}),
        GraphSpec("generation_head", GenerationHead,
                  [TensorSpec("hidden_states", "float32", hidden)],
                  [TensorSpec("logits", "float32", ["batch", "sequence", d.codebook])],
                  lambda d, s: {"hidden_states": torch.randn(s["batch"], s["sequence"], d.hidden)}),
        GraphSpec("vq_decoder", VQDecoder,
                  [TensorSpec("image_ids", "int64", ["batch", NUM_IMAGE_TOKENS])],
                  [TensorSpec("pixels", "float32", ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
                  lambda d, s: {"image_ids": _ids(d.codebook, s["batch"], NUM_IMAGE_TOKENS)}),
    ]
