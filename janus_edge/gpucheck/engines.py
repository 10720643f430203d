"""Each engine against ONNX Runtime on the CPU: the same inputs at every optimisation profile's opt shapes, every
output compared, judged by the graph's precision (`tolerances`).

Polygraphy's Comparator with TrtRunner/OnnxrtRunner was considered and not used: TrtRunner deserialises the engine
and allocates its own context and buffers, so it would test Polygraphy's runtime rather than the backend users run
(TrtGraph: its profile choice, addresses, dtypes); it would add polygraphy (and, for its loaders, onnx-graphsurgeon)
to the Jetson install, which JetPack's TensorRT wheel does not bring; and what it would give here, a per-output
tolerance comparison, is the dozen lines below. The engine runs through `TensorRTBackend.graph(name)`, the
reference through the export's own ONNX Runtime session (the sampler engines, which `build` makes from
export/tensorrt/sampler_graph.py, through a session of that graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from janus_edge.runtime.backends.engine_manifest import EngineManifest
from janus_edge.runtime.manifest import Manifest
from janus_edge.runtime.tensor_names import ATTENTION_MASK, CFG_WEIGHT, IMAGE_IDS, POSITION_IDS, SAMPLERS

from .report import Check
from .tolerances import tolerance


def _value(name: str, shape: list[int], dtype: np.dtype, manifest: Manifest, rng: np.random.Generator) -> np.ndarray:
    """A valid input: token ids inside their vocabulary, a full attention mask, positions counting up, the
    manifest's CFG weight, small normal floats for activations, pixels and cache entries."""
    model = manifest.model
    if np.issubdtype(dtype, np.integer):
        if name == ATTENTION_MASK:
            return np.ones(shape, dtype)
        if name == POSITION_IDS:
            return np.broadcast_to(np.arange(shape[-1]), shape).astype(dtype)
        vocab = model.codebook_size if name == IMAGE_IDS else model.vocab_size
        return rng.integers(0, max(vocab, 1), shape).astype(dtype)
    if name == CFG_WEIGHT:
        return np.full(shape, manifest.generation.cfg_weight, dtype)
    return np.clip(rng.standard_normal(shape) * 0.5, -1, 1).astype(dtype)


def compare_outputs(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], precision: str
                    ) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Per output: relative RMS error and max abs error of floats, the fraction equal of integers; whether all
    are within the precision's tolerance."""
    limits, ok = tolerance(precision), True
    results: dict[str, dict[str, Any]] = {}
    for name, expected in reference.items():
        got = other.get(name)
        if got is None or got.shape != expected.shape:
            results[name] = {"error": f"shape {None if got is None else list(got.shape)} vs {list(expected.shape)}"}
            ok = False
            continue
        if np.issubdtype(expected.dtype, np.integer):
            agreement = float(np.mean(got == expected)) if expected.size else 1.0
            results[name] = {"agreement": agreement}
            ok &= agreement >= limits.agreement
            continue
        want, have = expected.astype(np.float64), got.astype(np.float64)
        error = float(np.sqrt(np.mean((have - want) ** 2)) / max(np.sqrt(np.mean(want ** 2)), 1e-12))
        finite = bool(np.isfinite(have).all())
        results[name] = {"relative_rms_error": error, "max_abs_error": float(np.abs(have - want).max(initial=0)),
                         "finite": finite}
        ok &= finite and error <= limits.error
    return ok, results


def engine_checks(manifest: Manifest, engines: EngineManifest, cpu_backend, gpu_backend, seed: int = 0) -> list[Check]:
    """One check per engine: every profile's opt shapes, run on both sides."""
    import onnxruntime

    from janus_edge.export.tensorrt.sampler_graph import sampler_graph
    from janus_edge.runtime.backends.onnxruntime import OrtGraph

    checks = []
    for name, info in engines.engines.items():
        if name in SAMPLERS:
            session = onnxruntime.InferenceSession(sampler_graph(SAMPLERS[name]).SerializeToString(),
                                                   providers=["CPUExecutionProvider"])
            reference_graph = OrtGraph(session)
        else:
            reference_graph = cpu_backend.graph(name)
        engine = gpu_backend.graph(name)
        rng = np.random.default_rng(seed)
        passed, profiles = True, []
        worst = 0.0
        for profile in info.profiles:
            shapes = {tensor: opt for tensor, (_, opt, _) in profile.items()}
            feeds = {tensor: _value(tensor, shape, engine.dtypes[tensor], manifest, rng)
                     for tensor, shape in shapes.items()}
            ok, outputs = compare_outputs(reference_graph.run(feeds), engine.run(feeds), info.precision)
            passed &= ok
            profiles.append({"shapes": shapes, "outputs": outputs})
            worst = max([worst, *(o.get("relative_rms_error", 0.0) for o in outputs.values())])
        limit = tolerance(info.precision)
        checks.append(Check(f"engine {name}", "pass" if passed else "fail",
                            f"{info.precision}, {len(profiles)} profile(s): worst relative RMS error {worst:.2e} "
                            f"(limit {limit.error:g})", {"precision": info.precision, "profiles": profiles}))
    return checks
