"""What machine gpu-check runs on: the GPU, the driver, the libraries, and the build target that fits the GPU.

Every way this machine cannot run TensorRT engines at all is a `BackendError` with its fix (the CLI prints one line
and exits 2): no TensorRT or only its type stubs, no cuda-python, no NVIDIA driver, no GPU, a cuda-python newer
than the driver's CUDA, a CUDA call that fails outright. Versions are collected separately and never fail: a
version that cannot be read is null in the report.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from janus_edge.export.tensorrt.targets import GIB, TARGETS, Target, gpu_mismatch
from janus_edge.runtime.backends.cuda import DRIVER_FIX, _cudart, first_call
from janus_edge.runtime.backends.tensorrt import require_tensorrt
from janus_edge.runtime.errors import BackendError

TEGRA_RELEASE = Path("/etc/nv_tegra_release")  # Jetson (L4T) only
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")  # discrete GPUs' kernel module


@dataclass
class Machine:
    gpu: str
    compute_capability: str  # "8.7"
    total_memory_bytes: int
    integrated: bool  # shares memory with the CPU (Jetson)
    cuda_driver: str | None  # CUDA version the driver supports, "12.6"
    cuda_runtime: str | None  # CUDA runtime cuda-python was built for, "12.6"


@dataclass
class TargetChoice:
    target: Target  # the named target whose limits `build` uses
    known: bool  # this GPU is that target's GPU; False: a generic choice built with force
    max_context: int  # profiles up to this many tokens
    note: str


def _distribution(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cuda_version(code: int | None) -> str | None:
    """cudaDriverGetVersion / cudaRuntimeGetVersion's 12060 -> "12.6" (0: no driver)."""
    return f"{code // 1000}.{code % 1000 // 10}" if code else None


def _major(version: str | None) -> int | None:
    found = re.match(r"(\d+)", version or "")
    return int(found.group(1)) if found else None


def tegra_release() -> str | None:
    """L4T release from /etc/nv_tegra_release ("# R36 (release), REVISION: 4.3, ..." -> "36.4.3")."""
    if not TEGRA_RELEASE.is_file():
        return None
    text = TEGRA_RELEASE.read_text(errors="replace")
    found = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{found.group(1)}.{found.group(2)}" if found else text.strip().splitlines()[0][:80]


def nvidia_driver() -> str | None:
    """The kernel driver's release ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15 ..." -> "570.86.15")."""
    if not NVIDIA_DRIVER.is_file():
        return None
    found = re.search(r"Kernel Module\s+([\d.]+)", NVIDIA_DRIVER.read_text(errors="replace"))
    return found.group(1) if found else None


def library_versions() -> dict[str, str | None]:
    """Python, numpy, ONNX Runtime, TensorRT, cuda-python, L4T and the driver; None for what is not there."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "numpy": _distribution("numpy"),
                                       "onnxruntime": _distribution("onnxruntime", "onnxruntime-gpu"),
                                       "cuda_python": _distribution("cuda-python", "cuda-bindings"),
                                       "l4t": tegra_release(), "nvidia_driver": nvidia_driver()}
    try:
        require_tensorrt()
        import tensorrt

        versions["tensorrt"] = str(tensorrt.__version__)
    except BackendError:
        versions["tensorrt"] = None
    return versions


def probe_machine() -> Machine:
    """This machine's GPU and CUDA versions; raises `BackendError` (one line, with its fix) where it cannot run
    TensorRT engines."""
    require_tensorrt()
    cudart: Any = _cudart()
    driver_code = first_call("cudaDriverGetVersion", cudart.cudaDriverGetVersion)
    if driver_code == 0:
        raise BackendError("no NVIDIA driver is loaded (cudaDriverGetVersion reports 0)",
                           "install the NVIDIA driver (Jetson: JetPack) and reboot")
    driver = _cuda_version(driver_code)
    runtime = _cuda_version(first_call("cudaRuntimeGetVersion", cudart.cudaRuntimeGetVersion))
    if (_major(runtime) or 0) > (_major(driver) or 0):
        bindings = _distribution("cuda-python", "cuda-bindings") or "(version unknown)"
        raise BackendError(f"cuda-python {bindings} is built for CUDA {runtime} and needs a CUDA {_major(runtime)} "
                           f"driver; this driver supports CUDA {driver}",
                           DRIVER_FIX + ", or pip install 'janus-edge[tensorrt]' (CUDA 12 drivers)")
    device = first_call("cudaGetDevice", cudart.cudaGetDevice)
    props = first_call("cudaGetDeviceProperties", cudart.cudaGetDeviceProperties, device)
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return Machine(name.strip("\x00 "), f"{props.major}.{props.minor}", int(props.totalGlobalMem),
                   bool(props.integrated), driver, runtime)


def choose_target(machine: Machine) -> TargetChoice:
    """The target of this GPU (Orin modules, which all report "Orin" 8.7, told apart by memory); for a GPU no
    target names (A100 8.0, L4 / RTX 40xx 8.9, Blackwell 10.x/12.x ...), the named target nearest its memory,
    built with force, profiles sized from the device's own memory."""
    memory_gib = machine.total_memory_bytes / GIB
    nearest = lambda targets: min(targets, key=lambda t: abs(t.memory_gib - memory_gib))  # noqa: E731
    known = [t for t in TARGETS.values() if gpu_mismatch(t, machine.gpu, machine.compute_capability) is None]
    if known:
        chosen = nearest(known)
        return TargetChoice(chosen, True, chosen.max_context,
                            f"{machine.gpu} (compute capability {machine.compute_capability}) is target "
                            f"{chosen.name}")
    chosen = nearest(TARGETS.values())
    context = 4096 if memory_gib >= 16 else 2048
    generic = dataclasses.replace(chosen, max_context=context)
    return TargetChoice(generic, False, context,
                        f"no janus-edge target for {machine.gpu} (compute capability {machine.compute_capability}, "
                        f"{memory_gib:.1f} GiB): generic target, built with --force on {chosen.name}'s workspace "
                        f"({chosen.workspace_gib:g} GiB) and profiles up to {context} tokens for its memory")
