"""JanusFlow-1.3B: DeepSeek's original layout only, plus the SDXL VAE (a diffusers directory); images by a
rectified flow on the VAE's latent (export/janusflow: the PyTorch model, its loader and graphs)."""

from __future__ import annotations

from pathlib import Path

from janus_edge.runtime.manifest import FlowSettings, GenerationDefaults, ModelInfo, SpecialTokens

from ..configs import llm_fields
from ..janusflow.presets import PRESETS, flow_fields, flow_tokens, model_info
from .base import Checkpoint, Family, ManifestExtras
from .parameters import LLM_AND_VISION, attnblock, linear, llm_decoder, resblock, vision_tower

CFG_WEIGHT = 2.0  # DeepSeek's README and demo default for JanusFlow
FLOW_FIELDS = ("latent_channels", "flow_channels", "flow_stride", "flow_layers_in_middle", "vae_widths",
               "vae_blocks", "vae_attention")


class JanusFlowFamily(Family):
    name = "janusflow"
    title = "JanusFlow"
    names = ("janusflow",)
    presets = {name: model_info(name) for name in PRESETS}
    published = ("janusflow-1.3b",)
    generation = "flow"
    fp32_graphs = ("flow_encoder", "vae_decoder")  # fp16 loses the time sinusoid at t ~ 1000; SDXL VAE overflows
    required = LLM_AND_VISION + FLOW_FIELDS

    def detect(self, config_json: dict) -> bool:
        return "vision_gen_enc_config" in config_json  # model_type "multi_modality", as original Janus checkpoints

    def load(self, directory: Path, config_json: dict, prompt_family: str | None = None, vae=None,
             lazy: bool = False) -> Checkpoint:
        from ..janusflow.checkpoint import load_janusflow

        return load_janusflow(directory, config_json, vae)

    def model_info(self, checkpoint: Checkpoint) -> ModelInfo:
        config, vae = checkpoint.model.config, checkpoint.vae.config
        vision, encoder = config.vision, config.encoder
        size = vision["image_size"]
        return ModelInfo(family="janusflow", source_format="original", codebook_size=0, image_size=size,
                         num_image_tokens=(size // vision["patch_size"]) ** 2, **llm_fields(config.language),
                         vision_hidden_size=vision["width"], vision_layers=vision["layers"],
                         vision_heads=vision["heads"],
                         vision_intermediate_size=int(vision["width"] * vision["mlp_ratio"]),
                         **flow_fields(encoder["input_channels"], encoder["block_out_channels"][-1], encoder["stride"],
                                       encoder["layers_in_middle"], vae.block_out_channels, vae.layers_per_block,
                                       vae.mid_block_add_attention))

    def manifest_extras(self, checkpoint: Checkpoint, info: ModelInfo) -> ManifestExtras:
        from .. import metadata

        text = checkpoint.model.config.language
        vocab = metadata.tokenizer_vocab(checkpoint.tokenizer_file)
        fmt = metadata.prompt_format("janus", checkpoint.processor, vocab, text.eos_token_id)  # "User"/"Assistant"
        return ManifestExtras(metadata.special_tokens(text, vocab, fmt), fmt,
                              GenerationDefaults(cfg_weight=CFG_WEIGHT, image_tokens=flow_tokens(info)),
                              flow=FlowSettings(),
                              producer={"vae_scaling_factor": str(checkpoint.vae.config.scaling_factor)})

    def graph_specs(self, info: ModelInfo, tokens: SpecialTokens, kv_dtype: str = "float32",
                    form: str = "in_place") -> list:
        from ..janusflow.graphs import flow_graph_specs

        return flow_graph_specs(info, tokens.image_start, kv_dtype)

    def write_tiny(self, out_dir: str | Path, fmt: str = "original", seed: int = 0, preset: str = "tiny",
                   max_shard_size: str | None = None) -> str:
        from ..janusflow.tiny import write_janusflow

        path = write_janusflow(out_dir, seed, preset)
        return (f"wrote a {preset} {self.title} checkpoint (DeepSeek layout, seed {seed}) to {path}, "
                f"its VAE to {path / 'vae'}")

    def graph_parameters(self, d: ModelInfo) -> dict[str, int]:
        hidden = d.hidden_size
        return {"vision_encoder": vision_tower(d) + linear(d.vision_hidden_size, hidden),
                "text_embedding": d.vocab_size * hidden + hidden,  # + the begin-of-understanding vector
                "decoder": llm_decoder(d), "lm_head": d.vocab_size * hidden,
                **{name: params for name, (params, _) in graph_costs(d).items()}}

    def graph_flops(self, d: ModelInfo) -> dict[str, float]:
        return {name: flops for name, (_, flops) in graph_costs(d).items()}


def _convnext(c: int, cond: int) -> tuple[int, int]:
    """A ConvNeXt block's parameters used at every position, and its time-conditioning ones (used once per row)."""
    return c * 49 + c + c + linear(c, 4 * c) + 8 * c + linear(4 * c, c), linear(cond, 2 * c)


def graph_costs(d: ModelInfo) -> dict[str, tuple[int, float]]:
    """(parameters, FLOPs) of the flow encoder and decoder (FLOPs per row: 2 per parameter per position where it is
    used, once per row for the time embedding and its conditioning) and of the VAE decoder (per image)."""
    hidden, c, positions, blocks = d.hidden_size, d.flow_channels, d.num_image_tokens, d.flow_layers_in_middle
    block, cond = _convnext(c, hidden)
    encoder = d.latent_channels * c * d.flow_stride ** 2 + c + blocks * block + linear(c, hidden)  # conv, mid, aligner
    encoder_row = linear(c, hidden) + linear(hidden, hidden) + blocks * cond  # time embedding, conditioning
    wide, wide_cond = _convnext(2 * c, hidden)  # the decoder's mid block sees [tokens; skip] channels
    decoder = hidden + linear(hidden, c) + c + blocks * wide + 2 * c + linear(2 * c, d.latent_channels * 4)
    return {"flow_encoder": (encoder + encoder_row, 2.0 * (encoder * positions + encoder_row)),
            "flow_decoder": (decoder + blocks * wide_cond, 2.0 * (decoder * positions + blocks * wide_cond)),
            "vae_decoder": _vae_decoder(d)}


def _vae_decoder(d: ModelInfo) -> tuple[int, float]:
    """diffusers AutoencoderKL's decode path (post_quant_conv + Decoder): parameters, FLOPs for one image."""
    widths, latent = d.vae_widths, d.latent_channels
    side, c = d.image_size // 2 ** (len(widths) - 1), widths[-1]
    parts = [(latent * latent + latent, side), (latent * c * 9 + c, side),
             (2 * resblock(c, c) + (attnblock(c) if d.vae_attention else 0), side)]
    attention = 4.0 * side ** 4 * c if d.vae_attention else 0.0  # QK^T and AV over side^2 positions
    for level, width in enumerate(reversed(widths)):
        for _ in range(d.vae_blocks + 1):
            parts.append((resblock(c, width), side))
            c = width
        if level < len(widths) - 1:
            side *= 2
            parts.append((c * c * 9 + c, side))  # the upsampler's conv
    parts.append((2 * c + c * 3 * 9 + 3, side))
    return sum(p for p, _ in parts), attention + sum(2.0 * p * s * s for p, s in parts)
