"""Deployment targets: memory, bandwidth and TensorRT facts that `plan` and `build` use.

Bandwidths are the vendors' published peak DRAM figures; usable memory is the total less what the OS, the CUDA
context and TensorRT's own libraries take (about 1.5 GiB on a headless Jetson, 2 GiB on a data-center GPU).

Peak compute (`peak_tflops`: dense, no 2:4 sparsity; TFLOP/s for fp32/fp16, TOP/s for int8) are DATASHEET PEAKS,
for `plan`'s compute floor, never measured here. Where NVIDIA publishes only the sparse figure, dense is half of
it; Tensor-Core fp16 is half of int8 on Ampere (Orin); fp32 is the CUDA cores' rate (`build` turns TF32 off, so
fp32 graphs never reach the Tensor Cores). Each target's line says which numbers it used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from janus_edge.runtime.errors import RequestError

GIB = 1 << 30


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    memory_gib: float  # physical memory (shared CPU/GPU on Jetson)
    reserved_gib: float  # OS, CUDA context, TensorRT libraries
    bandwidth_gbs: float  # peak DRAM bandwidth, GB/s (1e9)
    compute_capability: str
    tensorrt: str  # TensorRT version of the platform's current software stack
    fp8: bool
    workspace_gib: float  # TensorRT builder workspace limit
    max_context: int  # largest context `build` makes profiles for
    gpu_names: tuple[str, ...]  # what cudaGetDeviceProperties().name contains on this target (case-insensitive)
    peak_tflops: dict  # "fp32", "fp16", "int8" -> dense datasheet peak (see the module docstring)

    def peak_flops(self, kind: str) -> float:
        """Peak operations per second for a graph computing in `kind` (fp32, fp16 or int8)."""
        return self.peak_tflops[kind] * 1e12

    @property
    def usable_bytes(self) -> float:
        return (self.memory_gib - self.reserved_gib) * GIB


TARGETS = {
    # Orin Nano 8GB datasheet: 20 dense INT8 TOPS (40 sparse) at the 625 MHz GPU clock of the 68 GB/s mode;
    # fp16 = int8 / 2; fp32 = 1024 CUDA cores x 2 x 625 MHz.
    "orin-nano-8gb": Target("orin-nano-8gb", "Jetson Orin Nano 8 GB (JetPack 6.2)", 8, 1.5, 68, "8.7", "10.3", False,
                            1.0, 2048, ("Orin",), {"fp32": 1.28, "fp16": 10.0, "int8": 20.0}),
    # No GPU-only figure recorded for Orin NX: the Orin Nano's scaled to its 918 MHz GPU clock (same 1024-core
    # GPU), i.e. 29.4 dense INT8 TOPS; fp16 = int8 / 2; fp32 = 1024 x 2 x 918 MHz. Derived, not published.
    "orin-nx-16gb": Target("orin-nx-16gb", "Jetson Orin NX 16 GB (JetPack 6.2)", 16, 1.5, 102.4, "8.7", "10.3", False,
                           2.0, 4096, ("Orin",), {"fp32": 1.88, "fp16": 14.7, "int8": 29.4}),
    # AGX Orin technical brief: GPU 170 sparse INT8 TOPS (85 dense), 5.3 FP32 TFLOPS; fp16 = int8 / 2.
    "agx-orin-64gb": Target("agx-orin-64gb", "Jetson AGX Orin 64 GB (JetPack 6.2)", 64, 1.5, 204.8, "8.7", "10.3",
                            False, 4.0, 4096, ("Orin",), {"fp32": 5.3, "fp16": 42.5, "int8": 85.0}),
    # Jetson AGX Thor: 2070 sparse FP4 TFLOPS published; dense FP8 = 2070 / 2 / 2 = 517.5, fp16 = FP8 / 2; no
    # INT8 figure published, FP8's rate used; fp32 ~ 2560 CUDA cores x 2 x 1.57 GHz. Derived, approximate.
    "thor": Target("thor", "Jetson AGX Thor 128 GB (JetPack 7.2)", 128, 1.5, 273, "11.0", "10.16", True, 8.0, 4096,
                   ("Thor",), {"fp32": 8.0, "fp16": 258.75, "int8": 517.5}),
    # H100 SXM datasheet: FP16 Tensor 1979 and INT8 3958 with sparsity (989.5 / 1979 dense), FP32 67 TFLOPS.
    "datacenter": Target("datacenter", "H100 SXM 80 GB class data-center GPU", 80, 2.0, 3350, "9.0", "10.16", True,
                         8.0, 4096, ("H100", "H200", "H800", "H20", "GH200"),
                         {"fp32": 67.0, "fp16": 989.5, "int8": 1979.0}),
}


def build_peak_bytes(graph_weights: Mapping[str, float], target: Target) -> float:
    """What building the largest graph takes at once, estimated as 2 x its weights + the builder workspace: the
    parser's copy of the ONNX weights and the engine's own, plus the workspace limit the tactics may use. On a
    Jetson all three share one DRAM. A build-time cost only: the runtime never allocates the workspace."""
    return 2 * max(graph_weights.values()) + target.workspace_gib * GIB


def gpu_mismatch(target: Target, gpu: str, capability: str) -> str | None:
    """Why this machine's GPU is not `target` (None if it is). Jetson Orin modules all report "Orin" and 8.7, so
    the module size is not told apart here."""
    if capability == target.compute_capability and any(n.lower() in gpu.lower() for n in target.gpu_names):
        return None
    return (f"this machine's GPU is {gpu} (compute capability {capability}), not target {target.name} "
            f"({target.description}, compute capability {target.compute_capability}); TensorRT engines run only on "
            f"the GPU model they are built on")


def target(name: str) -> Target:
    if name not in TARGETS:
        raise RequestError(f"unknown target {name!r}", f"choose one of {', '.join(TARGETS)}")
    return TARGETS[name]
