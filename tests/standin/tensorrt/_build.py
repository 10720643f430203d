"""Builder side of the TensorRT stand-in: network from ONNX, config, profiles, timing cache, serialised plan.

What the real builder refuses, this refuses too (error logged, `None` returned): a dynamic input without a shape
in every profile, min <= opt <= max violated, a profile shape contradicting a static dimension or the rank, a
profile naming no network input, FP16/INT8 builder flags on a strongly typed network, a progress monitor that
cancels. The ONNX parser refuses what the operator table of the TensorRT release it pretends to be refuses (the
table `janus-edge check-trt` reads: export/tensorrt/check.py).

The plan: PLAN_MAGIC, the header's length (16 digits and a newline), the header (JSON: TensorRT version, GPU,
profiles, IO tensors, per-profile context memory, weight bytes, graph name, capturable), then the ONNX bytes.

Context memory per profile (`device_memory_size_v2`'s figure) is SCRATCH_BASE plus the SCRATCH_TENSORS (4)
largest tensors of the graph at the profile's MAX input shapes (ONNX shape inference), each rounded up to 256
bytes, counting inputs, outputs and the intermediates no larger than the largest input or output (TensorRT fuses
what would be larger, attention scores above all): a deterministic stand-in for TensorRT's activation memory that
grows with the profile's volumes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ._common import VERSION, BuilderFlag, DataType, Dims, ILogger, IProgressMonitor, MemoryPoolType, \
    NetworkDefinitionCreationFlag, ONNX_TO_TRT

PLAN_MAGIC = b"JANUS-EDGE-TRT-STANDIN-PLAN\n"
SCRATCH_BASE = 64 << 10
SCRATCH_TENSORS = 4
_ITEMSIZES = {1: 4, 2: 1, 3: 1, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}  # ONNX elem type -> bytes


def machine() -> dict:
    return {"gpu": os.environ.get("JANUS_STANDIN_GPU", "NVIDIA H100 80GB HBM3"),
            "cc": os.environ.get("JANUS_STANDIN_CC", "9.0")}


class IHostMemory(bytes):
    """Serialised data; usable wherever bytes are (TensorRT's supports the buffer protocol)."""

    @property
    def nbytes(self) -> int:
        return len(self)


class ITensor:
    def __init__(self, name: str, shape: Dims, dtype: DataType) -> None:
        self.name, self.shape, self.dtype = name, shape, dtype


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.name = "Unnamed Network 0"
        self.inputs: list[ITensor] = []
        self.outputs: list[ITensor] = []
        self.onnx: bytes = b""
        self.proto = None  # the parsed ModelProto (context memory is sized from it)

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, index: int) -> ITensor:
        return self.inputs[index]

    def get_output(self, index: int) -> ITensor:
        return self.outputs[index]


class ParserError:
    def __init__(self, desc: str) -> None:
        self._desc = desc

    def desc(self) -> str:
        return self._desc

    def __str__(self) -> str:
        return self._desc


def _tensor(value_info) -> ITensor:
    kind = value_info.type.tensor_type
    dims = Dims(d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim)
    return ITensor(value_info.name, dims, ONNX_TO_TRT.get(kind.elem_type, DataType.FLOAT))


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.network, self.logger = network, logger
        self.errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]

    def parse_from_file(self, model: str) -> bool:
        import onnx
        import onnxruntime as ort

        from janus_edge.export.tensorrt.check import check_model, table_version

        try:
            proto = onnx.load(model)
            serialized = proto.SerializeToString()
            ort.InferenceSession(serialized, providers=["CPUExecutionProvider"])  # the graph must be runnable
        except Exception as exc:  # what went wrong is reported through get_error, as the real parser does
            self.errors.append(ParserError(f"{model}: {exc}"))
            return False
        refused = [f for f in check_model(proto, Path(model).stem, table_version(VERSION)) if f.severity == "error"]
        if refused:  # what this release's parser cannot import
            self.errors += [ParserError(f"{f.graph}: {f.op} {f.node}: {f.problem} (TensorRT {VERSION} ONNX parser)")
                            for f in refused]
            return False
        self.network.name = Path(model).stem
        self.network.proto = proto
        initializers = {init.name for init in proto.graph.initializer}
        self.network.inputs = [_tensor(v) for v in proto.graph.input if v.name not in initializers]
        self.network.outputs = [_tensor(v) for v in proto.graph.output]
        self.network.onnx = serialized
        return True


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list[Dims]] = {}

    def set_shape(self, input: str, min: Dims, opt: Dims, max: Dims) -> None:
        self.shapes[input] = [Dims(min), Dims(opt), Dims(max)]

    def get_shape(self, input: str) -> list[Dims]:
        return self.shapes.get(input, [])


class ITimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> IHostMemory:
        return IHostMemory(self.data)


class IBuilderConfig:
    def __init__(self) -> None:
        self.flags: set[BuilderFlag] = {BuilderFlag.TF32}  # TF32 is on by default, as in TensorRT
        self.pools: dict[MemoryPoolType, int] = {}
        self.profiles: list[IOptimizationProfile] = []
        self.timing_cache: ITimingCache | None = None
        self.progress_monitor: IProgressMonitor | None = None

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(BuilderFlag(flag))

    def clear_flag(self, flag: BuilderFlag) -> None:
        self.flags.discard(BuilderFlag(flag))

    def get_flag(self, flag: BuilderFlag) -> bool:
        return flag in self.flags

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        self.pools[MemoryPoolType(pool)] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self.pools.get(pool, 1 << 40)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
        return ITimingCache(bytes(serialized_timing_cache))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        key = json.dumps({"trt": VERSION, **machine()}).encode()
        if cache.data and cache.data != key and not ignore_mismatch:
            return False  # a cache from another device or TensorRT version
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache:
        return self.timing_cache or ITimingCache(b"")


class Builder:
    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(int(flags))

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        problem = _check(network, config)
        if problem:
            self.logger.log(ILogger.Severity.ERROR, problem)
            return None
        monitor = config.progress_monitor
        if monitor is not None:
            monitor.phase_start("Building engine", None, 1)  # type: ignore[attr-defined]
            if not monitor.step_complete("Building engine", 0):  # type: ignore[attr-defined]
                self.logger.log(ILogger.Severity.ERROR, "build cancelled by the progress monitor")
                return None
            monitor.phase_finish("Building engine")  # type: ignore[attr-defined]
        profiles = [{t.name: [list(d) for d in p.get_shape(t.name)] or [list(t.shape)] * 3 for t in network.inputs}
                    for p in (config.profiles or [IOptimizationProfile()])]
        io = [{"name": t.name, "mode": mode, "dtype": int(t.dtype), "shape": list(t.shape)}
              for mode, tensors in ((1, network.inputs), (2, network.outputs)) for t in tensors]
        scratch = [_scratch_bytes(network.proto, {name: shapes[2] for name, shapes in profile.items()})
                   for profile in profiles]
        header = {"trt": VERSION, **machine(), "profiles": profiles, "io": io, "device_memory_sizes": scratch,
                  "weights_bytes": len(network.onnx), "name": network.name,
                  "capturable": BuilderFlag.WEIGHT_STREAMING not in config.flags}
        if config.timing_cache is not None:
            config.timing_cache.data = json.dumps({"trt": VERSION, **machine()}).encode()
        encoded = json.dumps(header).encode()
        return IHostMemory(PLAN_MAGIC + b"%016d\n" % len(encoded) + encoded + network.onnx)


def _scratch_bytes(proto, max_shapes: dict[str, list[int]]) -> int:
    """SCRATCH_BASE + the SCRATCH_TENSORS largest tensors at these input shapes (see the module docstring)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    for value in model.graph.input:
        if value.name in max_shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, max_shapes[value.name]):
                dim.Clear()
                dim.dim_value = int(size)
    graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    io = {v.name for v in [*graph.input, *graph.output]}
    sizes = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        kind = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
        if kind.elem_type in _ITEMSIZES and kind.HasField("shape") and min(dims, default=1) >= 0:
            nbytes = _ITEMSIZES[kind.elem_type] * int(np.prod(dims, dtype=np.int64))
            sizes[value.name] = (nbytes + 255) // 256 * 256
    largest_io = max((n for name, n in sizes.items() if name in io), default=0)
    kept = sorted(n for name, n in sizes.items() if name in io or n <= largest_io)
    return SCRATCH_BASE + sum(kept[-SCRATCH_TENSORS:])


def _check(network: INetworkDefinition, config: IBuilderConfig) -> str | None:
    if not network.onnx:
        return "the network is empty (was the ONNX parsed?)"
    if network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)):
        mixed = config.flags & {BuilderFlag.FP16, BuilderFlag.INT8}
        if mixed:
            return f"builder flags {sorted(f.name for f in mixed)} are not allowed on a strongly typed network"
    names = {t.name for t in network.inputs}
    dynamic = [t for t in network.inputs if -1 in tuple(t.shape)]
    if dynamic and not config.profiles:
        return f"network has dynamic inputs ({dynamic[0].name}) but no optimization profile"
    for index, profile in enumerate(config.profiles):
        for name in profile.shapes:
            if name not in names:
                return f"profile {index} sets a shape for {name!r}, which is not a network input"
        for tensor in dynamic:
            shapes = profile.get_shape(tensor.name)
            if not shapes:
                return f"profile {index} has no shape for dynamic input {tensor.name}"
            low, opt, high = (tuple(s) for s in shapes)
            if not len(low) == len(opt) == len(high) == len(tensor.shape):
                return f"profile {index}: {tensor.name} has rank {len(tensor.shape)}, profile shapes {shapes}"
            if not all(lo <= o <= hi for lo, o, hi in zip(low, opt, high)) or min(low) < 0:
                return f"profile {index}: {tensor.name} needs 0 <= min <= opt <= max, got {shapes}"
            if any(d != -1 and not lo == hi == d for d, lo, hi in zip(tensor.shape, low, high)):
                return f"profile {index}: {tensor.name} shapes {shapes} contradict its static shape {tensor.shape}"
    return None
