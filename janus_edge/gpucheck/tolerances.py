"""How far a TensorRT engine may be from ONNX Runtime on the CPU, by the precision of the graph it was built from.

One table for every comparison gpu-check makes (each engine's outputs, teacher-forced logits): `error` bounds the
relative RMS error of float outputs (RMS of the difference over RMS of the CPU's values), `agreement` the fraction
of integer outputs and argmax tokens that must be equal. fp32 engines are built without TF32 (export/tensorrt/build),
so only kernel summation order separates them from the CPU. A graph with several precision words (int8,w4,fp16)
takes the loosest. NOT calibrated on hardware yet: a real GPU's first reports will set these (docs/jetson.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    error: float  # relative RMS error of float outputs
    agreement: float  # fraction of integer outputs / argmax tokens equal


TOLERANCES = {"fp32": Tolerance(1e-4, 1.0), "fp16": Tolerance(2e-2, 0.95), "w8": Tolerance(2e-2, 0.95),
              "int8": Tolerance(5e-2, 0.90), "w4": Tolerance(5e-2, 0.90)}


def tolerance(precision: str) -> Tolerance:
    """The loosest tolerance of the precision's words ("int8,w4,fp16" -> int8's); an unknown word gets the
    loosest of all."""
    words = [word.strip() for word in precision.split(",") if word.strip()] or ["fp32"]
    loosest = max(TOLERANCES.values(), key=lambda t: t.error)
    chosen = [TOLERANCES.get(word, loosest) for word in words]
    return Tolerance(max(t.error for t in chosen), min(t.agreement for t in chosen))
