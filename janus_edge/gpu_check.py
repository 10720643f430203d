"""`janus-edge gpu-check EXPORT_DIR [--engines DIR] [--json REPORT]` (also `python -m janus_edge.gpu_check ...`):
the one command a user runs on a new GPU machine and sends back.

It needs only the runtime and the `tensorrt` and `onnxruntime` extras (no torch: Python 3.10 on JetPack 6.2 works),
and an export made anywhere (`janus-edge tiny` + `janus-edge export` on a workstation, or a real one). In order:
the machine (GPU, driver, TensorRT, cuda-python: `gpucheck.machine`, where every way it cannot run engines stops
the check in one line with its fix, exit 2), the target for this GPU (any compute capability), engines built for it
unless given, each engine against ONNX Runtime on the CPU (`gpucheck.engines`), device memory and time of one
generation request next to `plan` (`gpucheck.measure`), both pipelines teacher-forced against ONNX Runtime and CUDA
graph replay against plain decoding (`gpucheck.forced`). The report (`gpucheck.report`) is JSON plus a summary;
exit 0 when every check passes, 1 when one fails. Without EXPORT_DIR only the machine is checked.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from janus_edge.gpucheck.machine import choose_target, library_versions, probe_machine
from janus_edge.gpucheck.report import Check, Report
from janus_edge.runtime.backends.engine_manifest import ENGINE_MANIFEST, EngineManifest
from janus_edge.runtime.errors import JanusEdgeError, RequestError
from janus_edge.runtime.manifest import Manifest, load_manifest

PLAN_TOLERANCE = 0.05  # measured device memory within 5 % of plan_engines' figure


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def load_export(export_dir: Path) -> Manifest:
    manifest = load_manifest(export_dir)
    if any(graph.format != "onnx" for graph in manifest.graphs.values()):
        raise RequestError(f"{export_dir} is an engine directory, not an ONNX export",
                           f"pass the export the engines were built from, and the engines with --engines {export_dir}")
    return manifest


def check_engines_match(export_dir: Path, manifest: Manifest, engine_dir: Path, engines: EngineManifest) -> None:
    """Engines built from another export (another precision, other weights) cannot be compared with this one."""
    foreign = [name for name, info in engines.engines.items()
               if info.source_onnx in manifest.files and manifest.files[info.source_onnx] != info.source_onnx_sha256]
    missing = sorted(set(manifest.graphs) - set(engines.engines))
    if foreign or missing:
        what = f"built from other graphs ({', '.join(foreign)})" if foreign else f"missing {', '.join(missing)}"
        raise RequestError(f"the engines in {engine_dir} do not belong to {export_dir}: {what}",
                           f"leave out --engines to build them now, or pass the export they came from "
                           f"({engines.export_dir})")


def _engines(export_dir: Path, engines: Path | None, stack: ExitStack, choice) -> tuple[Path, bool]:
    """The engine directory to check and whether it was built now (into `engines` if it is empty or new, else
    into a temporary directory)."""
    from janus_edge.export.tensorrt.build import build

    if engines is not None and (engines / ENGINE_MANIFEST).is_file():
        return engines, False
    if engines is not None and engines.exists() and any(engines.iterdir()):
        raise RequestError(f"{engines} is neither an engine directory nor empty",
                           "pass engines built by `janus-edge build`, or a new directory to build them into")
    out = engines or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="janus-gpu-check-"))) / "engines"
    build(export_dir, out, choice.target.name, context=choice.max_context, force=not choice.known, log=_log)
    return out, True


def run_gpu_check(export_dir: Path | None, engines: Path | None = None, json_path: Path | None = None) -> Report:
    report = Report(library_versions())
    try:
        _run(report, export_dir, engines)
    except JanusEdgeError as exc:
        report.error = {"message": exc.message, "fix": exc.hint}
        if json_path is not None:
            report.write(json_path)
        raise
    except Exception as exc:  # a bug, or a library failing in a way we do not know yet: the report still goes back
        report.error = {"message": f"unexpected {type(exc).__name__}: {exc}",
                        "fix": "please send this report and the traceback printed below"}
        report.internal = True
        if json_path is not None:
            report.write(json_path)
        raise
    if json_path is not None:
        report.write(json_path)
    return report


def _run(report: Report, export_dir: Path | None, engines: Path | None) -> None:
    from janus_edge.gpucheck.engines import engine_checks
    from janus_edge.gpucheck.forced import graph_replay_check, pipeline_checks
    from janus_edge.gpucheck.measure import free_device_memory, generation_memory, measure_request, open_every_engine
    from janus_edge.runtime import JanusRuntime

    machine = probe_machine()
    report.machine = dataclasses.asdict(machine)
    choice = choose_target(machine)
    target = choice.target
    report.target = {"name": target.name, "known": choice.known, "max_context": choice.max_context,
                     "workspace_gib": target.workspace_gib, "note": choice.note}
    if export_dir is None:
        report.notes.append("no EXPORT_DIR given: the machine was checked, no engine was built or compared")
        return
    manifest = load_export(export_dir)
    with ExitStack() as stack:
        engine_dir, built = _engines(export_dir, engines, stack, choice)
        engine_manifest = EngineManifest.read(engine_dir)
        check_engines_match(export_dir, manifest, engine_dir, engine_manifest)
        report.export = {"path": str(export_dir), "precision": manifest.precision,
                         "engines": str(engine_dir) if engines is not None or not built else "(temporary, removed)",
                         "built": built, "engine_target": engine_manifest.target}
        free_before = free_device_memory()
        gpu_rt = stack.enter_context(JanusRuntime.load(engine_dir, backend="tensorrt"))
        open_every_engine(gpu_rt.backend, engine_manifest.engines)
        free_loaded = free_device_memory()
        cpu = stack.enter_context(JanusRuntime.load(export_dir))
        if "generation_head" in manifest.graphs:
            memory = report.memory = generation_memory(gpu_rt, engine_dir, free_before, free_loaded,
                                                         machine.integrated)
            ratio = memory["backend_peak_bytes"] / memory["planned_bytes"]
            measured = memory["total_bytes"] / memory["planned_bytes"]
            report.checks.append(Check("memory vs plan", "pass" if abs(ratio - 1) <= PLAN_TOLERANCE else "fail",
                                       f"the backend allocated {ratio:.3f} x plan_engines' figure (within "
                                       f"{PLAN_TOLERANCE:.0%}); the driver saw {measured:.3f} x (context, kernels, "
                                       "page rounding: reported, not judged)", {"ratio": ratio, "measured": measured}))
            report.timing = measure_request(gpu_rt.backend, gpu_rt.manifest)
        else:
            report.notes.append("no image-token generation in this export: memory and timing not measured")
        report.checks += engine_checks(manifest, engine_manifest, cpu.backend, gpu_rt.backend)
        image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
        report.checks += pipeline_checks(cpu, gpu_rt, manifest.precision, image)
        report.checks.append(graph_replay_check(gpu_rt))


if __name__ == "__main__":
    from janus_edge.cli import main

    sys.exit(main(["gpu-check", *sys.argv[1:]]))
