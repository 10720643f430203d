"""Moved to `runtime.kv`. Kept only while files owned by another branch still import it (plan.py, trt_decoder.py,
export/tensorrt/*, runtime/pipelines/*, gpu_check.py and their tests): delete it once they import `runtime.kv`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kv
from .kv import CAPACITY_BUCKET, bucket, grow_view, request_capacity  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class _Dims:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int = 0


def kv_bytes_per_position(layers: int, kv_heads: int, head_dim: int, dtype: str | np.dtype) -> int:
    return kv.bytes_per_position(_Dims(layers, kv_heads, head_dim), dtype)


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, dtype: str | np.dtype, rows: int, capacity: int) -> int:
    return kv.cache_bytes(_Dims(layers, kv_heads, head_dim), dtype, rows, capacity)


def kv_spare_bytes(kv_heads: int, head_dim: int, dtype: str | np.dtype, rows: int, capacity: int) -> int:
    return kv.spare_bytes(_Dims(1, kv_heads, head_dim), dtype, rows, capacity)


def decode_io_bytes(kv_outputs: list[str], kv_heads: int, head_dim: int, hidden: int, dtype: str | np.dtype, rows: int,
                    capacity: int) -> dict[str, int]:
    return kv.decode_io_bytes(_Dims(len(kv_outputs) // 2, kv_heads, head_dim, hidden), dtype, rows, capacity)
