"""`janus-edge tiny --family janusflow`: a random-weight JanusFlow in DeepSeek's layout, plus a random VAE in
diffusers' layout beside it (OUT_DIR/vae).

The tiny preset keeps the geometry that shapes the data flow (384x384 images, 16x16 patches -> 576 tokens, a
4x48x48 latent, a stride-2 flow encoder onto the 24x24 grid, PixelShuffle(2) back, a VAE that upsamples 8x) and
shrinks widths and depths. "janusflow-1.3b" is the real size (random weights, for benchmarks).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..staging import staged_directory
from ..tiny import TINY_INIT_STD
from ..tiny_tokenizer import BOS, EOS, IMAGE_END, IMAGE_START, IMAGE_TOKEN, PAD, SPECIAL_TOKENS, build_tokenizer
from .model import FlowConfig, JanusFlowModel

# llm: hidden, intermediate, layers, heads; vision: width, layers, heads; flow: channels; vae: widths, blocks, groups
PRESETS = {
    "tiny": {"llm": (64, 128, 2, 4), "vision": (32, 2, 2), "flow": 32, "vae": ((8, 8, 8, 8), 1, 4)},
    "janusflow-1.3b": {"llm": (2048, 5632, 24, 16), "vision": None, "flow": 768, "vae": ((128, 256, 512, 512), 2, 32)},
}
SDXL_VAE_SCALING = 0.13025


def config_json(preset: str, vocab_size: int) -> dict:
    """config.json in DeepSeek's JanusFlow layout (the tiny one adds the SigLIP shape keys a preset name implies)."""
    p = PRESETS[preset]
    hidden, intermediate, layers, heads = p["llm"]
    vision = {"image_size": 384, "model_name": "siglip_large_patch16_384", "select_feature": "same",
              "select_layer": -1}
    if p["vision"]:
        vision.update(zip(("width", "layers", "heads"), p["vision"]), mlp_ratio=4)
    flow = {"block_out_channels": [p["flow"]], "hidden_size": hidden, "layers_in_middle": 2, "norm_eps": 1e-6,
            "use_mid_block": True, "elementwise_affine": True, "use_bias": True}
    return {
        "model_type": "multi_modality", "architectures": ["MultiModalityCausalLM"], "torch_dtype": "float32",
        "vision_und_enc_config": {"cls": "CLIPVisionTower", "model_type": "vision_und_enc", "params": vision},
        "vision_gen_enc_config": {"cls": "ShallowUViTEncoder", "model_type": "vision_gen_enc",
                                  "params": {**flow, "input_channels": 4, "stride": 2, "kernel_size": 2,
                                             "padding": 0}},
        "vision_gen_dec_config": {"cls": "ShallowUViTDecoder", "model_type": "vision_gen_dec",
                                  "params": {**flow, "in_channels": p["flow"], "out_channels": 4, "upsamples": 1}},
        "language_config": {"model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate,
                            "num_hidden_layers": layers, "num_attention_heads": heads,
                            "num_key_value_heads": heads, "max_position_embeddings": 4096, "vocab_size": vocab_size,
                            "torch_dtype": "float32"},
    }


def vae_config(preset: str) -> dict:
    """SDXL's VAE layout; the tiny one leaves out the mid-block attention, whose random 8-wide head alone makes
    fp32 results drift ~1e-4 from fp64 (measured; without it ~3e-6), too close to compare's bar to test it."""
    widths, blocks, groups = PRESETS[preset]["vae"]
    return {"mid_block_add_attention": preset != "tiny", "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": list(widths),
            "down_block_types": ["DownEncoderBlock2D"] * len(widths),
            "up_block_types": ["UpDecoderBlock2D"] * len(widths), "layers_per_block": blocks,
            "norm_num_groups": groups, "sample_size": 384, "scaling_factor": SDXL_VAE_SCALING}


def write_janusflow(out_dir: str | Path, seed: int = 0, preset: str = "tiny") -> Path:
    """Writes OUT_DIR (the JanusFlow checkpoint) with the VAE in OUT_DIR/vae; returns OUT_DIR."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from .checkpoint import flow_config

    tokenizer = build_tokenizer()
    vocab = -(-tokenizer.get_vocab_size() // 64) * 64 if preset == "tiny" else 102400
    files = {
        "config.json": config_json(preset, vocab),
        "preprocessor_config.json": {"background_color": [127, 127, 127], "do_normalize": True,
                                     "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "image_size": 384,
                                     "image_processor_type": "VLMImageProcessor", "min_size": 14,
                                     "processor_class": "VLChatProcessor", "rescale_factor": 1 / 255},
        "processor_config.json": {"image_tag": IMAGE_TOKEN, "image_start_tag": IMAGE_START,
                                  "image_end_tag": IMAGE_END, "num_image_tokens": 576, "sft_format": "deepseek",
                                  "add_special_token": False, "processor_class": "VLChatProcessor"},
        "special_tokens_map.json": {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
                                    "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in
                                                                  (BOS, EOS, PAD)]},
    }
    with staged_directory(out_dir, "config.json") as staging:
        for name, content in files.items():
            (staging / name).write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")
        tokenizer.save(str(staging / "tokenizer.json"))
        torch.manual_seed(seed)
        model = JanusFlowModel(flow_config(files["config.json"], staging))
        if preset == "tiny":
            _widen(model, seed)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        state.update(_attention_pool(model.config))
        save_file(state, str(staging / "model.safetensors"))
        del model, state
        torch.manual_seed(seed + 1)
        AutoencoderKL(**vae_config(preset)).save_pretrained(str(staging / "vae"))
    return Path(out_dir)


def _widen(model: JanusFlowModel, seed: int) -> None:
    """std 0.2 instead of 0.02 on every matrix, so that greedy decoding and the flow vary (see export/tiny.py)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * TINY_INIT_STD)


def _attention_pool(config: FlowConfig) -> dict[str, torch.Tensor]:
    """SigLIP's attention-pool head (timm "map"), present in DeepSeek's checkpoints though never run."""
    w = config.vision["width"]
    shapes = {"latent": (1, 1, w), "q.weight": (w, w), "q.bias": (w,), "kv.weight": (2 * w, w), "kv.bias": (2 * w,),
              "proj.weight": (w, w), "proj.bias": (w,), "norm.weight": (w,), "norm.bias": (w,),
              "mlp.fc1.weight": (4 * w, w), "mlp.fc1.bias": (4 * w,), "mlp.fc2.weight": (w, 4 * w),
              "mlp.fc2.bias": (w,)}
    return {f"vision_und_enc_model.vision_tower.attn_pool.{k}": torch.zeros(s) for k, s in shapes.items()}
