"""Janus-Pro (1B, 7B) and Janus-1.3B: transformers' `JanusForConditionalGeneration`, from a Hugging Face
(model_type "janus") or DeepSeek's original (model_type "multi_modality") checkpoint; images as 576 VQ tokens."""

from __future__ import annotations

from pathlib import Path

from janus_edge.runtime.manifest import GenerationDefaults, ModelInfo, SpecialTokens

from ..configs import PRESETS
from .base import Checkpoint, Family, ManifestExtras
from .parameters import LLM_AND_VISION, attnblock, linear, llm_decoder, resblock, vision_tower

VQ_FIELDS = ("codebook_dim", "vq_base_channels", "vq_channel_multiplier", "vq_latent_channels", "vq_res_blocks")


class JanusFamily(Family):
    name = "janus-pro"
    title = "Janus-Pro"
    names = ("janus-pro", "janus")  # "janus": Janus-1.3B, the same architecture with other chat roles
    presets = PRESETS
    published = ("janus-pro-1b", "janus-pro-7b")
    required = LLM_AND_VISION + VQ_FIELDS

    def detect(self, config_json: dict) -> bool:
        return config_json.get("model_type") in ("janus", "multi_modality")

    def load(self, directory: Path, config_json: dict, prompt_family: str | None = None, vae=None,
             lazy: bool = False) -> Checkpoint:
        from ..janus_checkpoint import load_janus

        checkpoint = load_janus(directory, config_json, prompt_family)
        if not lazy:
            checkpoint.weights.load_all()
        return checkpoint

    def describe(self, directory: Path, config_json: dict) -> ModelInfo:
        from ..configs import model_info
        from ..janus_checkpoint import janus_config

        return model_info(janus_config(config_json, directory))

    def model_info(self, checkpoint: Checkpoint) -> ModelInfo:
        from ..configs import model_info

        return model_info(checkpoint.model.config, checkpoint.family, checkpoint.source_format)

    def manifest_extras(self, checkpoint: Checkpoint, info: ModelInfo) -> ManifestExtras:
        from .. import metadata

        config = checkpoint.model.config
        text = config.text_config
        vocab = metadata.tokenizer_vocab(checkpoint.tokenizer_file)
        fmt = metadata.prompt_format(checkpoint.family, checkpoint.processor, vocab, text.eos_token_id)
        return ManifestExtras(metadata.special_tokens(text, vocab, fmt, config.image_token_id), fmt,
                              GenerationDefaults(image_tokens=info.num_image_tokens))

    def graph_specs(self, info: ModelInfo, tokens: SpecialTokens, kv_dtype: str = "float32",
                    form: str = "in_place") -> list:
        from ..graphs import graph_specs

        return graph_specs(info, kv_dtype, form)

    def write_tiny(self, out_dir: str | Path, fmt: str = "hf", seed: int = 0, preset: str = "tiny",
                   max_shard_size: str | None = None) -> str:
        from ..tiny import write_checkpoint

        path = write_checkpoint(out_dir, fmt, seed, preset, max_shard_size)
        return f"wrote a {preset} {self.title} checkpoint ({fmt} format, seed {seed}) to {path}"

    def graph_parameters(self, d: ModelInfo) -> dict[str, int]:
        hidden = d.hidden_size
        return {
            "vision_encoder": vision_tower(d) + linear(d.vision_hidden_size, hidden) + linear(hidden, hidden),
            "text_embedding": d.vocab_size * hidden,
            "generation_embedding": d.codebook_size * d.codebook_dim + linear(d.codebook_dim, hidden)
            + linear(hidden, hidden),
            "decoder": llm_decoder(d),
            "lm_head": d.vocab_size * hidden,
            "generation_head": linear(hidden, hidden) + linear(hidden, d.codebook_size),
            "vq_decoder": vq_decoder(d),
        }


def vq_decoder(d: ModelInfo) -> int:
    """The VQ model's decode path: codebook, post-quant conv and the decoder (its mid block, then up blocks)."""
    channels = [d.vq_base_channels * m for m in d.vq_channel_multiplier]
    c = channels[-1]
    vq = d.codebook_size * d.codebook_dim + linear(d.codebook_dim, d.vq_latent_channels) \
        + d.vq_latent_channels * c * 9 + c
    vq += 2 * resblock(c, c) + attnblock(c)
    for level in reversed(range(len(channels))):
        for _ in range(d.vq_res_blocks + 1):
            vq += resblock(c, channels[level]) + (attnblock(channels[level]) if level == len(channels) - 1 else 0)
            c = channels[level]
        if level:
            vq += c * c * 9 + c
    return vq + 2 * c + c * 3 * 9 + 3
