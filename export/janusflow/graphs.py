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

import torch
from torch import nn

from janus_edge.runtime.manifest import ModelInfo, Tensor
from janus_edge.runtime.tensor_names import (HIDDEN_STATES, INPUT_IDS, INPUTS_EMBEDS, LATENTS, PIXELS, SKIP,
                                             TIME_EMBEDDING, TIMESTEPS, VELOCITY)

from ..graphs import GraphSpec, decoder_spec, head_spec, vision_spec
from ..llm_decoder import KVCacheDecoder
from .presets import flow_tokens


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


def flow_graph_specs(m: ModelInfo, begin_of_image_id: int, kv_dtype: str = "float32") -> list[GraphSpec]:
    """The specs of every JanusFlow graph, in the order the manifest lists them; the KV cache in `kv_dtype`. The
    text embedding's samples hold `begin_of_image_id`, which it embeds as the begin-of-understanding vector."""
    hidden, tokens, size = ["batch", "sequence", m.hidden_size], flow_tokens(m), m.image_size
    side, channels = m.latent_size, m.latent_channels
    latent = ["batch", channels, side, side]
    grid = side // m.flow_stride
    skip = ["batch", m.flow_channels, grid, grid]

    def text(m: ModelInfo, s: dict[str, int]) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, m.vocab_size, (s["batch"], s["sequence"]))
        ids[0, 0] = begin_of_image_id
        return {INPUT_IDS: ids}

    def latents(s: dict[str, int]) -> torch.Tensor:
        return torch.randn(s["batch"], channels, side, side)

    return [
        vision_spec(m, VisionEncoder),
        GraphSpec("text_embedding", TextEmbedding, [Tensor(INPUT_IDS, "int64", ["batch", "sequence"])],
                  [Tensor(INPUTS_EMBEDS, "float32", hidden)], text),
        decoder_spec(m, lambda checkpoint: KVCacheDecoder(checkpoint.model.language_model.model), kv_dtype),
        head_spec("lm_head", lambda checkpoint: checkpoint.model.language_model.lm_head, m, m.vocab_size),
        GraphSpec("flow_encoder", FlowEncoder,
                  [Tensor(LATENTS, "float32", latent), Tensor(TIMESTEPS, "float32", ["batch"])],
                  [Tensor(INPUTS_EMBEDS, "float32", ["batch", tokens, m.hidden_size]),
                   Tensor(SKIP, "float32", skip), Tensor(TIME_EMBEDDING, "float32", ["batch", m.hidden_size])],
                  lambda m, s: {LATENTS: latents(s), TIMESTEPS: torch.rand(s["batch"]) * 1000}, batch_only=True),
        GraphSpec("flow_decoder", FlowDecoder,
                  [Tensor(HIDDEN_STATES, "float32", ["batch", tokens, m.hidden_size]),
                   Tensor(SKIP, "float32", skip), Tensor(TIME_EMBEDDING, "float32", ["batch", m.hidden_size])],
                  [Tensor(VELOCITY, "float32", latent)],
                  lambda m, s: {HIDDEN_STATES: torch.randn(s["batch"], tokens, m.hidden_size),
                                SKIP: torch.randn(s["batch"], m.flow_channels, grid, grid),
                                TIME_EMBEDDING: torch.randn(s["batch"], m.hidden_size)}, batch_only=True),
        GraphSpec("vae_decoder", VaeDecoder, [Tensor(LATENTS, "float32", latent)],
                  [Tensor(PIXELS, "float32", ["batch", 3, size, size])],
                  lambda m, s: {LATENTS: latents(s)}, batch_only=True),
    ]
