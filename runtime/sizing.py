"""KV-cache sizing: the one place the backends and `janus-edge plan` take capacities and byte counts from.

A request's cache holds `capacity` slots per row: its prompt plus the tokens it may add, never more than the
exported context. The decoder graph reads every slot it is given, so a decoder feeds only the first
`bucket(length)` slots (a view of its buffer) and moves to the next bucket when the cache fills it: one in-place
move per bucket crossing instead of reading unused capacity at every step.
"""

from __future__ import annotations

import numpy as np

CAPACITY_BUCKET = 64  # slots; ~sqrt(2 x 576): balances per-step reads of unused slots against moves per crossing


def bucket(positions: int) -> int:
    """`positions` rounded up to a whole number of buckets (at least one)."""
    return max(1, -(-int(positions) // CAPACITY_BUCKET)) * CAPACITY_BUCKET


def request_capacity(positions: int, max_context: int) -> int:
    """Slots a request that may reach `positions` positions allocates: bucketed, clamped to the context."""
    return min(bucket(positions), int(max_context))


def grow_view(needed: int, allocated: int, fixed: bool, max_context: int) -> tuple[int, int]:
    """(view slots, allocated slots) for a cache that must now hold `needed` positions: the view widens to the next
    bucket; a cache of fixed size keeps its last bucket partial (e.g. 639 slots) and refuses to outgrow itself; a
    growing one at least doubles. The one policy every KV-cache backend follows."""
    slots = min(bucket(needed), int(max_context))
    if fixed:
        if needed > allocated:
            from .errors import InternalError

            raise InternalError(f"the KV cache was sized for {allocated} positions; {needed} are needed")
        return min(slots, allocated), allocated
    if slots > allocated:
        allocated = request_capacity(max(needed, 2 * allocated), max_context)
    return min(slots, allocated), allocated


def kv_bytes_per_position(layers: int, kv_heads: int, head_dim: int, dtype: str | np.dtype) -> int:
    """Keys and values of every layer for one position of one row."""
    return 2 * layers * kv_heads * head_dim * np.dtype(dtype).itemsize


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, dtype: str | np.dtype, rows: int, capacity: int) -> int:
    """What a decoder for `rows` rows and `capacity` slots allocates for its cache."""
    return kv_bytes_per_position(layers, kv_heads, head_dim, dtype) * int(rows) * int(capacity)


def kv_spare_bytes(kv_heads: int, head_dim: int, dtype: str | np.dtype, rows: int, capacity: int) -> int:
    """The one extra cache tensor the TensorRT backend keeps to re-lay its cache out at a bucket crossing (device
    copies must not overlap, so the wider layout is written into the spare, which then takes the tensor's place)."""
    return int(rows) * int(kv_heads) * int(capacity) * int(head_dim) * np.dtype(dtype).itemsize


def decode_io_bytes(kv_outputs: list[str], kv_heads: int, head_dim: int, hidden: int, dtype: str | np.dtype, rows: int,
                    capacity: int) -> dict[str, int]:
    """The TensorRT decoder's step buffers, reserved for full capacity when a request opens so decoding allocates
    nothing: mask [rows, capacity+1] and position ids (int64), embeddings and hidden states (fp32), and one new
    position's keys/values for each of `kv_outputs` (the decoder's KV outputs, in the KV dtype)."""
    new = int(rows) * int(kv_heads) * int(head_dim) * np.dtype(dtype).itemsize
    sizes = {"attention_mask": int(rows) * (int(capacity) + 1) * 8, "position_ids": int(rows) * 8,
             "inputs_embeds": int(rows) * int(hidden) * 4, "hidden_states": int(rows) * int(hidden) * 4}
    sizes.update({name: new for name in kv_outputs})
    return sizes
