"""A KV cache in device buffers addressed by pointer: what ONNX Runtime's GPU providers (ort_device.py) and TensorRT
(trt_decoder.py) keep.

- One flat buffer per cache tensor plus one spare, from the backend's pool (`kv_host.BufferPool`: zero-filled once
  when allocated, reused by the next request), sized for the request's capacity (`kv.first_view`, `kv.grow_view`).
- The graph reads a contiguous [B,H,slots,hd] view at each buffer's start, `slots` the current bucket, so a step
  reads only the bucket, and the view is rebound only when it widens.
- New positions [B,H,S,hd] go into slots length..length+S-1 with one strided copy per tensor (`copy_rows`); nothing
  else of the cache moves per step.
- When the view widens, every tensor's valid positions move to the wider layout: into a larger set of buffers if
  the allocation grows, else through the spare (device copies must not overlap), which then takes the tensor's
  place. One move per bucket crossing.

`copy_rows(dst, dst_pitch, src, src_pitch, row_bytes, rows)` is the backend's 2-D copy (cudaMemcpy2DAsync on its
stream, or a host copy on ONNX Runtime's CPU provider, which runs this same code in the tests).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .. import kv
from .kv_host import BufferPool, PooledKVCache

CopyRows = Callable[[int, int, int, int, int, int], None]


class DeviceKVCache(PooledKVCache):
    """Keys and values for `batch` rows in device buffers (each with a `ptr`) of `capacity` slots (None: grows), and
    the spare."""

    def __init__(self, pool: BufferPool, copy_rows: CopyRows, model: kv.CacheDims, dtype: str, batch: int,
                 capacity: int | None, max_context: int):
        super().__init__(pool, model, dtype, batch, capacity, max_context, spares=1)
        self.copy_rows = copy_rows

    @property
    def shape(self) -> list[int]:
        """The [B,H,slots,hd] view the graph reads."""
        return kv.tensor_shape(self.model, self.batch, self.slots)

    def views(self) -> dict[str, int]:
        """Cache tensor name -> the address of its view (the buffer's start; shape `shape`)."""
        return {name: buffer.ptr for name, buffer in zip(self.names, self.buffers)}

    def reserve(self, needed: int, length: int) -> bool:
        """Widens the views to hold `needed` slots, keeping the first `length`; True if they moved."""
        grown = self._grow(needed)
        if grown is None:
            return False
        slots, allocated = grown
        width, rows = self.width, self.rows
        old_pitch, new_pitch, valid = self.slots * width, slots * width, length * width
        if allocated > self.allocated:
            targets = self.pool.take(len(self.buffers), self._elements(allocated), self.dtype)
            for source, target in zip(self.buffers[:-1], targets[:-1]):  # the spare holds nothing to keep
                if valid:
                    self.copy_rows(target.ptr, new_pitch, source.ptr, old_pitch, valid, rows)
            self.pool.give(self.buffers)
            self.buffers, self.allocated = targets, allocated
        elif valid:
            spare = self.buffers[-1]
            for index in range(len(self.names)):
                self.copy_rows(spare.ptr, new_pitch, self.buffers[index].ptr, old_pitch, valid, rows)
                spare, self.buffers[index] = self.buffers[index], spare
            self.buffers[-1] = spare
        self.slots = slots
        return True

    def write(self, new: dict[str, int], start: int, positions: int) -> None:
        """Copies the new positions' keys/values ([B,H,positions,hd] at addresses `new`, by cache tensor name)
        into slots start..start+positions-1."""
        width, rows = self.width, self.rows
        row, pitch, offset = positions * width, self.slots * width, start * width
        for name, buffer in zip(self.names, self.buffers):
            self.copy_rows(buffer.ptr + offset, pitch, new[name], row, row, rows)
