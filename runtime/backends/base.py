"""The seam between the pipelines and whatever runs the graphs.

A backend opens the exported graphs by name and runs them on numpy feeds; it also owns the decoder's KV cache,
because where the cache lives (ONNX Runtime's memory, CPU or GPU; TensorRT's device buffers) is the one thing that
differs between backends. The pipelines never ask which backend they run on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InternalError, RequestError
from ..manifest import Manifest
from ..sampling import Sampler
from .kv_host import PooledKVCache

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations are not evaluated at run time (3.10 on JetPack 6.2)


class Closeable:
    """`close()` frees what the object holds; `with` closes it on exit."""

    def close(self) -> None:
        """Frees what this object holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GraphSession(ABC):
    """One loaded graph."""

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the graph; returns every output by name."""


class KVDecoder(Closeable, ABC):
    """The LLM decoder with its KV cache for one batch of rows; `length` is the number of cached positions.

    Close it (or use it as a context manager) to hand its cache back to the backend for the next request.
    """

    batch: int
    length: int
    capacity: int | None  # the positions its cache was sized for (None: grows as needed)
    cache: PooledKVCache  # kv_host.HostKVCache or device_cache.DeviceKVCache

    @property
    def nbytes(self) -> int:
        """Bytes its KV cache holds now."""
        return self.cache.nbytes

    @abstractmethod
    def step(self, inputs_embeds, attention_mask: np.ndarray, position_ids: np.ndarray, last_only: bool = False):
        """Appends `inputs_embeds` [B,S,D] to the cache; returns the hidden states [B,S,D] ([B,1,D] if `last_only`).

        `attention_mask` [B, length+S] covers the cached and the new positions (0 marks left padding).
        """

    def rewind(self, length: int) -> None:
        """Forgets every cached position from `length` on (JanusFlow re-runs its flow tokens on one prompt cache)."""
        if not 0 <= length <= self.length:
            raise InternalError(f"cannot rewind a cache of {self.length} positions to {length}")
        self.length = length


def step_mask(attention_mask: np.ndarray, length: int, slots: int) -> np.ndarray:
    """The decoder graph's mask [B, slots + S] from the step's [B, length + S]: cached positions, unused slots
    (0), then the new positions."""
    batch, seq = attention_mask.shape[0], attention_mask.shape[1] - length
    mask = np.zeros((batch, slots + seq), dtype=np.int64)
    mask[:, :length], mask[:, slots:] = attention_mask[:, :length], attention_mask[:, length:]
    return mask


def check_step(decoder: KVDecoder, embeds_shape: tuple, mask_shape: tuple, max_context: int) -> None:
    seq = embeds_shape[1]
    if embeds_shape[0] != decoder.batch or tuple(mask_shape) != (decoder.batch, decoder.length + seq):
        raise InternalError(f"decoder step shapes disagree: embeds {embeds_shape}, mask {mask_shape}, cache length "
                            f"{decoder.length}, batch {decoder.batch}")
    if decoder.length + seq > max_context:
        raise RequestError(f"the sequence reached {decoder.length + seq} tokens, over the exported context of "
                           f"{max_context}", "export with a larger --max-context or shorten the request")


class Backend(Closeable, ABC):
    """Opens an export's graphs lazily, on first use."""

    name = "base"

    def __init__(self, directory: Path, manifest: Manifest):
        self.directory, self.manifest = Path(directory), manifest
        self._sessions: dict[str, GraphSession] = {}

    def graph(self, name: str) -> GraphSession:
        if name not in self._sessions:
            if name not in self.manifest.graphs:
                raise InternalError(f"graph {name!r} is not in the manifest")
            self._sessions[name] = self._open(name)
        return self._sessions[name]

    def run(self, name: str, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        return self.graph(name).run(feeds)

    def release(self, name: str) -> None:
        """Frees one loaded graph (it loads again on next use): for tools that hold one big graph at a time."""
        self._sessions.pop(name, None)

    @abstractmethod
    def kv_decoder(self, batch: int, capacity: int | None = None) -> KVDecoder:
        """A decoder with an empty KV cache for `batch` rows and up to `capacity` positions (None: as many as the
        request reaches, up to the exported context), kept wherever this backend keeps tensors."""

    def close(self) -> None:
        """Frees the loaded graphs and pooled buffers; graphs load again if the backend is used afterwards."""
        self._sessions.clear()

    def apply(self, graph: str, value):
        """Runs a graph of one input (an embedding, a head, the vision encoder, an image decoder) on `value`;
        returns its first output. Both names are the manifest's."""
        spec = self.manifest.graphs[graph]
        return self.run(graph, **{spec.inputs[0].name: value})[spec.outputs[0].name]

    def embed(self, graph: str, ids: np.ndarray):
        """Embeddings of token ids [B,S] from `graph`, left where the decoder reads them (host arrays here)."""
        return self.apply(graph, ids)

    def choose(self, head: str, hidden, sampler: Sampler, cfg_weight: float | None = None) -> np.ndarray:
        """Next tokens [N] from last hidden states [R,1,D]: head -> CFG mix (rows [cond; uncond]) -> sampler.

        Only token ids come back to the host; backends with device memory keep the logits there.
        """
        logits = self.apply(head, hidden)[:, -1]
        if cfg_weight is not None:
            n = logits.shape[0] // 2
            logits = logits[n:] + cfg_weight * (logits[:n] - logits[n:])
        return sampler(logits)

    @abstractmethod
    def _open(self, name: str) -> GraphSession:
        """Loads one graph."""
