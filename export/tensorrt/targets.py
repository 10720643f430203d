"""Deployment targets: memory, bandwidth and TensorRT facts that `plan` and `build` use.

Bandwidths are the vendors' published peak DRAM figures; usable memory is the total less what the OS, the CUDA
context and TensorRT's own libraries take (about 1.5 GiB on a headless Jetson, 2 GiB on a data-center GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def usable_bytes(self) -> float:
        return (self.memory_gib - self.reserved_gib) * GIB


TARGETS = {
    "orin-nano-8gb": Target("orin-nano-8gb", "Jetson Orin Nano 8 GB (JetPack 6.2)", 8, 1.5, 68, "8.7", "10.3", False,
                            1.0, 2048, ("Orin",)),
    "orin-nx-16gb": Target("orin-nx-16gb", "Jetson Orin NX 16 GB (JetPack 6.2)", 16, 1.5, 102.4, "8.7", "10.3", False,
                           2.0, 4096, ("Orin",)),
    "agx-orin-64gb": Target("agx-orin-64gb", "Jetson AGX Orin 64 GB (JetPack 6.2)", 64, 1.5, 204.8, "8.7", "10.3",
                            False, 4.0, 4096, ("Orin",)),
    "thor": Target("thor", "Jetson AGX Thor 128 GB (JetPack 7.2)", 128, 1.5, 273, "11.0", "10.16", True, 8.0, 4096,
                   ("Thor",)),
    "datacenter": Target("datacenter", "H100 SXM 80 GB class data-center GPU", 80, 2.0, 3350, "9.0", "10.16", True,
                         8.0, 4096, ("H100", "H200", "H800", "H20", "GH200")),
}


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
