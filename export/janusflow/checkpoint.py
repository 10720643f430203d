"""Loading JanusFlow: DeepSeek's original layout (config.json with vision_und_enc_config, vision_gen_enc_config,
vision_gen_dec_config and language_config; safetensors or pytorch_model*.bin) plus the SDXL VAE as a diffusers
directory (config.json + diffusion_pytorch_model.safetensors).

Everything is checked before anything is built: the sub-configs, every module's presence, every weight's shape,
and that the VAE's latent has the channels and the size JanusFlow's flow runs on. Each problem is one
`CheckpointError` naming the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from janus_edge.runtime.errors import CheckpointError

from ..families.base import Checkpoint
from ..metadata import token_id, tokenizer_vocab
from ..original_format import LLAMA_DEFAULTS, special_tokens, vision_tower
from ..weight_source import load_weights
from ..weights import ORIGINAL_WEIGHTS, check_shapes, processor_settings, read_json, tokenizer_file
from .model import DECODER_DEFAULTS, ENCODER_DEFAULTS, FlowConfig, JanusFlowModel

SUB_CONFIGS = ("vision_und_enc_config", "vision_gen_enc_config", "vision_gen_dec_config", "language_config")
UNUSED_PREFIXES = ("vision_und_enc_model.vision_tower.attn_pool.",)  # SigLIP's attention-pool head, never run
LLAMA_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "max_position_embeddings", "rms_norm_eps")
VAE_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass
class FlowCheckpoint(Checkpoint):
    vae: "torch.nn.Module | None" = None  # diffusers AutoencoderKL, fp32
    vae_directory: Path | None = None


def flow_config(config_json: dict, directory: Path) -> FlowConfig:
    from transformers import LlamaConfig

    missing = [name for name in SUB_CONFIGS if not isinstance(config_json.get(name), dict)]
    if missing:
        raise CheckpointError(f"{directory / 'config.json'} lacks {', '.join(missing)}, which JanusFlow's layout has",
                              "download config.json of deepseek-ai/JanusFlow-1.3B again")
    params = {name: dict(config_json[name].get("params", {})) for name in SUB_CONFIGS[:3]}
    vision = params["vision_und_enc_config"]
    siglip = {**vision_tower(vision), "pixel_mean": vision.get("pixel_mean"), "pixel_std": vision.get("pixel_std")}
    language = {**LLAMA_DEFAULTS, **config_json["language_config"]}
    vocab, special = tokenizer_vocab(directory / "tokenizer.json"), special_tokens(directory)
    ids = {f"{name}_token_id": token_id(vocab, special.get(f"{name}_token") or default)
           for name, default in (("bos", ""), ("eos", ""), ("pad", "<\uff5c\u2581pad\u2581\uff5c>"))}
    text = LlamaConfig(**{k: language[k] for k in LLAMA_KEYS}, **ids,
                       num_key_value_heads=language.get("num_key_value_heads", language["num_attention_heads"]),
                       rope_parameters={"rope_type": "default", "rope_theta": float(language["rope_theta"])},
                       tie_word_embeddings=bool(language.get("tie_word_embeddings", False)))
    text._attn_implementation = "eager"  # the exported decoder builds its mask explicitly, as eager attention does
    encoder = {**ENCODER_DEFAULTS, **{k: v for k, v in params["vision_gen_enc_config"].items()
                                      if k in ENCODER_DEFAULTS}}
    decoder = {**DECODER_DEFAULTS, **{k: v for k, v in params["vision_gen_dec_config"].items()
                                      if k in DECODER_DEFAULTS}}
    for name, p in (("vision_gen_enc_config", encoder), ("vision_gen_dec_config", decoder)):
        if p["hidden_size"] != text.hidden_size:
            raise CheckpointError(f"{name} has hidden_size {p['hidden_size']} but the LLM's is {text.hidden_size}",
                                  "check that config.json belongs to one JanusFlow model")
    return FlowConfig(language=text, vision=siglip, encoder=encoder, decoder=decoder)


def load_janusflow(directory: Path, config_json: dict, vae: str | Path | None) -> FlowCheckpoint:
    """The reference model and the VAE; `vae` is required (JanusFlow's pixels come from the SDXL VAE)."""
    if vae is None:
        raise CheckpointError(f"{directory} is a JanusFlow checkpoint, which needs the SDXL VAE to make images",
                              "pass --vae DIR with a diffusers AutoencoderKL directory (stabilityai/sdxl-vae)")
    tokenizer = tokenizer_file(directory)
    config = flow_config(config_json, directory)
    vae_config = _check_vae(Path(vae), config)
    state = load_weights(directory, ORIGINAL_WEIGHTS)
    state = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    with torch.device("meta"):
        expected = {k: v.shape for k, v in JanusFlowModel(config).state_dict().items()}
    modules = sorted({k.split(".")[0] for k in expected})
    absent = [m for m in modules if not any(k.startswith(m + ".") or k == m for k in state)]
    if absent:
        raise CheckpointError(f"the weights in {directory} have no module {', '.join(absent)} (a JanusFlow "
                              f"checkpoint has {', '.join(modules)})", "download the checkpoint's weights again")
    check_shapes(expected, state, directory)
    model = JanusFlowModel(config)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model.eval()
    processor = processor_settings(directory)
    model.begin_of_image_id = token_id(tokenizer_vocab(tokenizer), processor.get("image_start_tag", "<begin_of_image>"))
    return FlowCheckpoint(model=model, directory=directory, source_format="original", family="janusflow",
                          tokenizer_file=tokenizer, processor=processor, vae=_load_vae(Path(vae), vae_config),
                          vae_directory=Path(vae))


def _check_vae(directory: Path, config: FlowConfig) -> dict:
    """The VAE's config.json, after checking it decodes the latent the flow makes into the model's image size."""
    if not directory.is_dir():
        raise CheckpointError(f"VAE directory {directory} does not exist",
                              "pass --vae DIR with a diffusers AutoencoderKL directory (stabilityai/sdxl-vae)")
    vae = read_json(directory / "config.json", "VAE configuration (diffusers AutoencoderKL)")
    if not any((directory / name).is_file() for name in VAE_FILES):
        raise CheckpointError(f"{directory} has no VAE weights: expected {' or '.join(VAE_FILES)}",
                              "download the VAE's weights into that directory")
    channels = config.encoder["input_channels"]
    latent = latent_size(config)
    factor = 2 ** (len(vae.get("block_out_channels", [64])) - 1)
    if vae.get("latent_channels", 4) != channels or latent * factor != config.vision["image_size"]:
        raise CheckpointError(f"the VAE in {directory} has {vae.get('latent_channels', 4)}-channel latents at 1/"
                              f"{factor} of the image; JanusFlow's flow makes {channels}x{latent}x{latent} latents for "
                              f"{config.vision['image_size']}x{config.vision['image_size']} images",
                              "pass the SDXL VAE (stabilityai/sdxl-vae), which JanusFlow was trained with")
    return vae


def latent_size(config: FlowConfig) -> int:
    """Side of the latent: the understanding grid (576 = 24x24 tokens) times the flow encoder's stride."""
    return config.vision["image_size"] // config.vision["patch_size"] * config.encoder["stride"]


def _load_vae(directory: Path, vae_config: dict):
    from diffusers import AutoencoderKL
    from diffusers.utils import logging

    logging.set_verbosity_error()  # not the advice to install accelerate on every load
    try:
        vae = AutoencoderKL.from_pretrained(str(directory), local_files_only=True, torch_dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"the VAE in {directory} cannot be loaded ({str(exc).splitlines()[0]})",
                              "download config.json and the weights of stabilityai/sdxl-vae again") from None
    return vae.eval()
