"""Loading a checkpoint from a local directory, whichever family it is: the registry (export/families) finds the
family whose `detect` accepts its config.json, and that family loads it (both formats it has).

Never touches the network. Every problem with the files is a `CheckpointError` naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

from janus_edge.runtime.errors import CheckpointError
from janus_edge.runtime.manifest import ModelInfo

from .families import family_for_checkpoint
from .families.base import Checkpoint, Family


def checkpoint_family(directory: str | Path) -> tuple[Family, dict]:
    """The family of the checkpoint in `directory`, and its config.json."""
    if not Path(directory).is_dir():
        raise CheckpointError(f"model directory {directory} does not exist", "pass the checkpoint's directory")
    return family_for_checkpoint(Path(directory))


def load_checkpoint(directory: str | Path, family: str | None = None, vae: str | Path | None = None) -> Checkpoint:
    """The loaded checkpoint. `family`: the prompt format a Janus checkpoint uses ("janus-pro" or "janus"; default:
    what it names itself); `vae`: the SDXL VAE directory (diffusers layout) that JanusFlow checkpoints need."""
    found, config_json = checkpoint_family(directory)
    return found.load(Path(directory), config_json, prompt_family=family, vae=vae)


def load_config(directory: str | Path) -> ModelInfo:
    """The checkpoint's `ModelInfo` from its config alone, without reading weights (for planning)."""
    directory = Path(directory)
    found, config_json = family_for_checkpoint(directory)
    return found.describe(directory, config_json)

