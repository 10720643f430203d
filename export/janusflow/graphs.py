"""JanusFlow's seven graphs. Each wrapper takes the loaded `FlowCheckpoint` (the model and its VAE).

    vision_encoder   pixel_values [B,3,384,384] -> image_embeds [B,576,D] (SigLIP + one-layer aligner)
    text_embedding   input_ids [B,S] -> [B,S,D]; <begin_of_image> embeds as JanusFlow's learned begin-of-
                     understanding vector, which is what DeepSeek's prepare_inputs_embeds writes there before
                     each understanding image (generation drops that token, so it never meets this graph)
    decoder          the shared in-place KV-cache decoder (export/llm_decoder.py) on JanusFlow's LlamaModel
    lm_head          hidden_states -> logits
    flow_encoder     (latents [B,4,48,48], timesteps [B]) -> inputs_embeds [B,577,D] (time embedding, then the
                     576 aligned latent tokens), skip [B,C,24,24], time_embedding [B,D]
    flow_decoder     (hidden_states [B,577,D] of those 577 positions, skip, time_embedding) -> velocity [B,4,48,48]
    vae_decoder      latents [B,4,48,48] -> pixels [B,3,384,384] in [-1,1] (decode of z / scaling_factor; fp32)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from janus_edge.runtime.manifest import ModelInfo, Tensor

from ..configs import llm_fields
from ..graphs import GraphSpec, Submodule, decoder_spec
from ..llm_decoder import KVCacheDecoder
from .checkpoint import latent_size
from .presets import FP32_ONLY


def flow_model_info(checkpoint) -> ModelInfo:
    """The `ModelInfo` of a loaded JanusFlow checkpoint (no VQ model: codebook_size 0)."""
    config = checkpoint.model.config
    vision = config.vision
    size = vision["image_size"]
    return ModelInfo(family="janusflow", source_format="original", codebook_size=0, image_size=size,
                     num_image_tokens=(size // vision["patch_size"]) ** 2, **llm_fields(config.language),
                     vision_hidden_size=vision["width"], vision_layers=vision["layers"], vision_heads=vision["heads"],
                     vision_intermediate_size=int(vision["width"] * vision["mlp_ratio"]))


def flow_tokens(m: ModelInfo) -> int:
    """Positions of one flow step: the time embedding, then the latent's tokens (one per image token)."""
    return m.num_image_tokens + 1


@dataclass
class FlowGeometry:
    """What JanusFlow's flow graphs add to the model description: the latent and the skip features' shapes."""

    latent_channels: int
    latent_size: int
    skip_channels: int
    begin_of_image_id: int

    @classmethod
    def of(cls, checkpoint) -> "FlowGeometry":
        config = checkpoint.model.config
        return cls(latent_channels=config.encoder["input_channels"], latent_size=latent_size(config),
                   skip_channels=config.encoder["block_out_channels"][-1],
                   begin_of_image_id=checkpoint.model.begin_of_image_id)


class VisionEncoder(nn.Module):
    def __init__(self, checkpoint):
        super().__init__()
        model = checkpoint.model
        self.encoder, self.aligner = model.vision_und_enc_model, model.vision_und_enc_aligner

    def forward(self, pixel_values):
        return self.aligner(self.encoder(pixel_values))


class TextEmbedding(nn.Module):
    def __init__(self, checkpoint):
        super().__init__()
        model = checkpoint.model
        self.embed_tokens, self.begin = model.language_model.get_input_embeddings(), model.beg_of_und_embed
        self.begin_id = model.begin_of_image_id

    def forward(self, input_ids):
        return torch.where((input_ids == self.begin_id)[..., None], self.begin[0], self.embed_tokens(input_ids))


class FlowEncoder(nn.Module):
    def __init__(self, checkpoint):
        super().__init__()
        self.model = checkpoint.model

    def forward(self, latents, timesteps):
        return self.model.encode_latents(latents, timesteps)


class FlowDecoder(nn.Module):
    def __init__(self, checkpoint):
        super().__init__()
        self.model = checkpoint.model

    def forward(self, hidden_states, skip, time_embedding):
        return self.model.velocity(hidden_states[:, 1:], skip, time_embedding)


class VaeDecoder(nn.Module):
    def __init__(self, checkpoint):
        super().__init__()
        self.vae = checkpoint.vae
        self.scaling = float(checkpoint.vae.config.scaling_factor)

    def forward(self, latents):
        return self.vae.decode(latents / self.scaling).sample


def flow_graph_specs(m: ModelInfo, g: FlowGeometry, kv_dtype: str = "float32") -> list[GraphSpec]:
    """The specs of every JanusFlow graph, in the order the manifest lists them; the KV cache in `kv_dtype`."""
    hidden, tokens, size = ["batch", "sequence", m.hidden_size], flow_tokens(m), m.image_size
    latent = ["batch", g.latent_channels, g.latent_size, g.latent_size]
    grid = g.latent_size // 2
    skip = ["batch", g.skip_channels, grid, grid]
    decoder = replace(decoder_spec(m, kv_dtype), make_module=lambda checkpoint: KVCacheDecoder(
        checkpoint.model.language_model.model))

    def text(m: ModelInfo, s: dict[str, int]) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, m.vocab_size, (s["batch"], s["sequence"]))
        ids[0, 0] = g.begin_of_image_id
        return {"input_ids": ids}

    def latents(s: dict[str, int]) -> torch.Tensor:
        return torch.randn(s["batch"], g.latent_channels, g.latent_size, g.latent_size)

    return [
        GraphSpec("vision_encoder", VisionEncoder,
                  [Tensor("pixel_values", "float32", ["batch", 3, size, size])],
                  [Tensor("image_embeds", "float32", ["batch", m.num_image_tokens, m.hidden_size])],
                  lambda m, s: {"pixel_values": torch.randn(s["batch"], 3, m.image_size, m.image_size)}),
        GraphSpec("text_embedding", TextEmbedding, [Tensor("input_ids", "int64", ["batch", "sequence"])],
                  [Tensor("inputs_embeds", "float32", hidden)], text),
        decoder,
        GraphSpec("lm_head", lambda checkpoint: Submodule(checkpoint.model.language_model.lm_head),
                  [Tensor("hidden_states", "float32", hidden)],
                  [Tensor("logits", "float32", ["batch", "sequence", m.vocab_size])],
                  lambda m, s: {"hidden_states": torch.randn(s["batch"], s["sequence"], m.hidden_size)}),
        GraphSpec("flow_encoder", FlowEncoder,
                  [Tensor("latents", "float32", latent), Tensor("timesteps", "float32", ["batch"])],
                  [Tensor("inputs_embeds", "float32", ["batch", tokens, m.hidden_size]),
                   Tensor("skip", "float32", skip), Tensor("time_embedding", "float32", ["batch", m.hidden_size])],
                  lambda m, s: {"latents": latents(s), "timesteps": torch.rand(s["batch"]) * 1000}),
        GraphSpec("flow_decoder", FlowDecoder,
                  [Tensor("hidden_states", "float32", ["batch", tokens, m.hidden_size]),
                   Tensor("skip", "float32", skip), Tensor("time_embedding", "float32", ["batch", m.hidden_size])],
                  [Tensor("velocity", "float32", latent)],
                  lambda m, s: {"hidden_states": torch.randn(s["batch"], tokens, m.hidden_size),
                                "skip": torch.randn(s["batch"], g.skip_channels, grid, grid),
                                "time_embedding": torch.randn(s["batch"], m.hidden_size)}),
        GraphSpec("vae_decoder", VaeDecoder, [Tensor("latents", "float32", latent)],
                  [Tensor("pixels", "float32", ["batch", 3, size, size])],
                  lambda m, s: {"latents": latents(s)}),
    ]
