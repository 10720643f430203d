"""Both pipelines on the engines against ONNX Runtime on the CPU, and CUDA-graph replay against plain decoding.

Judged on teacher-forced runs: both backends read the same token sequence (a text prompt, then text tokens through
the LM head; a prompt, then image tokens through the generation head with CFG), so every position is compared on
the same past and one early flip cannot cascade: logits within the precision's relative RMS error and argmax tokens
agreeing as often as `tolerances` asks. Free runs (understanding and generation, greedy) are judged token for token
for fp32 only; for reduced precisions their agreement is reported. The VQ decoder is judged on the CPU's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from janus_edge.runtime.kv import request_capacity

from .report import Check
from .tolerances import tolerance

FORCED_TOKENS = 48
QUESTION, PROMPT = "Describe this image.", "a red fox"
PIXEL_ERROR = {"fp32": 1e-3}  # max abs error of VQ pixels in [-1, 1]; every reduced precision: REDUCED_PIXEL_ERROR
REDUCED_PIXEL_ERROR = 0.05


@dataclass
class Agreement:
    logits_error: float  # RMS of the difference over RMS of the CPU's logits, all forced positions
    tokens: float  # fraction of forced positions whose argmax agrees

    def passes(self, precision: str) -> bool:
        limits = tolerance(precision)
        return self.logits_error <= limits.error and self.tokens >= limits.agreement


def forced_ids(manifest, head: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A prompt of text ids and the forced continuation (text ids for lm_head, image ids for generation_head)."""
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, min(manifest.model.vocab_size, 100_000), 12)
    vocab = manifest.model.vocab_size if head == "lm_head" else manifest.model.codebook_size
    return prompt, rng.integers(0, vocab, FORCED_TOKENS)


def teacher_forced_logits(backend, head: str, prompt: np.ndarray, forced: np.ndarray) -> np.ndarray:
    """Logits [positions, V] of `head` after the prompt and after each forced token; generation_head runs the CFG
    pair (rows cond/uncond: the same ids, so the check covers the batch path) and mixes with the manifest's weight."""
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
            logits = backend.apply(head, hidden)[:, -1].astype(np.float64)
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


def heads(manifest) -> list[str]:
    """The heads a teacher-forced run can check (JanusFlow has no generation head: it generates latents)."""
    return [head for head in ("lm_head", "generation_head") if head in manifest.graphs]


def pipeline_checks(cpu, gpu_rt, precision: str, image: np.ndarray) -> list[Check]:
    """Teacher-forced agreement on each head, then free runs (judged for fp32 only), then seeded repeatability."""
    limits = tolerance(precision)
    checks = []
    for head in heads(cpu.manifest):
        agreement = compare(cpu.backend, gpu_rt.backend, head)
        checks.append(Check(f"teacher-forced {head}", "pass" if agreement.passes(precision) else "fail",
                            f"logits relative RMS error {agreement.logits_error:.2e} (limit {limits.error:g}), "
                            f"argmax agrees {agreement.tokens:.3f} (at least {limits.agreement:g})",
                            {"logits_error": agreement.logits_error, "token_agreement": agreement.tokens,
                             "positions": FORCED_TOKENS + 1}))
    judged = precision == "fp32"
    text_cpu = cpu.understand([image], QUESTION, max_new_tokens=24).token_ids
    text_gpu = gpu_rt.understand([image], QUESTION, max_new_tokens=24).token_ids
    text_agree = float(np.mean([a == b for a, b in zip(text_cpu, text_gpu)])) if text_cpu else 1.0
    same_text = list(text_cpu) == list(text_gpu)
    checks.append(Check("free-run understanding", "pass" if same_text or not judged else "fail",
                        f"greedy tokens agree {text_agree:.3f}{'' if judged else ' (reported, not judged)'}",
                        {"token_agreement": text_agree, "tokens": len(text_cpu), "judged": judged}))
    if "generation_head" not in cpu.manifest.graphs:
        return checks
    images_cpu = cpu.generate_images(PROMPT, n=1, temperature=0)
    images_gpu = gpu_rt.generate_images(PROMPT, n=1, temperature=0)
    image_agree = float((images_cpu.tokens == images_gpu.tokens).mean())
    pixels = gpu_rt.backend.apply("vq_decoder", images_cpu.tokens)
    pixel_error = float(np.abs(pixels - images_cpu.pixels).max())
    pixel_limit = PIXEL_ERROR.get(precision, REDUCED_PIXEL_ERROR)
    ok = pixel_error <= pixel_limit and (image_agree == 1.0 or not judged)
    checks.append(Check("free-run generation", "pass" if ok else "fail",
                        f"greedy image tokens agree {image_agree:.3f}{'' if judged else ' (reported, not judged)'}, "
                        f"VQ pixels max error {pixel_error:.2e} (limit {pixel_limit:g})",
                        {"token_agreement": image_agree, "pixel_max_error": pixel_error, "judged": judged}))
    seeded = [gpu_rt.generate_images(PROMPT, n=1, seed=3).tokens for _ in range(2)]
    repeatable = bool((seeded[0] == seeded[1]).all())
    checks.append(Check("seeded sampling repeats", "pass" if repeatable else "fail",
                        f"two seeded generations on the GPU give {'the same' if repeatable else 'different'} tokens"))
    return checks


def graph_replay_check(gpu_rt) -> Check:
    """Greedy generation with the decode step replayed from CUDA graphs, then without graphs (the backend's own
    fallback for engines that cannot be captured, `TrtGraph.capture_error`, set for the second run): the same
    tokens. A capture that failed on this GPU is reported with TensorRT's or CUDA's error."""
    if "generation_head" not in gpu_rt.manifest.graphs:
        return Check("graph replay", "skipped", "no image-token generation in this export")
    decoder = gpu_rt.backend.graph("decoder")
    captured = gpu_rt.generate_images(PROMPT, n=1, temperature=0).tokens
    if decoder.capture_error is not None:
        return Check("graph replay", "skipped", f"the decoder could not be captured into a CUDA graph on this GPU "
                                                f"(decoding ran without graphs): {decoder.capture_error}",
                     {"capture_error": str(decoder.capture_error)})
    decoder.capture_error = RuntimeError("CUDA graphs turned off by gpu-check")
    try:
        plain = gpu_rt.generate_images(PROMPT, n=1, temperature=0).tokens
    finally:
        decoder.capture_error = None
    agreement = float((captured == plain).mean())
    return Check("graph replay", "pass" if agreement == 1.0 else "fail",
                 f"greedy image tokens with and without CUDA graphs agree {agreement:.3f} (must be 1)",
                 {"token_agreement": agreement})
