"""What a model family is, in the spirit of optimum's one OnnxConfig per architecture: how to recognise its
checkpoints, load them (every format it has), describe them (`ModelInfo`), which graphs it exports and what it
adds to the manifest, its presets and tiny checkpoints, and its parameter counts for `plan`.

The exporter, `compare`, `plan` and `janus-edge tiny` call these methods and never ask which family they hold. A
family module imports torch and transformers only inside the methods that load, build graphs or write checkpoints:
the registry, presets and parameter counts stay torch-free (`plan` and `gpu-check` run without torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import FlowSettings, GenerationDefaults, ModelInfo, PromptFormat, SpecialTokens


@dataclass
class Checkpoint:
    """A loaded checkpoint: the reference model plus what export needs to describe it."""

    model: "object"  # a torch.nn.Module
    directory: Path
    source_format: str  # "hf" or "original"
    family: str  # the ModelInfo.family it is exported as ("janus-pro", "janus", "janusflow", ...)
    tokenizer_file: Path
    processor: dict = field(default_factory=dict)  # merged preprocessor/processor settings
    weights: "object" = None  # a lazy_model.LazyWeights: the model's parameters, read when a graph needs them

    def __post_init__(self):
        if self.weights is None:  # a model loaded eagerly: its parameters are its values
            from ..lazy_model import LazyWeights
            from ..weight_source import WeightSource

            self.weights = LazyWeights(self.model, WeightSource({}, lambda name: None))


@dataclass
class ManifestExtras:
    """What a family writes into the manifest besides the graphs, precision and limits."""

    tokens: SpecialTokens
    prompt: PromptFormat
    generation: GenerationDefaults
    flow: FlowSettings | None = None
    producer: dict[str, str] = field(default_factory=dict)  # added to the exporter's versions


class Family:
    """One model family. Subclasses set the class attributes and implement the methods."""

    name: str = ""  # what `janus-edge tiny --family` calls it
    title: str = ""  # what messages call it ("Janus-Pro")
    names: tuple[str, ...] = ()  # the ModelInfo.family values it exports and answers to
    presets: dict[str, ModelInfo] = {}  # "tiny" and real sizes
    published: tuple[str, ...] = ()  # presets of real models (`plan --model`, `tiny --config`)
    generation: str = "tokens"  # how it makes images: "tokens" (a decode step per image token) or "flow" (Euler steps)
    fp32_graphs: tuple[str, ...] = ()  # graphs exported fp32 whatever the precision asked
    required: tuple[str, ...] = ()  # the optional ModelInfo fields `graph_parameters` counts with

    def detect(self, config_json: dict) -> bool:
        """Whether a checkpoint's config.json is this family's (the registry asks the newest family first)."""
        raise NotImplementedError

    def load(self, directory: Path, config_json: dict, prompt_family: str | None = None, vae=None,
             lazy: bool = False) -> Checkpoint:
        """The reference model and what export needs; `prompt_family` and `vae` as `load_checkpoint` takes them.
        `lazy`: parameters stay unread until a graph needs them (`checkpoint.weights`), as export and `compare` want;
        otherwise they are all read (a model to run whole). A family may always load eagerly."""
        raise NotImplementedError

    def describe(self, directory: Path, config_json: dict) -> ModelInfo:
        """The `ModelInfo` of a checkpoint directory from its config alone (for `plan`)."""
        raise RequestError(f"{directory} is a {self.title} checkpoint; plan counts {self.title} by its preset",
                           f"use --model {' or '.join(self.published)}")

    def model_info(self, checkpoint: Checkpoint) -> ModelInfo:
        """The description the manifest records for a loaded checkpoint."""
        raise NotImplementedError

    def manifest_extras(self, checkpoint: Checkpoint, info: ModelInfo) -> ManifestExtras:
        """Token ids, prompt format, generation defaults and the rest the manifest records for a checkpoint."""
        raise NotImplementedError

    def graph_specs(self, info: ModelInfo, tokens: SpecialTokens, kv_dtype: str = "float32",
                    form: str = "in_place") -> list:
        """The `GraphSpec`s of every graph, in the order the manifest lists them; the KV cache in `kv_dtype`, its
        form `form`; `tokens`: the manifest's token ids (for samples that need one). Each spec's `make_module` takes
        the loaded `Checkpoint`."""
        raise NotImplementedError

    def graph_precision(self, graph: str, precision: str) -> str:
        """The precision graph `graph` is exported at when `precision` is asked."""
        return "fp32" if graph in self.fp32_graphs else precision

    def write_tiny(self, out_dir: str | Path, fmt: str = "hf", seed: int = 0, preset: str = "tiny",
                   max_shard_size: str | None = None) -> str:
        """Writes a random-weight checkpoint of a preset (`janus-edge tiny`); returns the sentence saying what."""
        raise NotImplementedError

    def graph_parameters(self, info: ModelInfo) -> dict[str, int]:
        """Parameter count of each exported graph (torch-free)."""
        raise NotImplementedError

    def graph_flops(self, info: ModelInfo) -> dict[str, float]:
        """FLOPs of graphs `plan` cannot count as 2 per parameter per position: per row of a flow step (the flow
        encoder and decoder), per image (a VAE decoder). Empty where every graph is counted so."""
        return {}

    def missing(self, info: ModelInfo) -> list[str]:
        """The fields `graph_parameters` counts with that `info` lacks (exports written before they were)."""
        return [name for name in self.required if getattr(info, name) is None]
