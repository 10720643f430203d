"""The TensorRT backend's KV cache: device buffers in the manifest's KV dtype, written in place, decode in a CUDA graph.

- The cache is a `DeviceKVCache` (device_cache.py, as on ONNX Runtime's GPU providers): one buffer per cache tensor
  and a spare, sized for the request's capacity (`kv.request_capacity`, from the pipeline), borrowed from the
  backend's `BufferPool` and returned on `close()` (the next request reuses them). The engine reads a contiguous
  [B,H,slots,hd] view at each buffer's start, `slots` = `kv.bucket(length)`; the engine returns only the new
  positions' keys/values, and one strided cudaMemcpy2DAsync per tensor copies them into their slots. Those copies
  stay outside the captured graph: their destination moves one slot every step, and a graph bakes addresses in.
  Crossing a bucket re-lays the cache out for the wider view (`kv.grow_view`: through the spare, or into a larger
  set of buffers when a cache without a capacity, a chat session's, fills).
- A prefill runs in chunks of `PREFILL_CHUNK` positions (causal attention: the same result as one pass), so its
  new keys/values never take as much memory as the cache itself; its inputs and outputs live in one buffer sized
  for the request's largest chunk (`prefill_layout`), freed when the decoder closes. (A step that wants every
  position's hidden states, JanusFlow's flow step, runs in one pass.) A decode step's IO buffers are sized for the
  capacity when the decoder opens, so decoding allocates nothing.
- The step's mask stays on the device, mirrored in pinned staging; each step uploads only the columns that changed
  (the previous new position's to the new one's: one small 2D copy), and the position ids.
- A decode step has static shapes and addresses: after anything a graph bakes in changes (`TrtGraph.version`:
  profile, shapes, addresses; or another decoder bound the same context) it runs once uncaptured (TensorRT does
  deferred shape work then), then is captured into a CUDA graph that later steps replay. If capture fails (an
  engine TensorRT cannot capture), the step runs without a graph from then on: one warning, the error kept in
  `TrtGraph.capture_error`.
- A verify pass of speculative decoding (`is_verify_pass`: 2 to `MAX_WINDOW` positions per row on a cache that
  holds a prompt, every position's hidden state wanted) runs exactly like a decode step, S positions wide: in the
  step buffers, which the first verify pass widens to its S (`step_io_bytes`; the speculative loop's first pass is
  its widest), and in the step's CUDA graph, captured once per (bucket, S) and replayed while neither changes.
  Prefill chunks (a first step on an empty cache, or `last_only`) and JanusFlow's 577-position flow steps are
  never captured.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from .. import kv
from ..kv import kv_input
from ..manifest import Manifest
from ..pipelines.speculative import MAX_WINDOW
from ..tensor_names import ATTENTION_MASK, HIDDEN_STATES, INPUTS_EMBEDS, POSITION_IDS
from .base import KVDecoder, check_step, step_mask
from .cuda import CaptureFailed, CudaGraph, DeviceBuffer, DeviceTensor, aligned, copy_rows, staging_key, upload_rows
from .device_cache import DeviceKVCache
from .kv_host import BufferPool

if TYPE_CHECKING:
    from .tensorrt import TrtGraph

log = logging.getLogger(__name__)


PREFILL_CHUNK = 512  # positions per prefill pass: bounds the prefill's new keys/values (1B, 2 rows: 192 MiB)


def prefill_layout(model: kv.CacheDims, dtype: str | np.dtype, rows: int, positions: int,
                   slots: int) -> dict[str, int]:
    """A prefill chunk's buffer, tensor by tensor, each at a 256-byte aligned offset in this order: the decoder's
    inputs and outputs for `positions` new positions on `slots` (`kv.decode_io_bytes`)."""
    return {name: aligned(nbytes) for name, nbytes in kv.decode_io_bytes(model, dtype, rows, slots, positions).items()}


def step_io_bytes(model: kv.CacheDims, dtype: str | np.dtype, rows: int, capacity: int,
                  width: int = 1) -> dict[str, int]:
    """The decoder graph's step buffers for steps of up to `width` positions per row at full `capacity`, by tensor:
    `kv.decode_io_bytes` for one position; a verify pass's are a prefill chunk's tensors (`prefill_layout`) for
    `width` positions on `capacity` slots. Reserved when a request opens (a verify pass: its first pass)."""
    if width == 1:
        return kv.decode_io_bytes(model, dtype, rows, capacity)
    return prefill_layout(model, dtype, rows, width, capacity)


def is_verify_pass(positions: int, cached: int, last_only: bool) -> bool:
    """A speculative verify pass: a window of positions (2 to `MAX_WINDOW`) fed after a prompt, every hidden state
    wanted. Anything else with several positions is a prefill (first step, or `last_only`) or a flow step."""
    return 1 < positions <= MAX_WINDOW and cached > 0 and not last_only


class TrtKVDecoder(KVDecoder):
    cache: DeviceKVCache

    def __init__(self, graph: "TrtGraph", manifest: Manifest, batch: int, capacity: int | None, pool: BufferPool,
                 registry: list):
        model = manifest.model
        self.graph, self.stream, self.registry = graph, graph.stream, registry
        self.batch, self.length, self.capacity = batch, 0, capacity
        self.max_context, self.hidden_size = manifest.limits.max_context, model.hidden_size
        self.model, self.dtype = model, np.dtype(manifest.kv_dtype)
        self.cache = DeviceKVCache(pool, partial(copy_rows, stream=self.stream), model, manifest.kv_dtype, batch,
                                   capacity, self.max_context)
        output = kv.kv_form(manifest.kv_cache.form).output  # the in_place form (`build` refuses the others)
        self.new_outputs = [(name, output(name)) for name in self.cache.names]  # (cache tensor, its new positions)
        self.cache_views: dict[str, DeviceTensor] | None = None
        self.prefill: DeviceBuffer | None = None  # the prefill's outputs, sized by the request
        self.step_graph: CudaGraph | None = None
        self.step_version: int | None = None
        self.mask_layout: tuple[int, ...] | None = None  # (slots, new positions, where) of the device mask
        self.captures = self.replays = 0  # decode steps and verify passes captured / replayed (tests, bench)
        self.step_width = 1  # positions per row the step buffers hold (a verify pass widens them)
        # the pinned buffers its host inputs go up through (`trt_memory` counts them)
        self.staging_keys = {name: staging_key(graph.name, name) for name in (ATTENTION_MASK, POSITION_IDS,
                                                                              INPUTS_EMBEDS)}
        registry.append(self)
        self._reserve_step_io()

    def _reserve_step_io(self) -> None:
        """Grows the decoder graph's IO buffers for a step of `step_width` positions at full capacity now, not while
        decoding."""
        sizes = step_io_bytes(self.model, self.dtype, self.batch, self.cache.allocated, self.step_width)
        for name, nbytes in sizes.items():
            self.graph.buffer(name, nbytes)

    def device_memory_bytes(self) -> dict[str, int]:
        """What this decoder holds (its cache and spare, its prefill outputs), by `device_memory_bytes` category."""
        buffers = self.cache.buffers
        return {"kv_cache": sum(b.nbytes for b in buffers[:-1]), "kv_spare": buffers[-1].nbytes if buffers else 0,
                "prefill_io": self.prefill.nbytes if self.prefill is not None else 0}

    def _cache_inputs(self) -> dict[str, DeviceTensor]:
        """The cache tensors' [B,H,slots,hd] views, built once per layout (`_reserve` drops them), not per step."""
        if self.cache_views is None:
            shape = tuple(self.cache.shape)
            self.cache_views = {kv_input(name): DeviceTensor(buffer, shape, self.dtype)
                                for name, buffer in zip(self.cache.names, self.cache.buffers)}
        return self.cache_views

    def _reserve(self, needed: int) -> None:
        """Widens the cache's view to `needed` slots (`DeviceKVCache.reserve`); step buffers follow its allocation."""
        before = self.cache.allocated
        if self.cache.reserve(needed, self.length):
            self.cache_views = None
            if self.cache.allocated != before:
                self._reserve_step_io()

    def _mask(self, attention_mask: np.ndarray, seq: int, target: DeviceTensor) -> DeviceTensor:
        """The step's [B, slots + seq] mask at `target`, mirrored in pinned staging. If the device holds this
        decoder's mask of the same layout there, only the columns from the first changed one to the new positions
        go up (a decode step: the previous new position's column, the unused slots after it, the new one: at most
        a bucket + 1 columns per row, one 2D copy); otherwise the whole mask (one copy)."""
        slots = self.cache.slots
        width = slots + seq
        staging = self.stream.staging.buffer(self.staging_keys[ATTENTION_MASK], self.batch * width * 8)
        mirror = staging.host((self.batch, width), np.dtype(np.int64))  # waits only if a copy may still read it
        layout = (slots, seq, target.ptr, staging.ptr)
        first = 0
        if self.mask_layout == layout and self.graph.mask_owner is self:
            cached = self.length
            changed = np.flatnonzero((mirror[:, :cached] != attention_mask[:, :cached]).any(axis=0))
            first = int(changed[0]) if changed.size else cached
            mirror[:, first:cached] = attention_mask[:, first:cached]
            mirror[:, cached:slots] = 0  # slots a `rewind` gave back may still say 1 here (uploaded below)
            mirror[:, slots:] = attention_mask[:, cached:]
        else:
            mirror[...] = step_mask(attention_mask, self.length, slots)
            self.mask_layout, self.graph.mask_owner = layout, self
        upload_rows(target.ptr + first * 8, width * 8, staging, first * 8, width * 8, (width - first) * 8,
                    self.batch, self.stream)
        return DeviceTensor(target.buffer, (self.batch, width), np.dtype(np.int64), target.offset)

    def step(self, inputs_embeds, attention_mask: np.ndarray, position_ids: np.ndarray, last_only: bool = False):
        check_step(self, tuple(inputs_embeds.shape), attention_mask.shape, self.max_context)
        seq = inputs_embeds.shape[1]
        self._reserve(self.length + seq)
        if seq == 1 or is_verify_pass(seq, self.length, last_only):
            if seq > self.step_width:
                self.step_width = seq
                self._reserve_step_io()
            return self._decode(inputs_embeds, attention_mask, position_ids)
        chunk = PREFILL_CHUNK if last_only else seq  # every position's hidden state is wanted otherwise
        for start in range(0, seq, chunk):
            end = min(seq, start + chunk)
            hidden = self._prefill(inputs_embeds, start, end, attention_mask[:, :self.length + end - start],
                                   position_ids[:, start:end])
        if last_only:  # once per request: the last position of every row, into the step's buffer
            last = DeviceTensor(self.graph.buffers[HIDDEN_STATES], (self.batch, 1, self.hidden_size), hidden.dtype)
            row, positions = self.hidden_size * hidden.dtype.itemsize, hidden.shape[1]
            copy_rows(last.ptr, row, hidden.ptr + (positions - 1) * row, positions * row, row, self.batch, self.stream)
            return last.download(self.stream)
        return hidden

    def _prefill(self, embeds, start: int, end: int, mask: np.ndarray, positions: np.ndarray) -> DeviceTensor:
        """Positions start..end of a prefill through the decoder, their keys/values into the cache."""
        graph, seq = self.graph, end - start
        places = self._prefill_places(seq)
        if isinstance(embeds, np.ndarray):
            embeds = self._upload(INPUTS_EMBEDS, places[INPUTS_EMBEDS], embeds[:, start:end])
        else:  # rows of a device tensor [B, S, D]: one 2D copy into the prefill buffer
            row, place = self.hidden_size * embeds.dtype.itemsize, places[INPUTS_EMBEDS]
            copy_rows(place.ptr, seq * row, embeds.ptr + start * row, embeds.shape[1] * row, seq * row, self.batch,
                      self.stream)
            embeds = DeviceTensor(place.buffer, (self.batch, seq, self.hidden_size), embeds.dtype, place.offset)
        inputs = {INPUTS_EMBEDS: embeds, ATTENTION_MASK: self._mask(mask, seq, places[ATTENTION_MASK]),
                  POSITION_IDS: self._upload(POSITION_IDS, places[POSITION_IDS], positions),
                  **self._cache_inputs()}
        outputs = graph.bind(inputs, {name: places[name] for name in graph.outputs})
        graph.execute()
        self._write_new(outputs, seq)
        self.length += seq
        return outputs[HIDDEN_STATES]

    def _upload(self, name: str, place: DeviceTensor, value: np.ndarray) -> DeviceTensor:
        value = np.ascontiguousarray(value, dtype=self.graph.dtypes[name])
        place.buffer.upload(value, self.stream, self.staging_keys[name], place.offset)
        return DeviceTensor(place.buffer, tuple(value.shape), value.dtype, place.offset)

    def _prefill_places(self, seq: int) -> dict[str, DeviceTensor]:
        """Where a `seq`-position step's inputs and outputs go: this decoder's prefill buffer, exactly the size the
        first (largest) chunk needs (a larger later one replaces it), freed when the decoder closes."""
        layout = prefill_layout(self.model, self.dtype, self.batch, seq, self.cache.slots)
        nbytes = sum(layout.values())
        if self.prefill is None or self.prefill.nbytes < nbytes:
            if self.prefill is not None:
                self.stream.synchronize()
                self.prefill.free()
            self.prefill = DeviceBuffer(nbytes)
        places, offset = {}, 0
        for name, size in layout.items():
            places[name], offset = DeviceTensor(self.prefill, (), np.dtype(np.uint8), offset), offset + size
        return places

    def _decode(self, inputs_embeds, attention_mask: np.ndarray, position_ids: np.ndarray) -> DeviceTensor:
        """A decode step or verify pass (S positions per row, within the step buffers): replays the step's CUDA
        graph, or binds, runs and captures it."""
        graph, seq = self.graph, inputs_embeds.shape[1]
        places = {name: DeviceTensor(graph.buffers[name], (), np.dtype(np.int64))
                  for name in (ATTENTION_MASK, POSITION_IDS, INPUTS_EMBEDS)}
        inputs = {ATTENTION_MASK: self._mask(attention_mask, seq, places[ATTENTION_MASK]),
                  POSITION_IDS: self._upload(POSITION_IDS, places[POSITION_IDS], position_ids),
                  # on the device already: bound where it lies (a stable address in the decode loop: no recapture)
                  INPUTS_EMBEDS: self._upload(INPUTS_EMBEDS, places[INPUTS_EMBEDS], inputs_embeds)
                  if isinstance(inputs_embeds, np.ndarray) else inputs_embeds, **self._cache_inputs()}
        outputs = self._run_step(inputs)
        self._write_new(outputs, seq)
        self.length += seq
        return outputs[HIDDEN_STATES]

    def _run_step(self, inputs: dict[str, DeviceTensor]) -> dict[str, DeviceTensor]:
        """Replays the step's CUDA graph, or binds, runs and captures it (one graph: a new bucket, S or binding
        replaces it)."""
        graph = self.graph
        outputs = graph.bind(inputs)  # no TensorRT call when nothing changed
        if self.step_graph is not None and self.step_version == graph.version:
            self.step_graph.launch()
            self.replays += 1
            return outputs
        self.drop_step_graph()
        graph.execute()  # this step's result; TensorRT's deferred shape work happens outside the capture
        if graph.capture_error is None:
            try:
                self.step_graph = CudaGraph(self.stream, graph.execute)
                self.step_version = graph.version
                self.captures += 1
            except CaptureFailed as failure:
                graph.capture_error = failure.__cause__
                log.warning("CUDA-graph capture of the %s engine failed; decoding continues without graphs "
                            "(slower per step): %s", graph.name, failure.__cause__)
        return outputs

    def _write_new(self, outputs: dict[str, DeviceTensor], seq: int) -> None:
        """The new positions' keys/values [B,H,seq,hd] into slots length..length+seq-1 of every tensor."""
        self.cache.write({name: outputs[output].ptr for name, output in self.new_outputs}, self.length, seq)

    def drop_step_graph(self) -> None:
        if self.step_graph is not None:
            self.step_graph.destroy()
            self.step_graph, self.step_version = None, None

    def close(self) -> None:
        self.drop_step_graph()
        self.cache.release()
        self.cache_views = None
        if self.prefill is not None:
            self.stream.synchronize()
            self.prefill.free()
            self.prefill = None
        if self in self.registry:
            self.registry.remove(self)
