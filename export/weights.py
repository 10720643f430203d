"""Reading a checkpoint directory's files, for every family's loader: JSON settings, the tokenizer, and weights
(safetensors or PyTorch pickles loaded with weights_only=True, single or sharded with an index), checked against
the shapes the model expects.

Never touches the network. Every problem with the files is a `CheckpointError` naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

from janus_edge.runtime.errors import CheckpointError
from janus_edge.runtime.jsonfile import read_object

HF_WEIGHTS = ("model.safetensors.index.json", "model.safetensors")
ORIGINAL_WEIGHTS = ("pytorch_model.bin.index.json", "pytorch_model.bin") + HF_WEIGHTS
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def read_json(path: Path, what: str) -> dict:
    return read_object(path, CheckpointError, (f"{path} is missing: it should hold the {what}",
                       "pass the directory of a downloaded Janus checkpoint (HF or original format)"),
                       what, "download the file again")


def tokenizer_file(directory: Path) -> Path:
    """The checkpoint's tokenizer.json, which every export copies."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: it should hold the text tokenizer",
                              "copy tokenizer.json from the checkpoint's download")
    return path


def processor_settings(directory: Path) -> dict:
    """The image preprocessing and processor settings, merged (an HF `image_processor` section flattened)."""
    settings: dict = {}
    for name in PROCESSOR_FILES:
        if (directory / name).is_file():
            data = read_json(directory / name, "image preprocessing settings")
            settings.update(data.get("image_processor", {}))
            settings.update({k: v for k, v in data.items() if k != "image_processor"})
    return settings


def load_pickle(path: Path) -> dict:
    """A PyTorch state dict, memory-mapped (nothing is read until a tensor is used), loaded with weights_only=True."""
    import torch

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


def check_shapes(expected: dict, state: dict, directory: Path) -> None:
    """Refuses weights whose names or shapes disagree with the model that config.json describes (`state`: name ->
    tensor or shape)."""
    state = {k: tuple(getattr(v, "shape", v)) for k, v in state.items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: weights {state[k]}, config {tuple(expected[k])}"
             for k in sorted(set(state) & set(expected)) if state[k] != tuple(expected[k])]
    problems = ([f"{len(wrong)} tensors whose shape disagrees with config.json, e.g. {wrong[0]}"] if wrong else []) \
        + ([f"{len(missing)} missing weights, e.g. {missing[0]}"] if missing else []) \
        + ([f"{len(unexpected)} unexpected weights, e.g. {unexpected[0]}"] if unexpected else [])
    if problems:
        raise CheckpointError(f"the weights in {directory} do not match its config.json: " + "; ".join(problems),
                              "check that config.json belongs to these weights (same model size and version)")
