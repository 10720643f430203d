"""The model families janus-edge exports, one object each (base.py says what a family is).

A new family is one module with a `Family` subclass and one `register` call (built-in ones: at the bottom here).
Torch-free: `plan` and `gpu-check` import the registry, presets and parameter counts without torch.
"""

from __future__ import annotations

from pathlib import Path

from janus_edge.runtime.errors import CheckpointError, RequestError
from janus_edge.runtime.manifest import ModelInfo

from ..weights import read_json
from .base import Family
from .janus import JanusFamily
from .janusflow import JanusFlowFamily

FAMILIES: list[Family] = []  # detection asks them in this order: the last registered first
MODELS: dict[str, ModelInfo] = {}  # every family's published presets: what `plan --model` knows by name


def register(family: Family) -> Family:
    """Adds a family; it is asked before the others whether a checkpoint is its own (`detect`)."""
    FAMILIES.insert(0, family)
    MODELS.update({name: family.presets[name] for name in family.published})
    return family


def family_named(name: str) -> Family:
    """The family a `ModelInfo.family` (or `janus-edge tiny --family`) names."""
    for family in FAMILIES:
        if name == family.name or name in family.names:
            return family
    raise RequestError(f"unknown model family {name!r}",
                       f"janus-edge knows {', '.join(sorted({n for f in FAMILIES for n in f.names}))}")


def family_for_checkpoint(directory: Path) -> tuple[Family, dict]:
    """The family whose checkpoint `directory` holds, and its config.json."""
    path = Path(directory) / "config.json"
    config_json = read_json(path, "model configuration (model_type 'janus' or 'multi_modality')")
    for family in FAMILIES:
        if family.detect(config_json):
            return family, config_json
    raise CheckpointError(f"{path} has model_type {config_json.get('model_type')!r}; janus-edge reads Janus "
                          "checkpoints ('janus' in Hugging Face format, 'multi_modality' in DeepSeek's format)",
                          "pass a Janus-Pro-1B/7B or Janus-1.3B checkpoint")


def graph_parameters(info: ModelInfo) -> dict[str, int]:
    """Parameter count of each graph of a described model (its family counts them)."""
    family = family_named(info.family)
    missing = family.missing(info)
    if missing:
        raise RequestError(f"the {info.family} model description lacks {', '.join(missing)}, which plan counts",
                           f"plan a preset ({', '.join(MODELS)}) or a Janus checkpoint directory")
    return family.graph_parameters(info)


register(JanusFamily())
register(JanusFlowFamily())  # asked first: its config.json is also model_type "multi_modality"
