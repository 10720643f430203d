"""JanusFlow's sizes without torch: the presets `janus-edge tiny --family janusflow` writes, their config.json and
VAE config, and the description `plan` counts (`model_info`, `flow_sizes`).

The tiny preset keeps the geometry that shapes the data flow (384x384 images, 16x16 patches -> 576 tokens, a
4x48x48 latent, a stride-2 flow encoder onto the 24x24 grid, PixelShuffle(2) back, a VAE that upsamples 8x) and
shrinks widths and depths. "janusflow-1.3b" is the real size: DeepSeek's config.json and SDXL's VAE.
"""

from __future__ import annotations

from dataclasses import dataclass

from janus_edge.runtime.manifest import ModelInfo

# llm: hidden, intermediate, layers, heads; vision: width, layers, heads; flow: channels; vae: widths, blocks, groups
PRESETS = {
    "tiny": {"llm": (64, 128, 2, 4), "vision": (32, 2, 2), "flow": 32, "vae": ((8, 8, 8, 8), 1, 4)},
    "janusflow-1.3b": {"llm": (2048, 5632, 24, 16), "vision": None, "flow": 768, "vae": ((128, 256, 512, 512), 2, 32)},
}
SIGLIP_L = (1024, 24, 16)  # width, layers, heads of siglip_large_patch16_384 (vision None: the real one)
SDXL_VAE_SCALING = 0.13025
LATENT_CHANNELS, FLOW_STRIDE, LAYERS_IN_MIDDLE, UPSAMPLES = 4, 2, 2, 1
FULL_SIZE_VOCAB = 102400
FP32_ONLY = ("flow_encoder", "vae_decoder")  # fp16 loses the time sinusoid at t ~ 1000; SDXL VAE overflows


def config_json(preset: str, vocab_size: int) -> dict:
    """config.json in DeepSeek's JanusFlow layout (the tiny one adds the SigLIP shape keys a preset name implies)."""
    p = PRESETS[preset]
    hidden, intermediate, layers, heads = p["llm"]
    vision = {"image_size": 384, "model_name": "siglip_large_patch16_384", "select_feature": "same",
              "select_layer": -1}
    if p["vision"]:
        vision.update(zip(("width", "layers", "heads"), p["vision"]), mlp_ratio=4)
    flow = {"block_out_channels": [p["flow"]], "hidden_size": hidden, "layers_in_middle": LAYERS_IN_MIDDLE,
            "norm_eps": 1e-6, "use_mid_block": True, "elementwise_affine": True, "use_bias": True}
    return {
        "model_type": "multi_modality", "architectures": ["MultiModalityCausalLM"], "torch_dtype": "float32",
        "vision_und_enc_config": {"cls": "CLIPVisionTower", "model_type": "vision_und_enc", "params": vision},
        "vision_gen_enc_config": {"cls": "ShallowUViTEncoder", "model_type": "vision_gen_enc",
                                  "params": {**flow, "input_channels": LATENT_CHANNELS, "stride": FLOW_STRIDE,
                                             "kernel_size": FLOW_STRIDE, "padding": 0}},
        "vision_gen_dec_config": {"cls": "ShallowUViTDecoder", "model_type": "vision_gen_dec",
                                  "params": {**flow, "in_channels": p["flow"], "out_channels": LATENT_CHANNELS,
                                             "upsamples": UPSAMPLES}},
        "language_config": {"model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate,
                            "num_hidden_layers": layers, "num_attention_heads": heads,
                            "num_key_value_heads": heads, "max_position_embeddings": 4096, "vocab_size": vocab_size,
                            "torch_dtype": "float32"},
    }


def vae_config(preset: str) -> dict:
    """SDXL's VAE layout; the tiny one leaves out the mid-block attention, whose random 8-wide head alone makes
    fp32 results drift ~1e-4 from fp64 (measured; without it ~3e-6), too close to compare's bar to test it."""
    widths, blocks, groups = PRESETS[preset]["vae"]
    return {"mid_block_add_attention": preset != "tiny", "in_channels": 3, "out_channels": 3,
            "latent_channels": LATENT_CHANNELS, "block_out_channels": list(widths),
            "down_block_types": ["DownEncoderBlock2D"] * len(widths),
            "up_block_types": ["UpDecoderBlock2D"] * len(widths), "layers_per_block": blocks,
            "norm_num_groups": groups, "sample_size": 384, "scaling_factor": SDXL_VAE_SCALING}


@dataclass(frozen=True)
class FlowSizes:
    """What JanusFlow adds to the `ModelInfo`: the flow encoder/decoder's width and depth, and the VAE decoder's."""

    latent_channels: int
    channels: int  # ShallowUViT encoder/decoder width (block_out_channels)
    stride: int  # the encoder's patchifying conv: kernel = stride
    layers_in_middle: int  # ConvNeXt blocks in each mid block
    vae_widths: tuple[int, ...]  # SDXL VAE block_out_channels
    vae_blocks: int  # layers_per_block
    vae_attention: bool  # mid-block attention


def flow_sizes(preset: str) -> FlowSizes:
    p = PRESETS[preset]
    widths, blocks, _ = p["vae"]
    return FlowSizes(LATENT_CHANNELS, p["flow"], FLOW_STRIDE, LAYERS_IN_MIDDLE, tuple(widths), blocks,
                     vae_config(preset)["mid_block_add_attention"])


def model_info(preset: str, vocab_size: int = FULL_SIZE_VOCAB) -> ModelInfo:
    """The `ModelInfo` an export of this preset records (`flow_model_info`), from the preset alone."""
    hidden, intermediate, layers, heads = PRESETS[preset]["llm"]
    width, vision_layers, vision_heads = PRESETS[preset]["vision"] or SIGLIP_L
    return ModelInfo(family="janusflow", source_format="original", hidden_size=hidden, vocab_size=vocab_size,
                     codebook_size=0, num_layers=layers, num_kv_heads=heads, head_dim=hidden // heads,
                     image_size=384, num_image_tokens=576, max_position_embeddings=4096,
                     intermediate_size=intermediate, num_heads=heads, vision_hidden_size=width,
                     vision_layers=vision_layers, vision_heads=vision_heads, vision_intermediate_size=4 * width)
