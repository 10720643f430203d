"""Model presets: the real Janus family's shapes, and the tiny model of the same architecture used for tests.

Every preset is a `transformers.JanusConfig`; the tiny one keeps everything that shapes the data flow (384x384
input, 16x16 patches -> 576 image tokens, 16x VQ downsampling, 16384-entry codebook of 8-dim codes, the two-layer
aligners and heads) and shrinks only widths and depths.
"""

from __future__ import annotations

from dataclasses import dataclass

from janus_edge.runtime.errors import RequestError


@dataclass(frozen=True)
class Preset:
    """Widths and depths of one model size."""

    llm_hidden: int
    llm_intermediate: int
    llm_layers: int
    llm_heads: int
    llm_kv_heads: int
    vocab_size: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vq_base_channels: int
    vq_latent_channels: int
    vq_res_blocks: int
    max_position_embeddings: int = 16384
    vq_channel_multiplier: tuple[int, ...] = (1, 1, 2, 2, 4)
    codebook_size: int = 16384
    codebook_dim: int = 8


PRESETS: dict[str, Preset] = {
    "janus-pro-1b": Preset(2048, 5632, 24, 16, 16, 102400, 1024, 24, 16, 128, 256, 2),
    "janus-pro-7b": Preset(4096, 11008, 30, 32, 32, 102400, 1024, 24, 16, 128, 256, 2),
    "janus-1.3b": Preset(2048, 5632, 24, 16, 16, 102400, 1024, 24, 16, 128, 256, 2),
    # vocab_size is replaced by the tiny tokenizer's size (rounded up to a multiple of 64).
    "tiny": Preset(64, 128, 2, 4, 4, 0, 32, 2, 2, 32, 32, 1, max_position_embeddings=4096),
}


def janus_config(preset_name: str, vocab_size: int | None = None, special_ids: dict[str, int] | None = None):
    """Builds the `JanusConfig` of a preset; `special_ids` holds bos/eos/pad/image token ids from the tokenizer."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    if preset_name not in PRESETS:
        raise RequestError(f"unknown model preset {preset_name!r}", f"choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset_name]
    ids = special_ids or {"bos": 100000, "eos": 100001, "pad": 100015, "image": 100581}
    text = LlamaConfig(
        vocab_size=vocab_size or p.vocab_size,
        hidden_size=p.llm_hidden,
        intermediate_size=p.llm_intermediate,
        num_hidden_layers=p.llm_layers,
        num_attention_heads=p.llm_heads,
        num_key_value_heads=p.llm_kv_heads,
        max_position_embeddings=p.max_position_embeddings,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        tie_word_embeddings=False,
    )
    vision = JanusVisionConfig(
        hidden_size=p.vision_hidden,
        num_hidden_layers=p.vision_layers,
        num_attention_heads=p.vision_heads,
        image_size=384,
        patch_size=16,
        projection_dim=p.llm_hidden,
        depth=2,
    )
    vq = JanusVQVAEConfig(
        embed_dim=p.codebook_dim,
        num_embeddings=p.codebook_size,
        latent_channels=p.vq_latent_channels,
        base_channels=p.vq_base_channels,
        channel_multiplier=list(p.vq_channel_multiplier),
        num_res_blocks=p.vq_res_blocks,
        projection_dim=p.llm_hidden,
        image_token_embed_dim=p.llm_hidden,
        num_hidden_layers=2,
    )
    return JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        image_token_id=ids["image"],
        tie_word_embeddings=False,
    )
