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

from ..graphs import IMAGE_SIZE, NUM_IMAGE_TOKENS, Dims, GraphSpec, TensorSpec, graph_specs
from ..llm_decoder import InPlaceKVDecoder
from .checkpoint import latent_size

FLOW_TOKENS = NUM_IMAGE_TOKENS + 1  # the time embedding, then the 24x24 latent tokens
HEAVY = ("flow_encoder", "flow_decoder", "vae_decoder")  # batch is their only dynamic dimension
FP32_ONLY = ("flow_encoder", "vae_decoder")  # fp16 loses the time sinusoid at t ~ 1000; SDXL VAE overflows


@dataclass
class FlowDims(Dims):
    latent_channels: int = 4
    latent_size: int = 48
    skip_channels: int = 768
    begin_of_image_id: int = 0

    @classmethod
    def of(cls, checkpoint) -> "FlowDims":
        config = checkpoint.model.config
        text = config.language
        return cls(hidden=text.hidden_size, vocab=text.vocab_size, codebook=0, layers=text.num_hidden_layers,
                   kv_heads=text.num_key_value_heads, head_dim=text.hidden_size // text.num_attention_heads,
                   latent_channels=config.encoder["input_channels"], latent_size=latent_size(config),
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


class LmHead(nn.Module):
    def __init__(self, checkpoint):
        super().__init__()
        self.head = checkpoint.model.language_model.lm_head

    def forward(self, hidden_states):
        return self.head(hidden_states)


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


def _text_sample(d: FlowDims, s: dict[str, int]) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, d.vocab, (s["batch"], s["sequence"]))
    ids[0, 0] = d.begin_of_image_id
    return {"input_ids": ids}


def flow_graph_specs(d: FlowDims) -> list[GraphSpec]:
    """The specs of every JanusFlow graph, in the order the manifest lists them."""
    hidden = ["batch", "sequence", d.hidden]
    latent = ["batch", d.latent_channels, d.latent_size, d.latent_size]
    grid = d.latent_size // 2
    skip = ["batch", d.skip_channels, grid, grid]
    shared = next(spec for spec in graph_specs(d) if spec.name == "decoder")

    def latents(d: FlowDims, s: dict[str, int]) -> torch.Tensor:
        return torch.randn(s["batch"], d.latent_channels, d.latent_size, d.latent_size)

    return [
        GraphSpec("vision_encoder", VisionEncoder,
                  [TensorSpec("pixel_values", "float32", ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
                  [TensorSpec("image_embeds", "float32", ["batch", NUM_IMAGE_TOKENS, d.hidden])],
                  lambda d, s: {"pixel_values": torch.randn(s["batch"], 3, IMAGE_SIZE, IMAGE_SIZE)}),
        GraphSpec("text_embedding", TextEmbedding, [TensorSpec("input_ids", "int64", ["batch", "sequence"])],
                  [TensorSpec("inputs_embeds", "float32", hidden)], _text_sample),
        replace(shared, make_module=lambda checkpoint: InPlaceKVDecoder(checkpoint.model.language_model.model)),
        GraphSpec("lm_head", LmHead, [TensorSpec("hidden_states", "float32", hidden)],
                  [TensorSpec("logits", "float32", ["batch", "sequence", d.vocab])],
                  lambda d, s: {"hidden_states": torch.randn(s["batch"], s["sequence"], d.hidden)}),
        GraphSpec("flow_encoder", FlowEncoder,
                  [TensorSpec("latents", "float32", latent), TensorSpec("timesteps", "float32", ["batch"])],
                  [TensorSpec("inputs_embeds", "float32", ["batch", FLOW_TOKENS, d.hidden]),
                   TensorSpec("skip", "float32", skip), TensorSpec("time_embedding", "float32", ["batch", d.hidden])],
                  lambda d, s: {"latents": latents(d, s), "timesteps": torch.rand(s["batch"]) * 1000}),
        GraphSpec("flow_decoder", FlowDecoder,
                  [TensorSpec("hidden_states", "float32", ["batch", FLOW_TOKENS, d.hidden]),
                   TensorSpec("skip", "float32", skip), TensorSpec("time_embedding", "float32", ["batch", d.hidden])],
                  [TensorSpec("velocity", "float32", latent)],
                  lambda d, s: {"hidden_states": torch.randn(s["batch"], FLOW_TOKENS, d.hidden),
                                "skip": torch.randn(s["batch"], d.skip_channels, grid, grid),
                                "time_embedding": torch.randn(s["batch"], d.hidden)}),
        GraphSpec("vae_decoder", VaeDecoder, [TensorSpec("latents", "float32", latent)],
                  [TensorSpec("pixels", "float32", ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
                  lambda d, s: {"latents": latents(d, s)}),
    ]
