"""`janus-edge build`: one TensorRT engine per exported graph (plus the sampler graphs its profiles name), for a target.

Strongly typed networks: precision comes from the ONNX (fp16 tensors, Q/DQ nodes), never from builder flags, which
is the only mode TensorRT 11 has and works the same from 10.3 (JetPack 6.2) on. Built with TensorRT's own builder
API (the steps Polygraphy's NetworkFromOnnxPath -> CreateConfig -> EngineBytesFromNetwork take), typed by
tensorrt-stubs so mypy checks every call, with a timing cache kept per GPU and TensorRT version, the target's
workspace limit, and a progress display. The engine directory holds the engines, a copy of the export's manifest
pointing at them (graph format "engine"), the tokenizer, and janus_edge_engines.json (what it was built for).
`build` refuses a target that is not this machine's GPU unless forced: engines run only where they were built,
and a target whose usable memory cannot hold the build's own peak (`targets.build_peak_bytes`). Engines are built
for the same `--images`/`--context` as `janus-edge plan`, and janus_edge_engines.json records each engine's size
and device memory (`device_memory_size_v2`, per profile too), which the backend and `plan ENGINE_DIR` read.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorrt as trt

from janus_edge.runtime import kv
from janus_edge.runtime.backends.cuda import device_name_and_capability
from janus_edge.runtime.backends.engine_manifest import ENGINE_MANIFEST, EngineInfo, EngineManifest
from janus_edge.runtime.backends.tensorrt import read_engine, require_tensorrt
from janus_edge.runtime.errors import BackendError, RequestError
from janus_edge.runtime.manifest import Manifest, load_manifest, sha256_file
from janus_edge.runtime.tensor_names import SAMPLERS

from ..staging import staged_directory
from .profiles import engine_profiles, request_limits
from .sampler_graph import sampler_graph
from .targets import GIB, Target, build_peak_bytes, gpu_mismatch, target as find_target


def default_timing_cache(gpu: str, tensorrt_version: str) -> Path:
    safe = "".join(c if c.isalnum() else "-" for c in gpu)
    return Path.home() / ".cache" / "janus-edge" / f"timing-{safe}-trt{tensorrt_version}.cache"


def progress_monitor(label: str) -> "trt.IProgressMonitor":
    """A TensorRT IProgressMonitor that prints one line per top-level phase step (TensorRT >= 10.0)."""
    import tensorrt as trt

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.totals: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:  # parent: None at top
            self.totals[phase_name] = num_steps
            if not parent_phase:
                sys.stderr.write(f"\n  {label}: {phase_name}")

        def step_complete(self, phase_name: str, step: int) -> bool:
            if phase_name in self.totals and len(self.totals) == 1:
                sys.stderr.write(f"\r  {label}: {phase_name} {step + 1}/{self.totals[phase_name]}")
            sys.stderr.flush()
            return True  # keep building

        def phase_finish(self, phase_name: str) -> None:
            self.totals.pop(phase_name, None)

    return Monitor()


def write_engine(source: Path, destination: Path, profiles: list[dict[str, list[list[int]]]], cache: Path,
                 workspace_bytes: int, label: str) -> int:
    """One strongly typed engine from an ONNX file, written to `destination` straight from TensorRT's serialised
    memory (no Python copy: the parser's weights and the plan are the build's 2 x weights, `build_peak_bytes`);
    reads and updates the timing cache at `cache`. Returns the engine file's size."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT's ONNX parser refused {source.name}: {errors}",
                           "run `janus-edge check-trt EXPORT_DIR` to see which nodes this TensorRT lacks")
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)  # fp32 graphs stay fp32: token parity with ONNX Runtime
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    for shapes in profiles:
        profile = builder.create_optimization_profile()
        for tensor, (low, opt, high) in shapes.items():
            profile.set_shape(tensor, trt.Dims(low), trt.Dims(opt), trt.Dims(high))
        config.add_optimization_profile(profile)
    timing = config.create_timing_cache(cache.read_bytes() if cache.is_file() else b"")
    if not config.set_timing_cache(timing, ignore_mismatch=False):
        timing = config.create_timing_cache(b"")  # a cache from another GPU or TensorRT: start a fresh one
        config.set_timing_cache(timing, ignore_mismatch=False)
    config.progress_monitor = progress_monitor(label)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build an engine from {source.name}", "see TensorRT's log above")
    cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    with open(destination, "wb") as file:
        file.write(memoryview(serialized))
    return destination.stat().st_size


def engine_memory(path: Path, logger: "trt.ILogger") -> tuple[int, list[int]]:
    """(device_memory_size_v2, per-profile get_device_memory_size_for_profile_v2) of an engine file, read after the
    builder's memory is gone."""
    import tensorrt as trt

    engine = read_engine(trt.Runtime(logger), path)
    if engine is None:
        raise BackendError("TensorRT could not load the engine it just built", "see TensorRT's log above")
    return int(engine.device_memory_size_v2), [int(engine.get_device_memory_size_for_profile_v2(i))
                                               for i in range(engine.num_optimization_profiles)]


def check_build_memory(export_dir: Path, manifest: Manifest, target: Target) -> None:
    """Refuses, before building, a target whose usable memory cannot hold the build's peak."""
    weights = {name: sum(p.stat().st_size for p in (export_dir / g.file, export_dir / f"{g.file}.data") if p.is_file())
               for name, g in manifest.graphs.items()}
    peak = build_peak_bytes(weights, target)
    if peak > target.usable_bytes:
        largest = max(weights, key=lambda name: weights[name])
        raise RequestError(f"building {largest} takes about {peak / GIB:.1f} GiB (2 x its {weights[largest] / GIB:.1f}"
                           f" GiB of weights + the {target.workspace_gib:g} GiB workspace), more than the "
                           f"{target.usable_bytes / GIB:.1f} GiB {target.name} has", "export at a smaller precision "
                           "(janus-edge plan suggests one) or build on a larger target of the same GPU")


def build(export_dir: str | Path, engine_dir: str | Path, target_name: str, timing_cache: str | None = None,
          images: int | None = None, context: int | None = None, force: bool = False,
          log=print) -> EngineManifest:
    require_tensorrt()
    import tensorrt as trt

    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    if any(graph.format != "onnx" for graph in manifest.graphs.values()):
        raise RequestError(f"{export_dir} is an engine directory, not an ONNX export",
                           "pass the export the engines were built from")
    kv.check_support(manifest.kv_cache.form, kv_dtype=manifest.kv_dtype, backend=kv.TENSORRT,
                     family=manifest.model.family)
    target = find_target(target_name)
    rows, context = request_limits(manifest, target, images, context)
    check_build_memory(export_dir, manifest, target)
    gpu, capability = device_name_and_capability()
    mismatch = gpu_mismatch(target, gpu, capability)
    if mismatch and not force:
        raise RequestError(mismatch, f"build on the {target.name} itself, choose the --target of this GPU, or pass "
                                     "--force to build for this GPU with the target's limits")
    if mismatch:
        log(f"note (--force): {mismatch}")
    profiles = engine_profiles(manifest, target, images, context)
    logger = trt.Logger(trt.Logger.WARNING)
    cache = Path(timing_cache) if timing_cache else default_timing_cache(gpu, trt.__version__)
    cache.parent.mkdir(parents=True, exist_ok=True)
    engines: dict[str, EngineInfo] = {}
    with staged_directory(engine_dir, ENGINE_MANIFEST) as staging, tempfile.TemporaryDirectory() as tmp:
        sources = {name: export_dir / graph.file for name, graph in manifest.graphs.items()}
        for name, cfg in SAMPLERS.items():
            if name not in profiles:  # no CFG sampler for JanusFlow (no image tokens to mix)
                continue
            sources[name] = Path(tmp) / f"{name}.onnx"
            sources[name].write_bytes(sampler_graph(cfg).SerializeToString())
        for name, source in sources.items():
            start = time.perf_counter()
            precision = manifest.graphs[name].precision if name in manifest.graphs else "fp32"
            path = staging / f"{name}.engine"
            size = write_engine(source, path, profiles[name], cache, int(target.workspace_gib * GIB), name)
            scratch, per_profile = engine_memory(path, logger)
            engines[name] = EngineInfo(file=f"{name}.engine", source_onnx=source.name,
                                       source_onnx_sha256=manifest.files.get(source.name) or sha256_file(source),
                                       precision=precision, profiles=profiles[name], engine_bytes=size,
                                       device_memory_bytes=scratch, profile_device_memory_bytes=per_profile)
            log(f"\n  {name}: built in {time.perf_counter() - start:.0f} s")
        shutil.copyfile(export_dir / manifest.tokenizer_file, staging / manifest.tokenizer_file)
        built_manifest = EngineManifest(tensorrt_version=trt.__version__, gpu_name=gpu, compute_capability=capability,
                                        target=target.name, export_dir=str(export_dir), engines=engines,
                                        build_options={"max_batch": rows, "max_context": context,
                                                       "images": max(1, rows // 2),
                                                       "workspace_gib": target.workspace_gib, "strongly_typed": True,
                                                       "timing_cache": str(cache), "forced": bool(mismatch)})
        built_manifest.write(staging)
        graphs = {name: dataclasses.replace(graph, file=f"{name}.engine", format="engine")
                  for name, graph in manifest.graphs.items()}
        limits = dataclasses.replace(manifest.limits, max_context=built_manifest.build_options["max_context"],
                                     max_batch=built_manifest.build_options["max_batch"])
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        dataclasses.replace(manifest, graphs=graphs, limits=limits, files=files).write(staging)
    log(f"wrote {len(engines)} engines for {target.name} to {engine_dir}")
    return built_manifest
