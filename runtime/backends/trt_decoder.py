"""The TensorRT backend's KV cache: device buffers in the manifest's KV dtype, written in place, decode in a CUDA graph.

- One buffer per cache tensor, sized for the request's capacity (`sizing.request_capacity`, from the pipeline),
  borrowed from the backend's `DevicePool` and returned on `close()` (the next request reuses them). The engine
  reads a contiguous [B,H,slots,hd] view at the buffer's start, `slots` = `sizing.bucket(length)` as on ONNX
  Runtime; the engine returns only the new positions' keys/values, and one strided cudaMemcpy2DAsync per tensor
  copies them into their slots. Nothing cache-sized is copied per step.
- Crossing a bucket re-lays each tensor out for the wider view (one 2D copy of its valid positions into a spare
  buffer, which then takes its place: in-place moves would overlap). A cache without a capacity (chat sessions)
  moves to a larger set of buffers when it fills.
- A decode step (batch B, one position, bucket `slots`) has static shapes and addresses: its first step binds and
  runs the engine once (TensorRT does deferred shape work then), then it is captured into a CUDA graph, which every
  later step of that bucket replays after uploading the step's mask and position ids. A profile change or a new
  bucket captures again. The step's IO buffers are sized for the capacity when the decoder opens, so decoding
  allocates nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import sizing
from ..manifest import Manifest, kv_input, kv_output
from .base import KVDecoder, check_step, step_mask
from .cuda import CudaGraph, DevicePool, DeviceTensor, copy_rows

if TYPE_CHECKING:
    from .tensorrt import TrtGraph


class TrtKVDecoder(KVDecoder):
    def __init__(self, graph: "TrtGraph", manifest: Manifest, batch: int, capacity: int | None, pool: DevicePool):
        model = manifest.model
        self.graph, self.pool, self.stream = graph, pool, graph.stream
        self.batch, self.length, self.capacity = batch, 0, capacity
        self.max_context, self.hidden_size = manifest.limits.max_context, model.hidden_size
        self.heads, self.head_dim, self.dtype = model.num_kv_heads, model.head_dim, np.dtype(manifest.kv_dtype)
        self.names = model.kv_names
        self.allocated = min(capacity or sizing.bucket(1), self.max_context)
        self.slots = min(sizing.bucket(1), self.allocated)
        self.buffers = pool.take(len(self.names) + 1, self._tensor_bytes(self.allocated), self.stream)
        self.nbytes = len(self.buffers) * self._tensor_bytes(self.allocated)  # with the spare for bucket crossings
        self.step_graph: CudaGraph | None = None
        self.step_key: tuple | None = None
        self.step_outputs: dict[str, DeviceTensor] = {}
        self.captures = self.replays = 0  # decode steps captured / replayed (tests and bench read them)
        self._reserve_step_io()

    def _tensor_bytes(self, slots: int) -> int:
        return self.batch * self.heads * slots * self.head_dim * self.dtype.itemsize

    def _reserve_step_io(self) -> None:
        """Grows the decoder graph's IO buffers for a decode step at full capacity now, not while decoding."""
        sizes = sizing.decode_io_bytes([kv_output(n) for n in self.names], self.heads, self.head_dim,
                                       self.hidden_size, self.dtype, self.batch, self.allocated)
        for name, nbytes in sizes.items():
            self.graph.buffer(name, nbytes, exact=True)

    def _cache_inputs(self) -> dict[str, DeviceTensor]:
        shape = (self.batch, self.heads, self.slots, self.head_dim)
        return {kv_input(name): DeviceTensor(buffer, shape, self.dtype)
                for name, buffer in zip(self.names, self.buffers)}

    def _relayout(self, slots: int, allocated: int) -> None:
        """Moves every tensor's valid positions into a [B,H,slots,hd] layout (a larger set if `allocated` grew)."""
        old_pitch, new_pitch = (s * self.head_dim * self.dtype.itemsize for s in (self.slots, slots))
        valid, rows = self.length * self.head_dim * self.dtype.itemsize, self.batch * self.heads
        if allocated > self.allocated:
            targets = self.pool.take(len(self.buffers), self._tensor_bytes(allocated), self.stream)
            for source, target in zip(self.buffers[:-1], targets[:-1]):  # the spare (last) holds nothing to keep
                if valid:
                    copy_rows(target.ptr, new_pitch, source.ptr, old_pitch, valid, rows, self.stream)
            self.pool.give(self.buffers)
            self.buffers, self.allocated = targets, allocated
            self.nbytes = len(self.buffers) * self._tensor_bytes(allocated)
        elif valid:
            spare = self.buffers[-1]
            for index in range(len(self.names)):
                copy_rows(spare.ptr, new_pitch, self.buffers[index].ptr, old_pitch, valid, rows, self.stream)
                spare, self.buffers[index] = self.buffers[index], spare
            self.buffers[-1] = spare
        self.slots = slots

    def _reserve(self, needed: int) -> None:
        if needed <= self.slots:
            return
        before = self.allocated
        slots, allocated = sizing.grow_view(needed, self.allocated, self.capacity is not None, self.max_context)
        self._relayout(slots, allocated)
        if self.allocated != before:
            self._reserve_step_io()

    def step(self, inputs_embeds, attention_mask: np.ndarray, position_ids: np.ndarray, last_only: bool = False):
        check_step(self, tuple(inputs_embeds.shape), attention_mask.shape, self.max_context)
        seq = inputs_embeds.shape[1]
        self._reserve(self.length + seq)
        graph = self.graph
        mask = graph.upload("attention_mask", step_mask(attention_mask, self.length, self.slots))
        positions = graph.upload("position_ids", position_ids)
        if isinstance(inputs_embeds, np.ndarray):
            embeds = graph.upload("inputs_embeds", inputs_embeds)
        else:  # on the device already: copied into the decoder's own input buffer, whose address a graph keeps
            nbytes = int(np.prod(inputs_embeds.shape)) * inputs_embeds.dtype.itemsize
            buffer = graph.buffer("inputs_embeds", nbytes)
            copy_rows(buffer.ptr, nbytes, inputs_embeds.buffer.ptr, nbytes, nbytes, 1, self.stream)
            embeds = DeviceTensor(buffer, tuple(inputs_embeds.shape), inputs_embeds.dtype)
        inputs = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions, **self._cache_inputs()}
        if seq == 1:
            outputs = self._decode(inputs)
        else:
            self._drop_step_graph()
            outputs = graph.bind(inputs, {})
            graph.execute()
        self._write_new(outputs, seq)
        self.length += seq
        hidden = outputs["hidden_states"]
        if last_only and seq > 1:  # once per request: slice the prefill's last position on the host
            return hidden.download(self.stream)[:, -1:]
        return hidden

    def _decode(self, inputs: dict[str, DeviceTensor]) -> dict[str, DeviceTensor]:
        """One position per row: replays the bucket's CUDA graph, or binds, runs and captures it."""
        graph = self.graph
        key = (self.slots, graph.profile_changes, tuple(t.buffer.ptr for t in inputs.values()))
        if self.step_graph is not None and key == self.step_key:
            self.step_graph.launch()
            self.replays += 1
            return self.step_outputs
        self._drop_step_graph()
        self.step_outputs = graph.bind(inputs, {})
        graph.execute()  # this step's result; TensorRT's deferred shape work happens outside the capture
        self.step_graph = CudaGraph(self.stream, graph.execute)
        self.step_key = (self.slots, graph.profile_changes, key[2])
        self.captures += 1
        return self.step_outputs

    def _write_new(self, outputs: dict[str, DeviceTensor], seq: int) -> None:
        """The new positions' keys/values [B,H,seq,hd] into slots length..length+seq-1 of every tensor."""
        width = self.head_dim * self.dtype.itemsize
        row, pitch, offset = seq * width, self.slots * width, self.length * width
        for name, buffer in zip(self.names, self.buffers):
            new = outputs[kv_output(name)]
            copy_rows(buffer.ptr + offset, pitch, new.buffer.ptr, row, row, self.batch * self.heads, self.stream)

    def _drop_step_graph(self) -> None:
        if self.step_graph is not None:
            self.step_graph.destroy()
            self.step_graph, self.step_key = None, None

    def close(self) -> None:
        self._drop_step_graph()
        if self.buffers:
            self.pool.give(self.buffers)
            self.buffers = []

