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


def kv_bytes_per_position(layers: int, kv_heads: int, head_dim: int, dtype: str | np.dtype) -> int:
    """Keys and values of every layer for one position of one row."""
    return 2 * layers * kv_heads * head_dim * np.dtype(dtype).itemsize


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, dtype: str | np.dtype, rows: int, capacity: int) -> int:
    """What a decoder for `rows` rows and `capacity` slots allocates for its cache."""
    return kv_bytes_per_position(layers, kv_heads, head_dim, dtype) * int(rows) * int(capacity)
