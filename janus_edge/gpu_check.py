"""`make gpu-check`: on a machine with an NVIDIA GPU, TensorRT and cuda-python, build the tiny model's engines, run
both pipelines on them and compare with ONNX Runtime on the CPU. Prints a short report; exits 1 on a failure.

Judged on teacher-forced runs: both backends read the same token sequence (a text prompt, then text tokens through
the LM head; a prompt, then image tokens through the generation head with CFG), so every position is compared on
the same past and one early flip cannot cascade. fp32 engines: logits within `FP32_LOGITS` (relative RMS) and
every free-running greedy token equal to the CPU's. fp16 engines: logits within `FP16_LOGITS` and at least
`FP16_AGREEMENT` of the teacher-forced argmax tokens equal; free-running agreement is reported, not judged.
These thresholds have not been calibrated on a GPU yet (docs/jetson.md).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FP32_LOGITS, FP16_LOGITS, FP16_AGREEMENT = 1e-4, 2e-2, 0.95
FORCED_TOKENS = 48


@dataclass
class Agreement:
    logits_error: float  # RMS of the difference over RMS of the CPU's logits, all forced positions
    tokens: float  # fraction of forced positions whose argmax agrees

    def passes(self, precision: str) -> bool:
        if precision == "fp32":
            return self.logits_error <= FP32_LOGITS and self.tokens == 1.0
        return self.logits_error <= FP16_LOGITS and self.tokens >= FP16_AGREEMENT


def forced_ids(manifest, head: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A prompt of text ids and the forced continuation (text ids for lm_head, image ids for generation_head)."""
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, min(manifest.model.vocab_size, 100_000), 12)
    vocab = manifest.model.vocab_size if head == "lm_head" else manifest.model.codebook_size
    return prompt, rng.integers(0, vocab, FORCED_TOKENS)


def teacher_forced_logits(backend, head: str, prompt: np.ndarray, forced: np.ndarray) -> np.ndarray:
    """Logits [positions, V] of `head` after the prompt and after each forced token; generation_head runs the CFG
    pair (rows cond/uncond: the same ids, so the check covers the batch path) and mixes with the manifest's weight."""
    from janus_edge.runtime.sizing import request_capacity

    manifest = backend.manifest
    rows, embedding = (1, "text_embedding") if head == "lm_head" else (2, "generation_embedding")
    cfg = None if head == "lm_head" else manifest.generation.cfg_weight
    length = len(prompt) + len(forced)
    ids = np.tile(prompt, (rows, 1))
    out = []
    with backend.kv_decoder(rows, request_capacity(length, manifest.limits.max_context)) as decoder:
        hidden = decoder.step(backend.embed("text_embedding", ids), np.ones_like(ids),
                              np.tile(np.arange(len(prompt)), (rows, 1)), last_only=True)
        for index in range(len(forced) + 1):
            logits = backend.run(head, hidden_states=hidden)["logits"][:, -1].astype(np.float64)
            out.append(logits[0] if cfg is None else logits[1] + cfg * (logits[0] - logits[1]))
            if index == len(forced):
                break
            step = np.full((rows, 1), forced[index])
            position = len(prompt) + index
            hidden = decoder.step(backend.embed(embedding, step),
                                  np.ones((rows, position + 1), np.int64), np.full((rows, 1), position))
    return np.stack(out)


def compare(cpu_backend, gpu_backend, head: str) -> Agreement:
    prompt, forced = forced_ids(cpu_backend.manifest, head)
    reference = teacher_forced_logits(cpu_backend, head, prompt, forced)
    other = teacher_forced_logits(gpu_backend, head, prompt, forced)
    error = float(np.sqrt(np.mean((other - reference) ** 2)) / max(np.sqrt(np.mean(reference ** 2)), 1e-12))
    tokens = float(np.mean(other.argmax(-1) == reference.argmax(-1)))
    return Agreement(error, tokens)


def check_precision(cpu, gpu_rt, precision: str, image: np.ndarray) -> tuple[bool, list[str]]:
    """One export/engine pair: teacher-forced agreement on both heads, then free runs (judged for fp32 only)."""
    lines, ok = [], True
    for head in ("lm_head", "generation_head"):
        agreement = compare(cpu.backend, gpu_rt.backend, head)
        passed = agreement.passes(precision)
        ok &= passed
        lines.append(f"{precision} {head}, teacher-forced: logits relative error {agreement.logits_error:.2e}, "
                     f"argmax agrees {agreement.tokens:.3f} -> {'PASS' if passed else 'FAIL'}")
    text_cpu = cpu.understand([image], "Describe this image.", max_new_tokens=24).token_ids
    text_gpu = gpu_rt.understand([image], "Describe this image.", max_new_tokens=24).token_ids
    images_cpu = cpu.generate_images("a red fox", n=1, temperature=0)
    images_gpu = gpu_rt.generate_images("a red fox", n=1, temperature=0)
    text_agree = float(np.mean([a == b for a, b in zip(text_cpu, text_gpu)])) if text_cpu else 1.0
    image_agree = float((images_cpu.tokens == images_gpu.tokens).mean())
    pixels = gpu_rt.backend.run("vq_decoder", image_ids=images_cpu.tokens)["pixels"]
    pixel_error = float(np.abs(pixels - images_cpu.pixels).max())
    pixel_limit = 1e-3 if precision == "fp32" else 0.05
    free_ok = pixel_error <= pixel_limit and (precision != "fp32" or (text_cpu == text_gpu and image_agree == 1.0))
    ok &= free_ok
    lines.append(f"{precision} free runs: understanding tokens agree {text_agree:.3f}, image tokens agree "
                 f"{image_agree:.3f}{' (reported, not judged)' if precision != 'fp32' else ''}, VQ pixels max error "
                 f"{pixel_error:.2e} -> {'PASS' if free_ok else 'FAIL'}")
    seeded = [gpu_rt.generate_images("a red fox", n=1, seed=3).tokens for _ in range(2)]
    repeatable = bool((seeded[0] == seeded[1]).all())
    ok &= repeatable
    lines.append(f"{precision}: seeded sampling on the GPU repeats run to run: {repeatable}")
    return ok, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m janus_edge.gpu_check")
    parser.add_argument("--out", default="out/gpu-check")
    parser.add_argument("--target", default="datacenter", help="build target (orin-nano-8gb on a Jetson Orin Nano)")
    args = parser.parse_args(argv)
    from janus_edge.runtime.backends.cuda import device_name_and_capability
    from janus_edge.runtime.backends.tensorrt import require_tensorrt
    from janus_edge.runtime.errors import JanusEdgeError

    try:
        require_tensorrt()
        gpu, capability = device_name_and_capability()
    except JanusEdgeError as exc:
        print(f"gpu-check: error: {exc}", file=sys.stderr)
        return 2
    import tensorrt

    from janus_edge.export.exporter import export
    from janus_edge.export.tiny import write_checkpoint
    from janus_edge.export.tensorrt.build import build
    from janus_edge.runtime import JanusRuntime

    out = Path(args.out)
    quiet = lambda message: None  # noqa: E731
    model = write_checkpoint(out / "tiny", "hf", seed=0)
    lines, ok = [f"gpu-check on {gpu} (compute capability {capability}), TensorRT {tensorrt.__version__}"], True
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    for precision in ("fp32", "fp16"):
        export_dir, engine_dir = out / f"export-{precision}", out / f"engines-{precision}"
        export(model, export_dir, precision=precision, max_batch=4, max_context=1024, log=quiet)
        build(export_dir, engine_dir, args.target, log=quiet)
        with JanusRuntime.load(export_dir) as cpu, JanusRuntime.load(engine_dir, backend="tensorrt") as gpu_rt:
            passed, report = check_precision(cpu, gpu_rt, precision, image)
        ok &= passed
        lines += report
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
