"""`janus_edge_engines.json`: what a TensorRT engine directory was built from, for and with.

Engines are not portable across TensorRT versions, GPU architectures or (for good performance) GPU models. The runtime compares this manifest with
the machine before deserialising anything and refuses a mismatch with a message that says both sides and the
command that rebuilds the engines here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import BackendError, ManifestError

ENGINE_MANIFEST = "janus_edge_engines.json"
ENGINE_SCHEMA_VERSION = 2  # 2: each engine's device memory recorded (`plan ENGINE_DIR` and the backend read it)


@dataclass
class EngineInfo:
    file: str
    source_onnx: str
    source_onnx_sha256: str
    precision: str
    profiles: list[dict[str, list[list[int]]]]  # per profile: input name -> [min, opt, max] shapes
    engine_bytes: int  # the plan's size: what the engine's weights take on the device once deserialised
    device_memory_bytes: int  # ICudaEngine.device_memory_size_v2: scratch for its largest profile
    profile_device_memory_bytes: list[int]  # get_device_memory_size_for_profile_v2, per profile


@dataclass
class EngineManifest:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    target: str
    export_dir: str
    engines: dict[str, EngineInfo]
    build_options: dict = field(default_factory=dict)
    schema_version: int = ENGINE_SCHEMA_VERSION

    def write(self, directory: Path) -> None:
        (Path(directory) / ENGINE_MANIFEST).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, directory: Path) -> "EngineManifest":
        path = Path(directory) / ENGINE_MANIFEST
        if not path.is_file():
            raise ManifestError(f"{directory} has no {ENGINE_MANIFEST}, so it is not a janus-edge engine directory",
                                "build engines with `janus-edge build EXPORT_DIR ENGINE_DIR --target ...`")
        try:
            data = json.loads(path.read_text())
            if data.get("schema_version") != ENGINE_SCHEMA_VERSION:
                raise ManifestError(f"{path} has schema version {data.get('schema_version')!r}, this janus-edge "
                                    f"reads {ENGINE_SCHEMA_VERSION} (it records each engine's device memory)",
                                    f"rebuild them: janus-edge build {data.get('export_dir', 'EXPORT_DIR')} "
                                    f"{directory} --target {data.get('target', 'TARGET')}")
            engines = {name: EngineInfo(**info) for name, info in data.pop("engines").items()}
            return cls(engines=engines, **data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ManifestError(f"{path} is malformed ({exc})", "rebuild the engines") from None


def _release(version: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0): engines need the same major.minor.patch."""
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def check_compatible(manifest: EngineManifest, directory: Path, tensorrt_version: str, gpu_name: str,
                     compute_capability: str) -> None:
    """Raises a `BackendError` if the engines cannot run on this TensorRT version and GPU."""
    problems = []
    if _release(manifest.tensorrt_version) != _release(tensorrt_version):
        problems.append(f"TensorRT {manifest.tensorrt_version} (this machine has {tensorrt_version})")
    if manifest.compute_capability != compute_capability or manifest.gpu_name != gpu_name:
        # same capability, other model (e.g. an A30 engine on an A100): TensorRT may load it, but its tactics were
        # timed on the other GPU's memory system and can fail or run slowly; rebuild instead
        problems.append(f"a GPU of compute capability {manifest.compute_capability}, {manifest.gpu_name} "
                        f"(this machine has {compute_capability}, {gpu_name})")
    if problems:
        raise BackendError(f"the engines in {directory} were built for " + " and for ".join(problems),
                           f"rebuild them on this machine: janus-edge build {manifest.export_dir} {directory} "
                           f"--target {manifest.target}")
