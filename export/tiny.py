"""`janus-edge tiny`: the embedded default model, a random-weight Janus-Pro of the real architecture written in
exactly the file layout of a real checkpoint (Hugging Face or original DeepSeek format).

Deterministic for a seed. The tiny preset is initialised with std 0.2 (not 0.02) so that greedy decoding yields
varied tokens; with the default init a random model repeats one token forever and equality tests prove nothing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from janus_edge.runtime.manifest import ModelInfo

from . import configs, original_format
from .staging import staged_directory
from .tiny_tokenizer import (BOS, EOS, IMAGE_END, IMAGE_START, IMAGE_TOKEN, PAD, SPECIAL_TOKENS,
                             build_tokenizer, padded_vocab_size)

TINY_INIT_STD = 0.2


def build_model(info: ModelInfo, seed: int = 0, widen: bool = True):
    """Returns (model, tokenizer) for a description (vocab_size 0: the tiny tokenizer's), with reproducible random
    weights; `widen`: std 0.2 instead of 0.02 on every matrix outside the VQ model (see above)."""
    from transformers import JanusForConditionalGeneration

    tokenizer = build_tokenizer()
    ids = {"bos": tokenizer.token_to_id(BOS), "eos": tokenizer.token_to_id(EOS), "pad": tokenizer.token_to_id(PAD),
           "image": tokenizer.token_to_id(IMAGE_TOKEN)}
    if not info.vocab_size:
        info = dataclasses.replace(info, vocab_size=padded_vocab_size(tokenizer))
    config = configs.config_of(info, ids)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    if widen:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() >= 2 and "vqmodel" not in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * TINY_INIT_STD)
    gen = model.generation_config
    gen.pad_token_id = ids["pad"]
    gen.generation_kwargs = {"boi_token_id": tokenizer.token_to_id(IMAGE_START)}
    gen.guidance_scale = 5.0
    gen.temperature = 1.0
    return model, tokenizer


def write_checkpoint(out_dir: str | Path, fmt: str = "hf", seed: int = 0, preset: str = "tiny",
                     max_shard_size: str | None = None) -> Path:
    """Writes a complete checkpoint directory of a preset (export/configs.py); returns its path."""
    return write_model(out_dir, configs.preset(preset), fmt, seed, preset == "tiny", max_shard_size)


def write_model(out_dir: str | Path, info: ModelInfo, fmt: str = "hf", seed: int = 0, widen: bool = True,
                max_shard_size: str | None = None) -> Path:
    """Writes a complete checkpoint directory of the model `info` describes; returns its path."""
    model, tokenizer = build_model(info, seed, widen)
    with staged_directory(out_dir, "config.json") as staging:
        if fmt == "hf":
            _write_hf(model, tokenizer, staging, max_shard_size)
        elif fmt == "original":
            original_format.write_original(model, tokenizer, staging)
        else:
            raise ValueError(f"unknown checkpoint format {fmt!r}")
    return Path(out_dir)


def _write_hf(model, tokenizer, directory: Path, max_shard_size: str | None) -> None:
    from transformers import JanusProcessor, PreTrainedTokenizerFast
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=16384,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "boi_token": IMAGE_START, "eoi_token": IMAGE_END})
    image_processor = JanusImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = JanusProcessor(image_processor=image_processor, tokenizer=hf_tokenizer,
                               use_default_system_prompt=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    processor.save_pretrained(directory)
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
               "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (BOS, EOS, PAD)]}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False))
