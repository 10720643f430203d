"""The parts every Janus model is built from, each described once: the presets (export/configs.py,
export/janusflow/presets.py), the original format's named sub-models (export/original_format.py) and the tiny
checkpoints are made of these. Torch-free (`plan` reads the presets).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class VisionTower:
    """A SigLIP ViT as DeepSeek's configs name it (`model_name`)."""

    name: str
    width: int
    layers: int
    heads: int
    mlp_ratio: int
    patch_size: int
    image_size: int

    @property
    def num_tokens(self) -> int:
        """Tokens per image: one per patch."""
        return (self.image_size // self.patch_size) ** 2

    def shape(self) -> dict:
        """The shape keys of DeepSeek's vision params (what the name stands for)."""
        return {"width": self.width, "layers": self.layers, "heads": self.heads, "mlp_ratio": self.mlp_ratio,
                "patch_size": self.patch_size, "image_size": self.image_size}


@dataclass(frozen=True)
class VQModel:
    """Janus's VQ image tokenizer as DeepSeek's configs name it (`gen_vision_config.cls`)."""

    name: str
    base_channels: int
    channel_multiplier: tuple[int, ...]
    latent_channels: int
    res_blocks: int
    codebook_size: int
    codebook_dim: int

    def shape(self) -> dict:
        """The shape keys of DeepSeek's gen_vision params (what the name stands for)."""
        return {"ch": self.base_channels, "ch_mult": list(self.channel_multiplier), "z_channels": self.latent_channels,
                "num_res_blocks": self.res_blocks}


@dataclass(frozen=True)
class LLM:
    """A DeepSeek-LLM decoder's sizes (Llama architecture, as many KV heads as heads)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    max_positions: int


@dataclass(frozen=True)
class VAE:
    """A diffusers AutoencoderKL's decode-path sizes."""

    widths: tuple[int, ...]  # block_out_channels
    blocks: int  # layers_per_block
    groups: int  # norm_num_groups
    latent_channels: int
    attention: bool  # mid-block attention
    scaling_factor: float


SIGLIP_L16_384 = VisionTower("siglip_large_patch16_384", width=1024, layers=24, heads=16, mlp_ratio=4, patch_size=16,
                             image_size=384)
VQ_16 = VQModel("VQ-16", base_channels=128, channel_multiplier=(1, 1, 2, 2, 4), latent_channels=256, res_blocks=2,
                codebook_size=16384, codebook_dim=8)
LLM_1B = LLM(hidden=2048, intermediate=5632, layers=24, heads=16, vocab=102400, max_positions=16384)  # Janus-Pro-1B,
# Janus-1.3B and (with 4096 positions) JanusFlow-1.3B
LLM_7B = replace(LLM_1B, hidden=4096, intermediate=11008, layers=30, heads=32)  # Janus-Pro-7B
SDXL_VAE = VAE(widths=(128, 256, 512, 512), blocks=2, groups=32, latent_channels=4, attention=True,
               scaling_factor=0.13025)

# Every Janus model sees SigLIP-L/16's images: 384 x 384 pixels, 24 x 24 = 576 tokens.
IMAGE_SIZE = SIGLIP_L16_384.image_size
NUM_IMAGE_TOKENS = SIGLIP_L16_384.num_tokens
