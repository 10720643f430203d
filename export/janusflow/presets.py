"""JanusFlow's sizes without torch: the presets `janus-edge tiny --family janusflow` writes, their config.json and
VAE config, and their `ModelInfo` (which `plan` counts).

The tiny preset keeps the geometry that shapes the data flow (384x384 images, 16x16 patches -> 576 tokens, a
4x48x48 latent, a stride-2 flow encoder onto the 24x24 grid, PixelShuffle(2) back, a VAE that upsamples 8x) and
shrinks widths and depths. "janusflow-1.3b" is the real size: DeepSeek's config.json and SDXL's VAE.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from janus_edge.runtime.manifest import ModelInfo

from ..components import LLM, LLM_1B, SDXL_VAE, SIGLIP_L16_384, VAE, VisionTower
from ..configs import TINY_LLM, TINY_SIGLIP, preset_fields

FLOW_STRIDE, LAYERS_IN_MIDDLE, UPSAMPLES = 2, 2, 1


@dataclass(frozen=True)
class FlowPreset:
    llm: LLM
    vision: VisionTower
    flow_channels: int  # ShallowUViT encoder/decoder width (block_out_channels)
    vae: VAE


PRESETS = {
    "tiny": FlowPreset(TINY_LLM, TINY_SIGLIP, 32, replace(SDXL_VAE, widths=(8, 8, 8, 8), blocks=1, groups=4,
                                                          attention=False)),
    "janusflow-1.3b": FlowPreset(replace(LLM_1B, max_positions=4096), SIGLIP_L16_384, 768, SDXL_VAE),
}


def config_json(preset: str, vocab_size: int) -> dict:
    """config.json in DeepSeek's JanusFlow layout (the tiny one adds the SigLIP shape keys a preset name implies)."""
    p = PRESETS[preset]
    llm, vision, channels = p.llm, p.vision, p.flow_channels
    latent = p.vae.latent_channels
    params = {"image_size": vision.image_size, "model_name": SIGLIP_L16_384.name, "select_feature": "same",
              "select_layer": -1}
    if vision != SIGLIP_L16_384:
        params.update(width=vision.width, layers=vision.layers, heads=vision.heads, mlp_ratio=vision.mlp_ratio)
    flow = {"block_out_channels": [channels], "hidden_size": llm.hidden, "layers_in_middle": LAYERS_IN_MIDDLE,
            "norm_eps": 1e-6, "use_mid_block": True, "elementwise_affine": True, "use_bias": True}
    return {
        "model_type": "multi_modality", "architectures": ["MultiModalityCausalLM"], "torch_dtype": "float32",
        "vision_und_enc_config": {"cls": "CLIPVisionTower", "model_type": "vision_und_enc", "params": params},
        "vision_gen_enc_config": {"cls": "ShallowUViTEncoder", "model_type": "vision_gen_enc",
                                  "params": {**flow, "input_channels": latent, "stride": FLOW_STRIDE,
                                             "kernel_size": FLOW_STRIDE, "padding": 0}},
        "vision_gen_dec_config": {"cls": "ShallowUViTDecoder", "model_type": "vision_gen_dec",
                                  "params": {**flow, "in_channels": channels, "out_channels": latent,
                                             "upsamples": UPSAMPLES}},
        "language_config": {"model_type": "llama", "hidden_size": llm.hidden, "intermediate_size": llm.intermediate,
                            "num_hidden_layers": llm.layers, "num_attention_heads": llm.heads,
                            "num_key_value_heads": llm.heads, "max_position_embeddings": llm.max_positions,
                            "vocab_size": vocab_size, "torch_dtype": "float32"},
    }


def vae_config(preset: str) -> dict:
    """SDXL's VAE layout; the tiny one leaves out the mid-block attention, whose random 8-wide head alone makes
    fp32 results drift ~1e-4 from fp64 (measured; without it ~3e-6), too close to compare's bar to test it."""
    p = PRESETS[preset]
    vae = p.vae
    return {"mid_block_add_attention": vae.attention, "in_channels": 3, "out_channels": 3,
            "latent_channels": vae.latent_channels, "block_out_channels": list(vae.widths),
            "down_block_types": ["DownEncoderBlock2D"] * len(vae.widths),
            "up_block_types": ["UpDecoderBlock2D"] * len(vae.widths), "layers_per_block": vae.blocks,
            "norm_num_groups": vae.groups, "sample_size": p.vision.image_size, "scaling_factor": vae.scaling_factor}


def flow_tokens(m: ModelInfo) -> int:
    """Positions of one flow step: the time embedding, then the latent's tokens (one per image token)."""
    return m.num_image_tokens + 1


def flow_fields(latent_channels: int, channels: int, stride: int, layers_in_middle: int, vae_widths, vae_blocks: int,
                vae_attention: bool) -> dict:
    """The `ModelInfo` fields of JanusFlow's flow graphs and VAE decoder."""
    return dict(latent_channels=latent_channels, flow_channels=channels, flow_stride=stride,
                flow_layers_in_middle=layers_in_middle, vae_widths=list(vae_widths), vae_blocks=vae_blocks,
                vae_attention=vae_attention)


def model_info(preset: str, vocab_size: int | None = None) -> ModelInfo:
    """The `ModelInfo` an export of this preset records, from the preset alone (`vocab_size`: the tokenizer's,
    default the full-size model's)."""
    p = PRESETS[preset]
    fields = {**preset_fields(p.llm, p.vision), "vocab_size": vocab_size or LLM_1B.vocab}
    return ModelInfo(family="janusflow", source_format="original", codebook_size=0, **fields,
                     **flow_fields(p.vae.latent_channels, p.flow_channels, FLOW_STRIDE, LAYERS_IN_MIDDLE, p.vae.widths,
                                   p.vae.blocks, p.vae.attention))
