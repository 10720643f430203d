"""A checkpoint's weights by name, read one tensor at a time: never the whole state dict at once.

Export, `compare` and `tiny` of the full-size 7B (14.8 GB of bf16 weights, 30 GB in fp32) must fit in 20 GB, so
the model is built on the meta device (`lazy_model`) and each parameter is read from its file only while a graph
needs it. safetensors files are read through `safe_open` (its header gives names, dtypes and shapes); PyTorch
pickles through `torch.load(mmap=True, weights_only=True)`, opened again for every read so that the mapping, whose
touched pages count as resident memory, is dropped as soon as the tensor is copied out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from janus_edge.runtime.errors import CheckpointError

from .weights import load_pickle, read_json


@dataclass
class WeightSource:
    """name -> shape of every tensor the files hold, and `read(name)`, a fresh tensor as stored (dtype included)."""

    shapes: dict[str, tuple[int, ...]]
    read: Callable[[str], "object"]

    def renamed(self, mapping: dict[str, tuple[str, Callable]]) -> WeightSource:
        """A source under other names: new name -> (name here, function of the tensor read here); `mapping` must
        give each new name's shape by applying the function to a tensor of the old shape on the meta device."""
        import torch

        shapes = {new: tuple(change(torch.empty(self.shapes[old], device="meta")).shape)
                  for new, (old, change) in mapping.items()}
        return WeightSource(shapes, lambda name: mapping[name][1](self.read(mapping[name][0])).contiguous())


def open_weights(directory: Path, candidates: tuple[str, ...]) -> WeightSource:
    """The weights of the first of `candidates` present in `directory` (an index names its shards)."""
    for name in candidates:
        path = directory / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            index = read_json(path, "map from weight names to shard files")
            shards = sorted(set(index.get("weight_map", {}).values()))
            if not shards:
                raise CheckpointError(f"{path} has no weight_map", "download the index file again")
            return _joined([_open_file(directory / shard) for shard in shards])
        return _open_file(path)
    raise CheckpointError(f"{directory} has no weight files: expected one of {', '.join(candidates)}",
                          "download the checkpoint's weights into that directory")


def load_weights(directory: Path, candidates: tuple[str, ...]) -> dict:
    """Every weight of `open_weights(directory, candidates)`, read now (a checkpoint built eagerly: JanusFlow's)."""
    source = open_weights(directory, candidates)
    return {name: source.read(name) for name in source.shapes}


def _joined(sources: list[WeightSource]) -> WeightSource:
    owner = {name: source for source in sources for name in source.shapes}
    return WeightSource({name: s for source in sources for name, s in source.shapes.items()},
                        lambda name: owner[name].read(name))


def _open_file(path: Path) -> WeightSource:
    if not path.is_file():
        raise CheckpointError(f"weight shard {path} is missing (the index names it)", "download it again")
    return _safetensors(path) if path.suffix == ".safetensors" else _pickle(path)


def _safetensors(path: Path) -> WeightSource:
    from safetensors import SafetensorError, safe_open

    def read(name: str):
        try:
            with safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor(name).clone()  # a copy of its own: the file's mapping closes here
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} cannot be read as safetensors (truncated or corrupt: {exc})",
                                  "download the file again and compare its size with the original") from None

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read as safetensors (truncated or corrupt: {exc})",
                              "download the file again and compare its size with the original") from None
    return WeightSource(shapes, read)


def _pickle(path: Path) -> WeightSource:
    def read(name: str):
        return load_pickle(path)[name].clone()

    return WeightSource({name: tuple(tensor.shape) for name, tensor in load_pickle(path).items()}, read)
