"""`janus-edge build`: one TensorRT engine per exported graph (plus the two sampler graphs), for a target.

Strongly typed networks: precision comes from the ONNX (fp16 tensors, Q/DQ nodes), never from builder flags, which
is the only mode TensorRT 11 has and works the same from 10.3 (JetPack 6.2) on. Built with Polygraphy's loaders
(NetworkFromOnnxPath -> CreateConfig -> EngineBytesFromNetwork), a timing cache kept per GPU and TensorRT version,
the target's workspace limit, and a progress display. The engine directory holds the engines, a copy of the
export's manifest pointing at them, the tokenizer, and janus_edge_engines.json (what it was built for).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

from janus_edge.runtime.backends.cuda import device_name_and_capability
from janus_edge.runtime.backends.engine_manifest import ENGINE_MANIFEST, EngineInfo, EngineManifest
from janus_edge.runtime.backends.tensorrt import require_tensorrt
from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.manifest import load_manifest, sha256_file
from janus_edge.targets import GIB, target as find_target

from .sampler_graph import sampler_graph
from .staging import staged_directory
from .trt_profiles import engine_profiles


def default_timing_cache(gpu: str, tensorrt_version: str) -> Path:
    safe = "".join(c if c.isalnum() else "-" for c in gpu)
    return Path.home() / ".cache" / "janus-edge" / f"timing-{safe}-trt{tensorrt_version}.cache"


def progress_monitor(label: str):
    """A TensorRT IProgressMonitor that prints one line per top-level phase step (TensorRT >= 10.0)."""
    import tensorrt as trt

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.totals: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.totals[phase_name] = num_steps
            if parent_phase is None:
                sys.stderr.write(f"\n  {label}: {phase_name}")

        def step_complete(self, phase_name: str, step: int) -> bool:
            if phase_name in self.totals and len(self.totals) == 1:
                sys.stderr.write(f"\r  {label}: {phase_name} {step + 1}/{self.totals[phase_name]}")
            sys.stderr.flush()
            return True  # keep building

        def phase_finish(self, phase_name: str) -> None:
            self.totals.pop(phase_name, None)

    return Monitor()


def build(export_dir: str | Path, engine_dir: str | Path, target_name: str, timing_cache: str | None = None,
          max_batch: int | None = None, max_context: int | None = None, log=print) -> EngineManifest:
    require_tensorrt()
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    if (max_batch is not None and max_batch < 1) or (max_context is not None and max_context < 1):
        raise RequestError(f"--max-batch {max_batch} / --max-context {max_context} must be positive",
                           "leave them out to use the export's and the target's limits")
    target = find_target(target_name)
    gpu, capability = device_name_and_capability()
    if capability != target.compute_capability:
        log(f"note: building on {gpu} (compute capability {capability}) for target {target.name} "
            f"({target.compute_capability}); engines run only on the GPU they are built on")
    profiles = engine_profiles(manifest, target, max_batch, max_context)
    cache = Path(timing_cache) if timing_cache else default_timing_cache(gpu, trt.__version__)
    cache.parent.mkdir(parents=True, exist_ok=True)
    engines: dict[str, EngineInfo] = {}
    with staged_directory(engine_dir, ENGINE_MANIFEST) as staging, tempfile.TemporaryDirectory() as tmp:
        sources = {name: export_dir / graph.file for name, graph in manifest.graphs.items()}
        for name, cfg in (("sampler", False), ("cfg_sampler", True)):
            sources[name] = Path(tmp) / f"{name}.onnx"
            sources[name].write_bytes(sampler_graph(cfg).SerializeToString())
        for name, source in sources.items():
            start = time.perf_counter()
            trt_profiles = []
            for profile in profiles[name]:
                built = Profile()
                for tensor, (low, opt, high) in profile.items():
                    built.add(tensor, low, opt, high)
                trt_profiles.append(built)
            precision = manifest.graphs[name].precision if name in manifest.graphs else "fp32"
            config = CreateConfig(profiles=trt_profiles, tf32=False, load_timing_cache=str(cache),
                                  memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(target.workspace_gib * GIB)},
                                  progress_monitor=progress_monitor(name))
            network = NetworkFromOnnxPath(str(source), strongly_typed=True)
            engine_bytes = EngineBytesFromNetwork(network, config, save_timing_cache=str(cache))()
            (staging / f"{name}.engine").write_bytes(bytes(engine_bytes))
            engines[name] = EngineInfo(file=f"{name}.engine", source_onnx=source.name,
                                       source_onnx_sha256=manifest.files.get(source.name) or sha256_file(source),
                                       precision=precision, profiles=profiles[name])
            log(f"\n  {name}: built in {time.perf_counter() - start:.0f} s")
        shutil.copyfile(export_dir / manifest.tokenizer_file, staging / manifest.tokenizer_file)
        built_manifest = EngineManifest(tensorrt_version=trt.__version__, gpu_name=gpu, compute_capability=capability,
                                        target=target.name, export_dir=str(export_dir), engines=engines,
                                        build_options={"max_batch": min(max_batch or manifest.limits.max_batch,
                                                                        manifest.limits.max_batch),
                                                       "max_context": min(max_context or target.max_context,
                                                                          manifest.limits.max_context),
                                                       "workspace_gib": target.workspace_gib, "strongly_typed": True,
                                                       "timing_cache": str(cache)})
        built_manifest.write(staging)
        graphs = {name: dataclasses.replace(graph, file=f"{name}.engine") for name, graph in manifest.graphs.items()}
        limits = dataclasses.replace(manifest.limits, max_context=built_manifest.build_options["max_context"],
                                     max_batch=built_manifest.build_options["max_batch"])
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        dataclasses.replace(manifest, graphs=graphs, limits=limits, files=files).write(staging)
    log(f"wrote {len(engines)} engines for {target.name} to {engine_dir}")
    return built_manifest
