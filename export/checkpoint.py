"""Loading a Janus checkpoint from a local directory, in either format users have, into transformers'
`JanusForConditionalGeneration` (the PyTorch reference every graph is checked against).

- Hugging Face format (model_type "janus"): safetensors, single or sharded with an index.
- Original DeepSeek format (model_type "multi_modality"): `pytorch_model*.bin` (loaded with weights_only=True) or
  safetensors, with names mapped by `original_format`.

Never touches the network. Every problem with the files is a `CheckpointError` naming the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from janus_edge.runtime.errors import CheckpointError
from janus_edge.runtime.jsonfile import read_object

from . import original_format

HF_WEIGHTS = ("model.safetensors.index.json", "model.safetensors")
ORIGINAL_WEIGHTS = ("pytorch_model.bin.index.json", "pytorch_model.bin") + HF_WEIGHTS


@dataclass
class Checkpoint:
    """A loaded checkpoint: the reference model plus what export needs to describe it."""

    model: "torch.nn.Module"
    directory: Path
    source_format: str  # "hf" or "original"
    family: str  # "janus-pro" or "janus"
    tokenizer_file: Path
    processor: dict = field(default_factory=dict)  # merged preprocessor/processor settings


def read_json(path: Path, what: str) -> dict:
    return read_object(path, CheckpointError, (f"{path} is missing: it should hold the {what}",
                       "pass the directory of a downloaded Janus checkpoint (HF or original format)"),
                       what, "download the file again")


def load_config(directory: str | Path):
    """The checkpoint's `JanusConfig` alone, without reading weights (for planning)."""
    directory = Path(directory)
    config_json = read_json(directory / "config.json", "model configuration")
    if config_json.get("model_type") == "multi_modality":
        return original_format.config_from_original(config_json, directory, {"language_model.lm_head.weight": None})
    if config_json.get("model_type") == "janus":
        return _hf_config(config_json)
    raise CheckpointError(f"{directory / 'config.json'} has model_type {config_json.get('model_type')!r}, not a Janus "
                          "checkpoint", "pass a Janus-Pro checkpoint directory")


def load_checkpoint(directory: str | Path, family: str | None = None, vae: str | Path | None = None) -> Checkpoint:
    """`vae` is the SDXL VAE directory (diffusers layout) that JanusFlow checkpoints need."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist", "pass the checkpoint's directory")
    config_json = read_json(directory / "config.json", "model configuration (model_type 'janus' or 'multi_modality')")
    model_type = config_json.get("model_type")
    if model_type == "multi_modality" and "vision_gen_enc_config" in config_json:  # JanusFlow: its own loader
        from .janusflow.checkpoint import load_janusflow

        return load_janusflow(directory, config_json, vae)
    if model_type == "janus":
        source_format, config = "hf", _hf_config(config_json)
        state = _load_weights(directory, HF_WEIGHTS)
    elif model_type == "multi_modality":
        source_format = "original"
        state = _load_weights(directory, ORIGINAL_WEIGHTS)
        config = original_format.config_from_original(config_json, directory, state)
        state = original_format.state_dict_to_hf(state)
    else:
        raise CheckpointError(f"{directory / 'config.json'} has model_type {model_type!r}; janus-edge reads Janus "
                              "checkpoints ('janus' in Hugging Face format, 'multi_modality' in DeepSeek's format)",
                              "pass a Janus-Pro-1B/7B or Janus-1.3B checkpoint")
    model = _build_model(config, state, directory)
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CheckpointError(f"{tokenizer_file} is missing: it should hold the text tokenizer",
                              "copy tokenizer.json from the checkpoint's download")
    model.generation_config = _generation_config(directory, model.config, tokenizer_file)
    processor = {}
    for name in ("preprocessor_config.json", "processor_config.json"):
        if (directory / name).is_file():
            data = read_json(directory / name, "image preprocessing settings")
            processor.update(data.get("image_processor", {}))
            processor.update({k: v for k, v in data.items() if k != "image_processor"})
    return Checkpoint(model=model, directory=directory, source_format=source_format,
                      family=family or _guess_family(config_json), tokenizer_file=tokenizer_file, processor=processor)


def _generation_config(directory: Path, config, tokenizer_file: Path):
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
        generation.generation_kwargs = {"boi_token_id": token_id(tokenizer_vocab(tokenizer_file), "<begin_of_image>")}
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


def _load_weights(directory: Path, candidates: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for name in candidates:
        path = directory / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            index = read_json(path, "map from weight names to shard files")
            shards = sorted(set(index.get("weight_map", {}).values()))
            if not shards:
                raise CheckpointError(f"{path} has no weight_map", "download the index file again")
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_load_file(directory / shard))
            return state
        return _load_file(path)
    raise CheckpointError(f"{directory} has no weight files: expected one of {', '.join(candidates)}",
                          "download the checkpoint's weights into that directory")


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weight shard {path} is missing (the index names it)", "download it again")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} cannot be read as safetensors (truncated or corrupt: {exc})",
                                  "download the file again and compare its size with the original") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for bad pickles; all mean the same to the user
        raise CheckpointError(f"{path} cannot be loaded as a PyTorch state dict with weights_only=True ({exc})",
                              "use the checkpoint's original pytorch_model*.bin files, or safetensors") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of named tensors",
                              "use the checkpoint's original pytorch_model*.bin files")
    return state


def check_shapes(expected: dict, state: dict[str, torch.Tensor], directory: Path) -> None:
    """Refuses weights whose names or shapes disagree with the model that config.json describes."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: weights {tuple(state[k].shape)}, config {tuple(expected[k])}"
             for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != tuple(expected[k])]
    problems = ([f"{len(wrong)} tensors whose shape disagrees with config.json, e.g. {wrong[0]}"] if wrong else []) \
        + ([f"{len(missing)} missing weights, e.g. {missing[0]}"] if missing else []) \
        + ([f"{len(unexpected)} unexpected weights, e.g. {unexpected[0]}"] if unexpected else [])
    if problems:
        raise CheckpointError(f"the weights in {directory} do not match its config.json: " + "; ".join(problems),
                              "check that config.json belongs to these weights (same model size and version)")


def _build_model(config, state: dict[str, torch.Tensor], directory: Path):
    from transformers import JanusForConditionalGeneration

    config._attn_implementation = "eager"  # matches the exported graphs, whose mask is built explicitly
    with torch.device("meta"):
        expected = {k: v.shape for k, v in JanusForConditionalGeneration(config).state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
        state.pop("lm_head.weight", None)
    check_shapes(expected, state, directory)
    state = {k: v.float() for k, v in state.items()}
    return JanusForConditionalGeneration.from_pretrained(None, config=config, state_dict=state,
                                                         dtype=torch.float32).eval()
