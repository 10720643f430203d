"""The KV cache in host memory: preallocated buffers, updated in place, reused across requests.

Each cache tensor is one flat buffer; the decoder graph is fed a contiguous [B,H,C,hd] view of its start, where C
is the current bucket (`kv.bucket`). ONNX Runtime's CPU provider reads such numpy inputs where they lie (no
copy), so a step reads only C slots. When the cache outgrows its bucket, each row's valid positions move to their
place in the wider view, inside the same buffer (last row first, so nothing is overwritten before it is moved).
Buffers come from a `BufferPool` owned by the backend and go back to it on `close()`, so the next request reuses
warm memory instead of page-faulting hundreds of megabytes in.

`PooledKVCache` is what this cache and the device one (device_cache.py) share: names, sizes and growth from `kv`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np

from .. import kv


class BufferPool:
    """Sets of flat buffers (one per cache tensor, and a device cache's spare) that decoders borrow and return. A
    buffer is anything with a `dtype` and a `size` in elements: numpy arrays by default, device buffers with another
    `allocate` (and `release`, which frees one when the pool lets it go).

    `keep_unfitting`: whether returned sets that do not fit a request stay pooled beside the new one (host memory;
    ONNX Runtime's device cache, whose step buffers share the pool) or are freed first (TensorRT: kept, they would
    add up across request kinds, e.g. a 1-row understanding cache beside a CFG one, while `plan` counts the largest
    request's)."""

    def __init__(self, allocate: Callable[[int, np.dtype], Any] = np.zeros,
                 release: Callable[[Any], None] | None = None, keep_unfitting: bool = True) -> None:
        self.allocate = allocate  # (elements, dtype) -> a zero-filled buffer: unused slots must hold finite values
        self.release, self.keep_unfitting = release, keep_unfitting
        self.free: list[list[Any]] = []

    def take(self, count: int, size: int, dtype: np.dtype) -> list[Any]:
        """`count` zero-filled (new) or previously used buffers of at least `size` elements of `dtype`."""
        dtype = np.dtype(dtype)
        fitting = [i for i, s in enumerate(self.free) if s[0].dtype == dtype and s[0].size >= size and len(s) == count]
        if fitting:
            return self.free.pop(min(fitting, key=lambda i: self.free[i][0].size))
        if not self.keep_unfitting:
            self.clear()
        return [self.allocate(size, dtype) for _ in range(count)]

    def give(self, buffers: list[Any]) -> None:
        self.free.append(buffers)

    def clear(self) -> None:
        """Lets every returned set go (freed by `release`, where buffers need it)."""
        if self.release is not None:
            for buffers in self.free:
                for buffer in buffers:
                    self.release(buffer)
        self.free.clear()


class PooledKVCache(ABC):
    """What every KV cache shares: its tensors (`kv.kv_names`, sized by `kv`'s formula) in buffers borrowed from a
    `BufferPool`, one per tensor plus `spares`, and `kv`'s growth policy: the graph reads a view of the first `slots`
    of `allocated` (`kv.first_view`), widened by `kv.grow_view` when the cache outgrows it."""

    def __init__(self, pool: BufferPool, model: kv.CacheDims, dtype: str, batch: int, capacity: int | None,
                 max_context: int, spares: int = 0):
        self.pool, self.model, self.batch, self.dtype = pool, model, batch, np.dtype(dtype)
        self.names = kv.kv_names(model.num_layers)
        self.width, self.rows = kv.slot_bytes(model, dtype), kv.slot_rows(model, batch)  # a tensor as pitched rows
        self.max_context, self.fixed = max_context, capacity is not None
        self.slots, self.allocated = kv.first_view(capacity, max_context)  # slots: the width the graph reads
        self.spares = spares
        self.buffers: list[Any] = pool.take(len(self.names) + spares, self._elements(self.allocated), self.dtype)

    def _elements(self, slots: int) -> int:
        return kv.tensor_bytes(self.model, self.dtype, self.batch, slots) // self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes this cache holds: its allocation (not the current view) and its spares."""
        return kv.cache_bytes(self.model, self.dtype, self.batch, self.allocated) \
            + self.spares * kv.spare_bytes(self.model, self.dtype, self.batch, self.allocated)

    @abstractmethod
    def reserve(self, needed: int, length: int) -> bool:
        """Widens the view to hold `needed` slots, keeping the first `length`; True if it moved."""

    def _grow(self, needed: int) -> tuple[int, int] | None:
        """(view slots, allocated slots) once the cache holds `needed` positions; None while its view holds them."""
        if needed <= self.slots:
            return None
        return kv.grow_view(needed, self.allocated, self.fixed, self.max_context)

    def release(self) -> None:
        """Hands the buffers back to the pool."""
        if self.buffers:
            self.pool.give(self.buffers)
            self.buffers = []


class HostKVCache(PooledKVCache):
    """Keys and values for `batch` rows in flat host buffers of `capacity` slots (None: grows as needed)."""

    def __init__(self, pool: BufferPool, model: kv.CacheDims, dtype: str, batch: int, capacity: int | None,
                 max_context: int):
        super().__init__(pool, model, dtype, batch, capacity, max_context)
        self._views: dict[str, np.ndarray] | None = None

    def views(self) -> dict[str, np.ndarray]:
        """[B,H,slots,hd] views of the buffers' starts, built when the layout changes, not every step."""
        if self._views is None:
            shape = kv.tensor_shape(self.model, self.batch, self.slots)
            self._views = {name: buf[:self._elements(self.slots)].reshape(shape)
                           for name, buf in zip(self.names, self.buffers)}
        return self._views

    def reserve(self, needed: int, length: int) -> bool:
        """Widens the views to hold `needed` slots, keeping the first `length`; True if they moved."""
        grown = self._grow(needed)
        if grown is None:
            return False
        slots, allocated = grown
        if allocated > self.allocated:
            self._reallocate(allocated, length)
        rows, width = self.rows, self.width // self.dtype.itemsize  # elements
        keep = length * width  # the valid slots of a row
        for buf in self.buffers:
            old = buf[:rows * self.slots * width].reshape(rows, self.slots * width)
            new = buf[:rows * slots * width].reshape(rows, slots * width)
            for row in range(rows - 1, 0, -1):  # row 0 is already in place
                new[row, :keep] = old[row, :keep]
        self.slots, self._views = slots, None
        return True

    def _reallocate(self, slots: int, length: int) -> None:
        old_views = self.views()
        self.allocated = slots
        buffers = self.pool.take(len(self.names), self._elements(slots), self.dtype)
        shape = kv.tensor_shape(self.model, self.batch, self.slots)
        for name, buf in zip(self.names, buffers):
            buf[:self._elements(self.slots)].reshape(shape)[:, :, :length] = old_views[name][:, :, :length]
        self.pool.give(self.buffers)
        self.buffers, self._views = buffers, None

    def write(self, new: dict[str, np.ndarray], start: int) -> None:
        """Writes the new positions' keys/values [B,H,S,hd] into slots start..start+S-1."""
        for name, view in self.views().items():
            value = new[name]
            view[:, :, start:start + value.shape[2]] = value

    def release(self) -> None:
        super().release()
        self._views = None
