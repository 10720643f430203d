"""`janus-edge tiny --family janusflow`: a random-weight JanusFlow in DeepSeek's layout, plus a random VAE in
diffusers' layout beside it (OUT_DIR/vae).

The presets and their configs are in presets.py (torch-free, `plan` reads them); "janusflow-1.3b" is the real
size (random weights, for benchmarks).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..staging import staged_directory
from ..tiny import TINY_INIT_STD
from ..tiny_tokenizer import (BOS, EOS, IMAGE_END, IMAGE_START, IMAGE_TOKEN, PAD, SPECIAL_TOKENS, build_tokenizer,
                              padded_vocab_size)
from .model import FlowConfig, JanusFlowModel
from .presets import PRESETS, config_json, vae_config


def write_janusflow(out_dir: str | Path, seed: int = 0, preset: str = "tiny") -> Path:
    """Writes OUT_DIR (the JanusFlow checkpoint) with the VAE in OUT_DIR/vae; returns OUT_DIR."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from .checkpoint import flow_config

    tokenizer = build_tokenizer()
    p = PRESETS[preset]
    vocab = p.llm.vocab or padded_vocab_size(tokenizer)
    files = {
        "config.json": config_json(preset, vocab),
        "preprocessor_config.json": {"background_color": [127, 127, 127], "do_normalize": True,
                                     "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "image_size": p.vision.image_size,
                                     "image_processor_type": "VLMImageProcessor", "min_size": 14,
                                     "processor_class": "VLChatProcessor", "rescale_factor": 1 / 255},
        "processor_config.json": {"image_tag": IMAGE_TOKEN, "image_start_tag": IMAGE_START,
                                  "image_end_tag": IMAGE_END, "num_image_tokens": p.vision.num_tokens,
                                  "sft_format": "deepseek",
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
