"""ONNX Runtime with the KV cache in device memory: onnxruntime-gpu's CUDA or TensorRT execution providers.

The cache is a `DeviceKVCache` (device_cache.py), as on the TensorRT backend: pooled buffers that ONNX Runtime
allocates on the device (OrtValues, zero-filled once when allocated, reused by the next request), the bucket's view
bound to the decoder by address (IO binding), rebound only when it widens, and each step's new positions written
into their slots by one strided copy per tensor. The graph writes those new positions into step buffers bound the
same way (rebound only when the number of new positions changes). The copies are queued on the CUDA stream ONNX
Runtime computes on (every session is given it as `user_compute_stream`), so they run in order with the graphs
(ONNX Runtime still synchronizes that stream at the end of each run by default). Embeddings
and hidden states stay on the device from graph to graph (`OnDevice`): per decode step the token ids, the mask and
the positions go up and the head's logits come back for the host sampler; nothing cache-sized crosses.

The TensorRT execution provider is given explicit profiles (`runtime.profiles`, the ranges `janus-edge build` uses;
otherwise it rebuilds engines as shapes grow) and an engine and timing cache in the user's cache directory
(otherwise it rebuilds them at every start; the export directory stays as exported and may be read-only).

This has never run on a GPU (there is none on the development machines): ONNX Runtime's CPU provider runs the same
code with the same addresses and a host row copy in place of cudaMemcpy2DAsync (tests/runtime/test_kv_cache.py), and the
provider options are unit-tested as a dict.
"""

from __future__ import annotations

import ctypes
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import kv
from ..integrity import cache_dir
from ..manifest import Graph, Manifest
from ..profiles import graph_profiles
from ..tensor_names import ATTENTION_MASK, HIDDEN_STATES, INPUTS_EMBEDS, POSITION_IDS
from .base import KVDecoder, check_step, step_mask
from .device_cache import CopyRows, DeviceKVCache
from .kv_host import BufferPool

TRT_PROVIDER, CUDA_PROVIDER = "TensorrtExecutionProvider", "CUDAExecutionProvider"


@dataclass
class OrtBuffer:
    """A flat device buffer ONNX Runtime allocated (kept alive by `value`), as `BufferPool` lends them."""

    value: Any  # onnxruntime.OrtValue
    dtype: np.dtype
    size: int  # elements

    @property
    def ptr(self) -> int:
        return int(self.value.data_ptr())


@dataclass
class OnDevice:
    """A tensor ONNX Runtime holds on the backend's device (embeddings, hidden states), handed from one graph to the
    next without a host copy; numpy reads it (one download) where a caller needs the values."""

    value: Any  # onnxruntime.OrtValue

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        array = self.value.numpy()
        return array if dtype is None else array.astype(dtype)


def device_embed(session, spec: Graph, ids: np.ndarray, device: str, device_id: int) -> OnDevice:
    """An embedding graph's output (`spec`: its manifest entry) left on the device: only the token ids go up."""
    binding = session.io_binding()
    binding.bind_cpu_input(spec.inputs[0].name, np.ascontiguousarray(ids, dtype=np.int64))
    binding.bind_output(spec.outputs[0].name, device, device_id)
    session.run_with_iobinding(binding)
    return OnDevice(binding.get_outputs()[0])


def ort_zeros(device: str, device_id: int) -> Callable[[int, np.dtype], OrtBuffer]:
    """An allocator for `BufferPool`: a buffer of `size` elements on `device`, zero-filled once (unused slots must
    hold finite values; later requests reuse it as it is)."""
    import onnxruntime

    def allocate(size: int, dtype: np.dtype) -> OrtBuffer:
        value = onnxruntime.OrtValue.ortvalue_from_shape_and_type([size], dtype, device, device_id)
        value.update_inplace(np.zeros(size, dtype))
        return OrtBuffer(value, np.dtype(dtype), size)

    return allocate


def host_copy_rows(dst: int, dst_pitch: int, src: int, src_pitch: int, row_bytes: int, rows: int) -> None:
    """The CPU provider's `copy_rows`: cudaMemcpy2D's arithmetic over host addresses (source and target must not
    overlap, as on the device)."""
    def rows_at(address: int, pitch: int) -> np.ndarray:
        span = np.ctypeslib.as_array((ctypes.c_uint8 * (pitch * (rows - 1) + row_bytes)).from_address(address))
        return np.lib.stride_tricks.as_strided(span, (rows, row_bytes), (pitch, 1))

    rows_at(dst, dst_pitch)[...] = rows_at(src, src_pitch)


class CudaCopies:
    """Row copies on the one CUDA stream every ONNX Runtime session of the backend computes on."""

    def __init__(self) -> None:
        from .cuda import Stream, check, copy_rows

        self.stream, self._copy, self._check = Stream(), copy_rows, check

    def copy_rows(self, dst: int, dst_pitch: int, src: int, src_pitch: int, row_bytes: int, rows: int) -> None:
        self._copy(dst, dst_pitch, src, src_pitch, row_bytes, rows, self.stream)

    def close(self) -> None:
        self.stream.synchronize()
        self._check(self.stream.cudart.cudaStreamDestroy(self.stream.handle), "cudaStreamDestroy")


def _shapes(profiles: list[dict[str, list[list[int]]]], index: int) -> str:
    """ORT's "name:AxB,name:AxB,..." form of every profile's min (0), opt (1) or max (2) shapes; an input named
    again starts its next profile."""
    return ",".join(f"{name}:{'x'.join(map(str, ranges[index]))}" for profile in profiles
                    for name, ranges in profile.items())


def engine_cache(manifest: Manifest) -> Path:
    """Where the TensorRT EP keeps this export's engines: the user's cache directory, one folder per export
    content (the manifest's file hashes), so a re-export never meets stale engines."""
    digest = hashlib.sha256(repr(sorted(manifest.files.items())).encode()).hexdigest()[:16]
    return cache_dir() / "ort-tensorrt" / digest


def tensorrt_provider_options(manifest: Manifest, graph: str, cache: Path) -> dict[str, str]:
    """ONNX Runtime TensorRT EP options for one graph: its profiles for the export's limits and a persistent engine
    and timing cache under `cache`. Precision comes from the graph itself (fp16 and Q/DQ graphs are typed)."""
    options = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache / graph),
               "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache),
               "trt_fp16_enable": "False"}
    limits = manifest.limits
    profiles = graph_profiles(manifest, limits.max_batch, limits.max_context).get(graph)
    if profiles and any(profile for profile in profiles):
        for index, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")):
            options[key] = _shapes(profiles, index)
    return options


def session_providers(providers: list, manifest: Manifest, graph: str, stream: int | None = None,
                      cache: Path | None = None) -> list:
    """`providers` with janus-edge's options for `graph` filled in (the caller's own options win): the TensorRT
    EP's profiles and engine cache, and for both GPU providers the stream to compute on (`stream`, a cudaStream_t
    address, shared with the KV cache's copies)."""
    result = []
    for provider in providers:
        name, given = (provider[0], dict(provider[1])) if isinstance(provider, (tuple, list)) else (provider, {})
        options: dict[str, str] = {}
        if name == TRT_PROVIDER:
            options.update(tensorrt_provider_options(manifest, graph, cache or engine_cache(manifest)))
        if name in (TRT_PROVIDER, CUDA_PROVIDER) and stream is not None:
            options["user_compute_stream"] = str(stream)  # implies has_user_compute_stream (ORT 1.17+)
        options.update(given)
        result.append((name, options) if options else name)
    return result


class DeviceKVDecoder(KVDecoder):
    """The decoder over a `DeviceKVCache` (in_place form), bound by address; `device` "cuda" or "cpu" (tests)."""

    cache: DeviceKVCache

    def __init__(self, graph, manifest: Manifest, batch: int, capacity: int | None, pool: BufferPool,
                 copy_rows: CopyRows, device: str, device_id: int = 0):
        kv.check_support(manifest.kv_cache.form, backend=kv.ORT_GPU)
        model = manifest.model
        self.graph, self.batch, self.length, self.capacity = graph, batch, 0, capacity
        self.max_context = manifest.limits.max_context
        self.device, self.device_id, self.dtype = device, device_id, np.dtype(manifest.kv_dtype)
        self.pool, self.model = pool, model
        self.cache = DeviceKVCache(pool, copy_rows, model, manifest.kv_dtype, batch, capacity, self.max_context)
        self.output = kv.kv_form(manifest.kv_cache.form).output
        self.new: list[OrtBuffer] = []  # the step's new keys/values, one buffer per cache tensor
        self.new_positions = 0  # how many positions the step outputs are bound for
        self.binding = graph.session.io_binding()
        self.binding.bind_output(HIDDEN_STATES, device, device_id)  # bound first: the binding's first output
        self._bind_cache()

    def _bind(self, bind, name: str, ptr: int, shape: list[int]) -> None:
        bind(name, self.device, self.device_id, self.dtype, shape, ptr)

    def _bind_cache(self) -> None:
        """The bucket's views as the cache inputs (once per bucket, not per step)."""
        for name, ptr in self.cache.views().items():
            self._bind(self.binding.bind_input, kv.kv_input(name), ptr, self.cache.shape)

    def _bind_new(self, seq: int) -> None:
        """The step's new-position outputs, rebound only when the number of new positions changes; their buffers
        grow to the largest step seen (the prefill) and are kept for the rest of the request."""
        if seq == self.new_positions:
            return
        elements = kv.tensor_bytes(self.model, self.dtype, self.batch, seq) // self.dtype.itemsize
        if not self.new or self.new[0].size < elements:
            if self.new:
                self.pool.give(self.new)
            self.new = self.pool.take(len(self.cache.names), elements, self.dtype)
        shape = kv.tensor_shape(self.model, self.batch, seq)
        for name, buffer in zip(self.cache.names, self.new):
            self._bind(self.binding.bind_output, self.output(name), buffer.ptr, shape)
        self.new_positions = seq

    def step(self, inputs_embeds, attention_mask: np.ndarray, position_ids: np.ndarray, last_only: bool = False):
        check_step(self, inputs_embeds.shape, attention_mask.shape, self.max_context)
        seq = inputs_embeds.shape[1]
        if self.cache.reserve(self.length + seq, self.length):
            self._bind_cache()
        self._bind_new(seq)
        binding = self.binding
        if isinstance(inputs_embeds, OnDevice):
            binding.bind_ortvalue_input(INPUTS_EMBEDS, inputs_embeds.value)
        else:
            binding.bind_cpu_input(INPUTS_EMBEDS, np.ascontiguousarray(inputs_embeds, dtype=np.float32))
        binding.bind_cpu_input(ATTENTION_MASK, step_mask(attention_mask, self.length, self.cache.slots))
        binding.bind_cpu_input(POSITION_IDS, np.ascontiguousarray(position_ids, dtype=np.int64))
        # bound again every step: a binding keeps the last run's output value, whose shape (a prefill's sequence)
        # would be wrong for the next step. A prefill's last position is sliced on the host (once per request);
        # otherwise the hidden states stay on the device for the head that reads them.
        host = last_only and seq > 1
        binding.bind_output(HIDDEN_STATES, "cpu" if host else self.device, self.device_id)
        self.graph.session.run_with_iobinding(binding)
        self.cache.write({name: buffer.ptr for name, buffer in zip(self.cache.names, self.new)}, self.length, seq)
        self.length += seq
        hidden = binding.get_outputs()[0]
        return hidden.numpy()[:, -1:] if host else OnDevice(hidden)

    def close(self) -> None:
        self.cache.release()
        if self.new:
            self.pool.give(self.new)
            self.new = []
        self.binding = None
