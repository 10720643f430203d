"""Loading a Janus-Pro or Janus-1.3B checkpoint, in either format users have, into transformers'
`JanusForConditionalGeneration` (the PyTorch reference every graph is checked against), its parameters on the meta
device and read from the files when a graph needs them (`lazy_model.LazyWeights`; `load_all` reads them all).

- Hugging Face format (model_type "janus"): safetensors, single or sharded with an index.
- Original DeepSeek format (model_type "multi_modality"): `pytorch_model*.bin` (loaded with weights_only=True) or
  safetensors, with names mapped by `original_format`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from janus_edge.runtime.errors import CheckpointError

from . import original_format
from .families.base import Checkpoint
from .lazy_model import LazyWeights, meta_parameters
from .weight_source import WeightSource, open_weights
from .weights import HF_WEIGHTS, ORIGINAL_WEIGHTS, check_shapes, processor_settings, tokenizer_file


def janus_config(config_json: dict, directory: Path):
    """The checkpoint's `JanusConfig` alone, without reading weights (for planning)."""
    if config_json.get("model_type") == "multi_modality":
        return original_format.config_from_original(config_json, directory, {"language_model.lm_head.weight": None})
    return _hf_config(config_json)


def load_janus(directory: Path, config_json: dict, family: str | None = None) -> Checkpoint:
    """The reference model of an HF or original-format checkpoint; `family` ("janus-pro" or "janus": the prompt
    format) defaults to what the checkpoint names itself."""
    if config_json.get("model_type") == "janus":
        source_format, config = "hf", _hf_config(config_json)
        source = open_weights(directory, HF_WEIGHTS)
    else:
        source_format = "original"
        source = open_weights(directory, ORIGINAL_WEIGHTS)
        config = original_format.config_from_original(config_json, directory, source.shapes)
        source = source.renamed(original_format.hf_mapping(source.shapes))
    model, weights = _build_model(config, source, directory)
    tokenizer = tokenizer_file(directory)
    model.generation_config = _generation_config(directory, model.config, tokenizer)
    return Checkpoint(model=model, directory=directory, source_format=source_format, weights=weights,
                      family=family or _guess_family(config_json), tokenizer_file=tokenizer,
                      processor=processor_settings(directory))


def _generation_config(directory: Path, config, tokenizer: Path):
    """The checkpoint's generation settings, completed with what transformers' image generation needs."""
    from transformers import GenerationConfig

    from .metadata import token_id, tokenizer_vocab

    text = config.text_config
    if (directory / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(directory, local_files_only=True)
    else:
        generation = GenerationConfig(bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id,
                                      pad_token_id=text.pad_token_id, guidance_scale=5.0, temperature=1.0)
    if not (getattr(generation, "generation_kwargs", None) or {}).get("boi_token_id"):
        generation.generation_kwargs = {"boi_token_id": token_id(tokenizer_vocab(tokenizer), "<begin_of_image>")}
    return generation


def _guess_family(config_json: dict) -> str:
    """Janus-1.3B and Janus-Pro share shapes; the original checkpoints name themselves in `_name_or_path`."""
    name = str(config_json.get("_name_or_path", "")).lower()
    return "janus" if "janus-1.3b" in name or "janus_1.3b" in name else "janus-pro"


def _hf_config(config_json: dict):
    from transformers import JanusConfig

    try:
        return JanusConfig(**{k: v for k, v in config_json.items() if k != "model_type"})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config.json is not a valid Janus configuration ({exc})",
                              "download config.json again") from None


def _build_model(config, source: WeightSource, directory: Path):
    """The model with its parameters on the meta device, and the `LazyWeights` that reads them (as fp32, what
    loading them eagerly gives); persistent buffers the checkpoint holds are read now."""
    from transformers import JanusForConditionalGeneration

    config._attn_implementation = "eager"  # matches the exported graphs, whose mask is built explicitly
    with meta_parameters():
        model = JanusForConditionalGeneration(config).eval()
    expected = {k: v.shape for k, v in model.state_dict().items()}
    shapes = dict(source.shapes)
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
        shapes.pop("lm_head.weight", None)
    check_shapes(expected, shapes, directory)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name in shapes:
                buffer.copy_(source.read(name))
    return model, LazyWeights(model, source)
