"""ONNX Runtime on a GPU (onnxruntime-gpu's CUDA or TensorRT execution providers): the KV cache in device memory.

The cache is allocated once per decoder for its capacity and bound once (IO binding); each step binds only the
small inputs and the new positions' keys/values, and copies those into their slots with one strided device copy per
tensor (cudaMemcpy2DAsync through cuda-python). Only the hidden states come back to the host.

The TensorRT execution provider is given explicit profile shapes (otherwise it rebuilds engines as shapes grow) and
an engine cache directory (otherwise it rebuilds them at every start).

Not run on a GPU here (no GPU on the development machines); the provider options are unit-tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..manifest import Manifest, kv_input, kv_output
from .base import KVDecoder, check_step, step_mask
from .cuda import _cudart, check

TRT_PROVIDER = "TensorrtExecutionProvider"


def _shape(dims: list[int]) -> str:
    return "x".join(str(d) for d in dims)


def _profile_shapes(manifest: Manifest, graph: str) -> dict[str, list[list[int]]] | None:
    """[min, opt, max] shapes of every dynamic input of `graph` (one profile: prefill and decode), or None when
    its inputs are static."""
    limits, model = manifest.limits, manifest.model
    batch, context, cfg = limits.max_batch, limits.max_context, min(2, limits.max_batch)
    dims = {"batch": (1, cfg, batch), "sequence": (1, 1, context), "capacity": (1, context, context),
            "capacity_and_sequence": (2, context + 1, 2 * context)}
    shapes: dict[str, list[list[int]]] = {}
    for tensor in manifest.graphs[graph].inputs:
        if all(isinstance(d, int) for d in tensor.shape):
            continue
        shapes[tensor.name] = [[d if isinstance(d, int) else dims[d][i] for d in tensor.shape] for i in range(3)]
    return shapes or None


def tensorrt_provider_options(manifest: Manifest, graph: str, cache_dir: Path, options: dict | None = None) -> dict:
    """ONNX Runtime TensorRT EP options for one graph: explicit profile shapes and a persistent engine cache."""
    result = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir / graph),
              "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir),
              "trt_fp16_enable": "False", **(options or {})}  # precision comes from the graph (strongly typed)
    shapes = _profile_shapes(manifest, graph)
    if shapes:
        for key, index in (("trt_profile_min_shapes", 0), ("trt_profile_opt_shapes", 1), ("trt_profile_max_shapes", 2)):
            result[key] = ",".join(f"{name}:{_shape(s[index])}" for name, s in shapes.items())
    return result


def session_providers(providers: list, manifest: Manifest, graph: str, cache_dir: Path) -> list:
    """`providers` with the TensorRT EP's options for `graph` filled in (the caller's own options win)."""
    result = []
    for provider in providers:
        name, options = (provider[0], dict(provider[1])) if isinstance(provider, (tuple, list)) else (provider, {})
        if name == TRT_PROVIDER:
            options = tensorrt_provider_options(manifest, graph, cache_dir, options)
        result.append((name, options) if options else name)
    return result


class DeviceKVDecoder(KVDecoder):
    """The KV cache in device memory, sized for `capacity` positions (None: the exported context)."""

    def __init__(self, graph, manifest: Manifest, batch: int, capacity: int | None, device: str,
                 device_id: int = 0):
        import onnxruntime

        model = manifest.model
        self.graph, self.batch, self.length, self.max_context = graph, batch, 0, manifest.limits.max_context
        self.capacity = capacity
        self.slots = min(capacity or self.max_context, self.max_context)
        self.device, self.device_id, self.dtype = device, device_id, np.dtype(manifest.kv_dtype)
        self.heads, self.head_dim = model.num_kv_heads, model.head_dim
        self.names = model.kv_names
        shape = [batch, self.heads, self.slots, self.head_dim]
        self.cache = {name: onnxruntime.OrtValue.ortvalue_from_shape_and_type(shape, self.dtype, device, device_id)
                      for name in self.names}
        self.nbytes = len(self.names) * int(np.prod(shape)) * self.dtype.itemsize
        self.new: dict[str, object] = {}
        self.new_positions = 0
        self.binding = graph.session.io_binding()
        for name, value in self.cache.items():  # bound once: the graph reads the cache where it lies
            self.binding.bind_ortvalue_input(kv_input(name), value)
        self.binding.bind_output("hidden_states", "cpu")
        self.cudart = _cudart()

    def _bind_new(self, seq: int) -> None:
        """Device buffers for the new keys/values, rebound only when the number of new positions changes."""
        import onnxruntime

        if seq == self.new_positions:
            return
        shape = [self.batch, self.heads, seq, self.head_dim]
        self.new = {name: onnxruntime.OrtValue.ortvalue_from_shape_and_type(shape, self.dtype, self.device,
                                                                            self.device_id) for name in self.names}
        for name, value in self.new.items():
            self.binding.bind_ortvalue_output(kv_output(name), value)
        self.new_positions = seq

    def step(self, inputs_embeds, attention_mask: np.ndarray, position_ids: np.ndarray, last_only: bool = False):
        check_step(self, inputs_embeds.shape, attention_mask.shape, min(self.slots, self.max_context))
        seq = inputs_embeds.shape[1]
        self._bind_new(seq)
        self.binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(inputs_embeds, dtype=np.float32))
        self.binding.bind_cpu_input("attention_mask", step_mask(attention_mask, self.length, self.slots))
        self.binding.bind_cpu_input("position_ids", np.ascontiguousarray(position_ids, dtype=np.int64))
        self.graph.session.run_with_iobinding(self.binding)
        row_bytes, item = seq * self.head_dim * self.dtype.itemsize, self.dtype.itemsize
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        for name in self.names:  # [B*H rows] of seq*hd values into rows of slots*hd, at column length*hd
            target = self.cache[name].data_ptr() + self.length * self.head_dim * item
            check(self.cudart.cudaMemcpy2D(target, self.slots * self.head_dim * item, self.new[name].data_ptr(),
                                           row_bytes, row_bytes, self.batch * self.heads, kind), "cudaMemcpy2D")
        self.length += seq
        hidden = self.binding.get_outputs()[0].numpy()
        return hidden[:, -1:] if last_only else hidden

    def close(self) -> None:
        self.cache, self.new, self.binding = {}, {}, None
