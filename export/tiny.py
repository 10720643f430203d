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

from janus_edge.runtime.errors import RequestError
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

    config, tokenizer = _config(info)
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    if widen:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() >= 2 and "vqmodel" not in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * TINY_INIT_STD)
    _set_generation(model.generation_config, tokenizer)
    return model, tokenizer


def _config(info: ModelInfo):
    """The `JanusConfig` of a description, and the tiny tokenizer whose special ids it names."""
    tokenizer = build_tokenizer()
    ids = {"bos": tokenizer.token_to_id(BOS), "eos": tokenizer.token_to_id(EOS), "pad": tokenizer.token_to_id(PAD),
           "image": tokenizer.token_to_id(IMAGE_TOKEN)}
    if not info.vocab_size:
        info = dataclasses.replace(info, vocab_size=padded_vocab_size(tokenizer))
    config = configs.config_of(info, ids)
    config._attn_implementation = "eager"
    return config, tokenizer


def _set_generation(generation, tokenizer) -> None:
    generation.pad_token_id = tokenizer.token_to_id(PAD)
    generation.generation_kwargs = {"boi_token_id": tokenizer.token_to_id(IMAGE_START)}
    generation.guidance_scale = 5.0
    generation.temperature = 1.0


def write_checkpoint(out_dir: str | Path, fmt: str = "hf", seed: int = 0, preset: str = "tiny",
                     max_shard_size: str | None = None) -> Path:
    """Writes a complete checkpoint directory of a preset (export/configs.py); returns its path. The tiny preset
    in fp32, the full-size ones in bf16 as the released checkpoints are, a shard at a time (`write_full_size`)."""
    if preset == "tiny":
        return write_model(out_dir, configs.preset(preset), fmt, seed, True, max_shard_size)
    return write_full_size(out_dir, configs.preset(preset), fmt, seed, max_shard_size)


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


def write_full_size(out_dir: str | Path, info: ModelInfo, fmt: str = "hf", seed: int = 0,
                    max_shard_size: str | None = None) -> Path:
    """A random bf16 checkpoint of a full-size model written without ever holding it: the model is built on the
    meta device for its names and shapes, and each shard's tensors are drawn (N(0, 0.02); norm weights 1, biases
    0), written and dropped before the next shard's. A layer's tensors stay in one shard (the original format
    merges q, k and v). Deterministic for a seed: each tensor's generator is seeded by the seed and its name."""
    from transformers import JanusForConditionalGeneration

    from .lazy_model import meta_parameters

    config, tokenizer = _config(info)
    config.dtype = "bfloat16"
    with meta_parameters():
        model = JanusForConditionalGeneration(config)
    _set_generation(model.generation_config, tokenizer)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    shards = _shards(shapes, _size(max_shard_size or FULL_SIZE_SHARD))
    with staged_directory(out_dir, "config.json") as staging:
        if fmt == "hf":
            model.config.save_pretrained(staging)
            model.generation_config.save_pretrained(staging)
            _write_processor_files(tokenizer, staging)
            stem, suffix, index_name = "model", "safetensors", "model.safetensors.index.json"
        elif fmt == "original":
            original_format.write_original_files(config, tokenizer, staging, dtype="bfloat16")
            stem, suffix, index_name = "pytorch_model", "bin", "pytorch_model.bin.index.json"
        else:
            raise ValueError(f"unknown checkpoint format {fmt!r}")
        weight_map, total = {}, 0
        for number, names in enumerate(shards, 1):
            state = {name: _random(name, shapes[name], seed) for name in names}
            file = f"{stem}-{number:05d}-of-{len(shards):05d}.{suffix}"
            if fmt == "hf":
                from safetensors.torch import save_file

                save_file(state, str(staging / file), metadata={"format": "pt"})
            else:
                state = original_format.renamed_to_original(state)
                if number == len(shards):
                    state.update({k: v.to(torch.bfloat16) for k, v in
                                  original_format.unused_original_weights(config.vision_config.hidden_size).items()})
                torch.save(state, staging / file)
            weight_map.update({name: file for name in state})
            total += sum(t.numel() * t.element_size() for t in state.values())
            del state
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (staging / index_name).write_text(json.dumps(index, indent=2))
    return Path(out_dir)


FULL_SIZE_SHARD = "2GB"


_UNITS = {"": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def _size(text: str) -> int:
    """A shard size as transformers' `max_shard_size` spells it ("2GB", "500MB", "1GiB") or a byte count."""
    import re

    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]i?B)?", text.strip(), re.IGNORECASE)
    if match is None:
        raise RequestError(f"--max-shard-size {text!r} is not a size", 'write it like "2GB", "500MB" or "1GiB"')
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])


def _shards(shapes: dict[str, tuple], limit: int) -> list[list[str]]:
    """Names in model order cut into shards of about `limit` bf16 bytes, never splitting a layer."""
    import math
    import re

    groups: dict[str, list[str]] = {}
    for name in shapes:
        groups.setdefault(re.sub(r"(\.layers\.\d+)\..*", r"\1", name), []).append(name)
    shards: list[list[str]] = [[]]
    size = 0
    for names in groups.values():
        group_bytes = sum(2 * math.prod(shapes[n]) for n in names)
        if shards[-1] and size + group_bytes > limit:
            shards.append([])
            size = 0
        shards[-1] += names
        size += group_bytes
    return shards


def _random(name: str, shape: tuple, seed: int) -> torch.Tensor:
    import zlib

    if len(shape) == 1:
        fill = 1.0 if name.endswith("weight") else 0.0  # norm scales and biases
        return torch.full(shape, fill, dtype=torch.bfloat16)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)


def _write_hf(model, tokenizer, directory: Path, max_shard_size: str | None) -> None:
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    _write_processor_files(tokenizer, directory)


def _write_processor_files(tokenizer, directory: Path) -> None:
    """The processor and tokenizer files of the HF layout."""
    from transformers import JanusProcessor, PreTrainedTokenizerFast
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=16384,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "boi_token": IMAGE_START, "eoi_token": IMAGE_END})
    image_processor = JanusImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = JanusProcessor(image_processor=image_processor, tokenizer=hf_tokenizer,
                               use_default_system_prompt=True)
    processor.save_pretrained(directory)
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
               "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (BOS, EOS, PAD)]}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False))
