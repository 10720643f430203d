"""JanusFlow-1.3B in PyTorch, written from DeepSeek's public description and code (deepseek-ai/Janus,
janus/janusflow/models: modeling_vlm.py, uvit.py, siglip_vit.py), with DeepSeek's module names so that its
state dict loads key for key:

    vision_und_enc_model.vision_tower.*   SigLIP-L/16 at 384 (timm layout: patch_embed, pos_embed, blocks, norm)
    vision_und_enc_aligner                Linear(vision width, D)
    beg_of_und_embed                      [1, D], written over <begin_of_image> before an understanding image
    vision_gen_enc_model                  ShallowUViTEncoder: (z [B,4,48,48], t) -> [B,C,24,24] + time embedding
    vision_gen_enc_aligner                Linear(C, D)
    language_model                        transformers LlamaForCausalLM (DeepSeek-LLM)
    vision_gen_dec_aligner_norm/_aligner  RMSNorm(D), Linear(D, C)
    vision_gen_dec_model                  ShallowUViTDecoder: [B,C,24,24] + skip + time embedding -> v [B,4,48,48]

DeepSeek hard-codes the aligner widths of the 1.3B model (1024, 2048, 768); here they follow the sub-configs,
which gives the same shapes at full size and lets a tiny model keep the architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# DeepSeek's constructor defaults of ShallowUViTEncoder / ShallowUViTDecoder, completed by config.json's params.
ENCODER_DEFAULTS = {"input_channels": 3, "stride": 4, "kernel_size": 7, "padding": None, "block_out_channels": [768],
                    "layers_in_middle": 2, "hidden_size": 2048, "use_bias": True, "norm_eps": 1e-6,
                    "use_mid_block": True}
DECODER_DEFAULTS = {"in_channels": 768, "out_channels": 3, "block_out_channels": [768], "upsamples": 2,
                    "layers_in_middle": 2, "hidden_size": 2048, "norm_eps": 1e-6, "use_bias": True,
                    "use_mid_block": True}


@dataclass
class FlowConfig:
    """Everything that shapes a JanusFlow model, parsed from DeepSeek's config.json (see checkpoint.py)."""

    language: "object"  # transformers.LlamaConfig
    vision: dict  # width, layers, heads, mlp_ratio, patch_size, image_size (+ pixel_mean/pixel_std if given)
    encoder: dict = field(default_factory=lambda: dict(ENCODER_DEFAULTS))
    decoder: dict = field(default_factory=lambda: dict(DECODER_DEFAULTS))


def rms_norm(dim: int, eps: float) -> nn.Module:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    return LlamaRMSNorm(dim, eps=eps)


# --- SigLIP (timm VisionTransformer layout, no class token, final norm kept; the attention-pool head is unused) ---

class _Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(width, eps=1e-6), _Attention(width, heads)
        self.norm2, self.mlp = nn.LayerNorm(width, eps=1e-6), _Mlp(width, int(width * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, width: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class SigLIPTower(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, patch_size: int, image_size: int):
        super().__init__()
        self.patch_embed = _PatchEmbed(width, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, (image_size // patch_size) ** 2, width))
        self.blocks = nn.ModuleList(_Block(width, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, pixels):
        x = self.patch_embed(pixels) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class UnderstandingEncoder(nn.Module):
    """DeepSeek's CLIPVisionTower around SigLIP (select_feature "same": every patch token)."""

    def __init__(self, vision: dict):
        super().__init__()
        self.vision_tower = SigLIPTower(vision["width"], vision["layers"], vision["heads"], vision["mlp_ratio"],
                                        vision["patch_size"], vision["image_size"])
        mean, std = vision.get("pixel_mean"), vision.get("pixel_std")
        self.normalize = mean is not None and std is not None
        if self.normalize:
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels):
        if self.normalize:
            pixels = (pixels - self.mean) / self.std
        return self.vision_tower(pixels)


# --- ShallowUViT (DeepSeek's uvit.py) ---

class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN over channels-last input."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.bias = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return torch.addcmul(self.bias, self.weight * nx + 1, x)


class ConvNextBlock(nn.Module):
    """7x7 depthwise conv, RMSNorm, 4x MLP with GELU and GRN, residual, then a time-conditioned scale and shift."""

    def __init__(self, channels: int, eps: float, bias: bool, cond_size: int, ffn_factor: int = 4):
        super().__init__()
        hidden = channels * ffn_factor
        self.depthwise = nn.Conv2d(channels, channels, kernel_size=7, padding=3, groups=channels, bias=bias)
        self.norm = rms_norm(channels, eps)
        self.channelwise_linear_1 = nn.Linear(channels, hidden, bias=bias)
        self.channelwise_act = nn.GELU()
        self.channelwise_norm = GlobalResponseNorm(hidden)
        self.channelwise_linear_2 = nn.Linear(hidden, channels, bias=bias)
        self.cond_embeds_mapper = nn.Linear(cond_size, channels * 2, bias)

    def forward(self, x, cond):
        residual = x
        x = self.norm(self.depthwise(x).permute(0, 2, 3, 1))
        x = self.channelwise_linear_2(self.channelwise_norm(self.channelwise_act(self.channelwise_linear_1(x))))
        x = x.permute(0, 3, 1, 2) + residual
        scale, shift = self.cond_embeds_mapper(F.silu(cond)).chunk(2, dim=1)
        return torch.addcmul(shift[:, :, None, None], x, (1 + scale)[:, :, None, None])


class UVitBlock(nn.Module):
    """DeepSeek's UVitBlock as JanusFlow uses it: residual blocks only (no down- or upsampling)."""

    def __init__(self, channels: int, blocks: int, eps: float, bias: bool, cond_size: int):
        super().__init__()
        self.res_blocks = nn.ModuleList(ConvNextBlock(channels, eps, bias, cond_size) for _ in range(blocks))

    def forward(self, x, cond):
        for block in self.res_blocks:
            x = block(x, cond)
        return x


class ShallowUViTEncoder(nn.Module):
    """(z, t) -> (features [B,C,H/s,W/s], time embedding [B,hidden], skip features): the forward of uvit.py."""

    def __init__(self, p: dict):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        channels = p["block_out_channels"][0]
        self.time_proj = Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(channels, p["hidden_size"], sample_proj_bias=p["use_bias"])
        padding = p["padding"] if p["padding"] is not None else math.ceil(p["kernel_size"] - p["stride"])
        self.in_conv = nn.Conv2d(p["input_channels"], channels, kernel_size=p["kernel_size"], stride=p["stride"],
                                 padding=padding)
        self.mid_block = UVitBlock(p["block_out_channels"][-1], p["layers_in_middle"], p["norm_eps"], p["use_bias"],
                                   p["hidden_size"]) if p["use_mid_block"] else None

    def forward(self, x, timesteps):
        t_emb = self.time_embed(self.time_proj(timesteps.flatten()).view(x.shape[0], -1).to(x.dtype))
        x_emb = self.in_conv(x)
        if self.mid_block is not None:
            x_emb = self.mid_block(x_emb, t_emb)
        return x_emb, t_emb, [x_emb]


class Unpatchify(nn.Module):
    """RMSNorm, 1x1 conv to out x patch^2 channels, PixelShuffle (ONNX DepthToSpace, CRD)."""

    def __init__(self, in_channels: int, out_channels: int, patch: int, bias: bool, eps: float):
        super().__init__()
        self.norm = rms_norm(in_channels, eps)
        self.unpatch_conv = nn.Conv2d(in_channels, out_channels * patch * patch, kernel_size=1, bias=bias)
        self.pixel_shuffle = nn.PixelShuffle(patch)

    def forward(self, x):
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.pixel_shuffle(self.unpatch_conv(x))


class ShallowUViTDecoder(nn.Module):
    def __init__(self, p: dict):
        super().__init__()
        inner, inp = p["block_out_channels"][-1], p["in_channels"]
        self.mid_block = UVitBlock(inp + inner, p["layers_in_middle"], p["norm_eps"], p["use_bias"],
                                   p["hidden_size"]) if p["use_mid_block"] else None
        self.out_convs = nn.ModuleList(
            Unpatchify(inner + inp if rank == 0 else inner, p["out_channels"] if rank == p["upsamples"] - 1 else inner,
                       2, p["use_bias"], p["norm_eps"]) for rank in range(p["upsamples"]))
        self.input_norm = rms_norm(inp, p["norm_eps"])

    def forward(self, x, hs: list, t_emb):
        x = self.input_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = torch.cat([x, hs[-1]], dim=1)
        if self.mid_block is not None:
            x = self.mid_block(x, t_emb)
        for out_conv in self.out_convs:
            x = out_conv(x)
        return x


# --- the whole model ---

class JanusFlowModel(nn.Module):
    """DeepSeek's MultiModalityCausalLM for JanusFlow: its module names, its forward pieces."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        from transformers import LlamaForCausalLM

        self.config = config
        hidden = config.language.hidden_size
        self.vision_und_enc_model = UnderstandingEncoder(config.vision)
        self.vision_und_enc_aligner = nn.Linear(config.vision["width"], hidden, bias=True)
        self.beg_of_und_embed = nn.Parameter(torch.zeros(1, hidden))
        self.vision_gen_enc_model = ShallowUViTEncoder(config.encoder)
        self.vision_gen_enc_aligner = nn.Linear(config.encoder["block_out_channels"][-1], hidden, bias=True)
        self.vision_gen_dec_model = ShallowUViTDecoder(config.decoder)
        self.language_model = LlamaForCausalLM(config.language)
        self.vision_gen_dec_aligner_norm = rms_norm(hidden, config.language.rms_norm_eps)
        self.vision_gen_dec_aligner = nn.Linear(hidden, config.decoder["in_channels"], bias=True)

    def understanding_embeds(self, pixels):
        """[B,3,384,384] -> [B,1+576,D]: the begin-of-understanding embedding, then the aligned SigLIP tokens."""
        image = self.vision_und_enc_aligner(self.vision_und_enc_model(pixels))
        return torch.cat([self.beg_of_und_embed[None].expand(image.shape[0], -1, -1), image], dim=1)

    def prepare_inputs_embeds(self, input_ids, pixel_values, images_seq_mask, images_emb_mask):
        """DeepSeek's understanding inputs: token embeddings with <begin_of_image> + image tokens replaced."""
        images = self.understanding_embeds(pixel_values.flatten(0, 1))
        images = images.reshape(pixel_values.shape[0], -1, images.shape[-1])
        embeds = self.language_model.get_input_embeddings()(input_ids.clamp(min=0))
        embeds[images_seq_mask] = images[images_emb_mask.flatten(1)]
        return embeds

    def encode_latents(self, z, t):
        """(z [B,4,48,48], t [B]) -> (LLM inputs [B,1+576,D] = time embedding + aligned tokens, skip, t_emb)."""
        features, t_emb, skips = self.vision_gen_enc_model(z, t)
        tokens = self.vision_gen_enc_aligner(features.flatten(2).transpose(1, 2))
        return torch.cat([t_emb[:, None], tokens], dim=1), skips[-1], t_emb

    def velocity(self, hidden_states, skip, t_emb):
        """Last 576 LLM hidden states [B,576,D] -> velocity [B,4,48,48]."""
        x = self.vision_gen_dec_aligner(self.vision_gen_dec_aligner_norm(hidden_states))
        side = skip.shape[-1]
        x = x.reshape(x.shape[0], side, side, x.shape[-1]).permute(0, 3, 1, 2)
        return self.vision_gen_dec_model(x, [skip], t_emb)
