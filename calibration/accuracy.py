"""`janus-edge accuracy`: what a reduced-precision export costs, measured against the fp32 export on real inputs.

- Per graph: cosine similarity and relative L2 of each output, on inputs the graph really sees (photographs,
  prompts, hidden states from the fp32 decoder, image tokens the model generates).
- Understanding, under teacher forcing: the fp32 export answers each question greedily; both exports then score
  that same sequence, and we report how often their next-token argmax agrees and the mean KL(fp32 || candidate).
- Generation, under teacher forcing: the fp32 export samples an image; both exports score its 576 tokens with CFG,
  and we report the argmax agreement per step and the PSNR of the candidate's VQ decoding of those tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from janus_edge.runtime import JanusRuntime, Turn
from janus_edge.runtime.images import preprocess, to_uint8

from . import data


def _similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    return cosine, float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _prefill(runtime: JanusRuntime, embeds: np.ndarray) -> np.ndarray:
    batch, length = embeds.shape[:2]
    positions = np.broadcast_to(np.arange(length), (batch, length)).copy()
    return runtime.backend.kv_decoder(batch).step(embeds, np.ones((batch, length), np.int64), positions)


def _understanding_logits(runtime: JanusRuntime, ids: list[int], pixels: list, start: int) -> np.ndarray:
    embeds = runtime._understanding.embed(np.array([ids]), pixels)
    hidden = _prefill(runtime, embeds)[:, start - 1:-1]
    return runtime.backend.run("lm_head", hidden_states=hidden)["logits"][0]


def _generation_logits(runtime: JanusRuntime, prompt: str, tokens: np.ndarray, cfg: float) -> np.ndarray:
    ids = runtime.prompts.generation(prompt)
    rows = np.array([ids, runtime.prompts.unconditional(ids)], np.int64)
    text = runtime.backend.run("text_embedding", input_ids=rows)["inputs_embeds"]
    image = runtime.backend.run("generation_embedding", image_ids=np.stack([tokens[:-1]] * 2))["inputs_embeds"]
    hidden = _prefill(runtime, np.concatenate([text, image], axis=1))[:, len(ids) - 1:]
    logits = runtime.backend.run("generation_head", hidden_states=hidden)["logits"]
    return logits[1] + cfg * (logits[0] - logits[1])


def accuracy(reference_dir: str | Path, candidate_dir: str | Path, images_dir: str | None = None,
             prompts_file: str | None = None, samples: int = 4, answer_tokens: int = 24) -> dict:
    ref, cand = JanusRuntime.load(reference_dir), JanusRuntime.load(candidate_dir)
    calibration = data.load_set(images_dir, prompts_file, samples)
    graphs: dict[str, list[tuple[float, float]]] = {name: [] for name in ref.manifest.graphs}

    def both(name: str, **feeds) -> np.ndarray:
        expected = ref.backend.run(name, **feeds)
        got = cand.backend.run(name, **feeds)
        graphs[name].append(_similarity(next(iter(expected.values())), next(iter(got.values()))))
        return next(iter(expected.values()))

    agreement, kl = [], []
    for image, question in zip(calibration.images, calibration.questions):
        pixels = [preprocess(image, ref.manifest.preprocessing)]
        both("vision_encoder", pixel_values=pixels[0][None])
        prompt = ref.prompts.understanding([Turn(question, [image])])
        answer = ref.understand([image], question, max_new_tokens=answer_tokens).token_ids
        sequence = prompt + answer
        both("text_embedding", input_ids=np.array([sequence]))
        embeds = ref._understanding.embed(np.array([sequence]), pixels)
        positions = np.arange(len(sequence))[None]
        past = {f"past_key_values.{i}.{k}": np.zeros((1, ref.manifest.model.num_kv_heads, 0,
                                                      ref.manifest.model.head_dim), np.float32)
                for i in range(ref.manifest.model.num_layers) for k in ("key", "value")}
        hidden = both("decoder", inputs_embeds=embeds, attention_mask=np.ones_like(positions),
                      position_ids=positions, **past)
        both("lm_head", hidden_states=hidden[:, -len(answer):])
        reference_logits = _understanding_logits(ref, sequence, pixels, len(prompt))
        candidate_logits = _understanding_logits(cand, sequence, pixels, len(prompt))
        agreement.append(float((reference_logits.argmax(-1) == candidate_logits.argmax(-1)).mean()))
        p, q = _log_softmax(reference_logits), _log_softmax(candidate_logits)
        kl.append(float((np.exp(p) * (p - q)).sum(-1).mean()))

    token_agreement, psnr = [], []
    cfg = ref.manifest.generation.cfg_weight
    for i, prompt in enumerate(calibration.image_prompts):
        generated = ref.generate_images(prompt, n=1, seed=i)
        tokens = generated.tokens[0]
        both("generation_embedding", image_ids=tokens[None])
        both("generation_head", hidden_states=hidden[:, -1:])
        reference_logits = _generation_logits(ref, prompt, tokens, cfg)
        candidate_logits = _generation_logits(cand, prompt, tokens, cfg)
        token_agreement.append(float((reference_logits.argmax(-1) == candidate_logits.argmax(-1)).mean()))
        both("vq_decoder", image_ids=tokens[None])
        candidate_pixels = cand.backend.run("vq_decoder", image_ids=tokens[None])["pixels"]
        error = float(((to_uint8(generated.pixels).astype(np.float64) - to_uint8(candidate_pixels)) ** 2).mean())
        psnr.append(10 * np.log10(255.0 ** 2 / error) if error else np.inf)

    mean = lambda values: float(np.mean(values)) if values else float("nan")  # noqa: E731
    return {
        "reference": str(reference_dir), "candidate": str(candidate_dir),
        "candidate_precision": cand.manifest.precision, "samples": samples,
        "graphs": {name: {"precision": cand.manifest.graphs[name].precision,
                          "cosine": mean([c for c, _ in values]), "rel_l2": mean([r for _, r in values])}
                   for name, values in graphs.items()},
        "understanding": {"top1_agreement": mean(agreement), "kl": mean(kl), "tokens_scored":
                          len(agreement) * answer_tokens},
        "generation": {"token_agreement": mean(token_agreement),
                       "vq_psnr_db": mean(psnr) if np.isfinite(psnr).all() else None},  # None: identical pixels
    }


def format_report(report: dict) -> str:
    lines = [f"{report['candidate']} ({report['candidate_precision']}) vs {report['reference']} (fp32), "
             f"{report['samples']} samples",
             f"{'graph':<22}{'precision':<11}{'cosine':>10}{'rel L2':>11}"]
    for name, g in report["graphs"].items():
        lines.append(f"{name:<22}{g['precision']:<11}{g['cosine']:>10.5f}{g['rel_l2']:>11.2e}")
    u, g = report["understanding"], report["generation"]
    lines.append(f"understanding (teacher forcing): top-1 agreement {u['top1_agreement']:.3f}, KL {u['kl']:.4f}")
    psnr = "identical" if g["vq_psnr_db"] is None else f"{g['vq_psnr_db']:.1f} dB"
    lines.append(f"generation (teacher forcing): token agreement {g['token_agreement']:.3f}, VQ PSNR {psnr}")
    return "\n".join(lines)
