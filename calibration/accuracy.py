"""`janus-edge accuracy`: what a reduced-precision export costs, measured against the fp32 export on real inputs.

- Per graph and per output (the decoder's written KV included): cosine similarity and relative L2, both exports
  fed the same inputs, those the graph really sees (photographs, prompts, the fp32 decoder's hidden states on the
  understanding and on the generation sequences, image tokens the model generates). A graph's summary is the
  lowest cosine and the highest relative L2 of its outputs (`worst_output` names the latter).
- Understanding, under teacher forcing: the fp32 export answers each question greedily (up to `answer_tokens`; an
  answer may end earlier at EOS); each export then runs the prompt and that answer end to end (its own embeddings,
  vision encoder and decoder), the answer reading the KV cache the prompt wrote, and we report over every answer
  token how often their next-token argmax agrees and the mean KL(fp32 || candidate).
- Generation, under teacher forcing: the fp32 export samples an image; both exports score its image tokens with CFG
  the same way, and we report the argmax agreement per step and the PSNR of the candidate's VQ decoding.

Only the runtime's public surface is used: `JanusRuntime`, `backend.run`, `backend.apply`, `backend.kv_decoder`,
`manifest`, `prompts`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from janus_edge.runtime import JanusRuntime, Turn
from janus_edge.runtime.images import preprocess, to_uint8
from janus_edge.runtime.pipelines.understand import image_slots
from janus_edge.runtime.kv import kv_form, request_capacity
from janus_edge.runtime.tensor_names import ATTENTION_MASK, INPUTS_EMBEDS, POSITION_IDS

from . import data


def _similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    cosine = float(a @ b) / max(norm_a * norm_b, 1e-30)
    return cosine, float(np.linalg.norm(a - b)) / max(norm_a, 1e-30)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


class _Pair:
    """The fp32 export and the candidate, run on the same inputs graph by graph, every output scored."""

    def __init__(self, ref: JanusRuntime, cand: JanusRuntime):
        self.ref, self.cand = ref, cand
        self.scores: dict[str, dict[str, list[tuple[float, float]]]] = {name: {} for name in ref.manifest.graphs}

    def run(self, name: str, **feeds: np.ndarray) -> tuple[dict, dict]:
        """Both exports' outputs of graph `name` on `feeds` (cast to the dtypes each graph declares; the decoder
        also gets an empty cache of each export's own form and dtype). Outputs both hold in the same dtype are
        scored (an int8 cache is judged by what it does to the hidden states and tokens)."""
        expected, got = (rt.backend.run(name, **_typed(rt, name, feeds), **_empty_cache(rt, name, feeds))
                         for rt in (self.ref, self.cand))
        for output, value in expected.items():
            if output in got and got[output].dtype == value.dtype:
                self.scores[name].setdefault(output, []).append(_similarity(value, got[output]))
        return expected, got

    def apply(self, name: str, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`run` for a graph of one input and one output (both named by the manifest): both exports' outputs."""
        spec = self.ref.manifest.graphs[name]
        expected, got = self.run(name, **{spec.inputs[0].name: value})
        return expected[spec.outputs[0].name], got[spec.outputs[0].name]

    def report(self) -> dict:
        graphs = {}
        for name, outputs in self.scores.items():
            per_output = {output: {"cosine": float(np.mean([c for c, _ in values])),
                                   "rel_l2": float(np.mean([r for _, r in values]))}
                          for output, values in outputs.items()}
            worst = max(per_output, key=lambda o: per_output[o]["rel_l2"]) if per_output else None
            graphs[name] = {"precision": self.cand.manifest.graphs[name].precision,
                            "cosine": min((o["cosine"] for o in per_output.values()), default=float("nan")),
                            "rel_l2": per_output[worst]["rel_l2"] if worst else float("nan"),
                            "worst_output": worst, "outputs": per_output}
        return graphs


def _typed(runtime: JanusRuntime, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    dtypes = {t.name: t.dtype for t in runtime.manifest.graphs[name].inputs}
    return {key: np.ascontiguousarray(value, dtype=dtypes[key]) for key, value in feeds.items()}


def _empty_cache(runtime: JanusRuntime, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The decoder's cache inputs with no cached position (names, shapes and dtype as the manifest lists them):
    no slot in the in_place form, room for the new positions in the ort_gqa form (its operator writes them)."""
    if name != "decoder":
        return {}
    batch, seq = feeds[INPUTS_EMBEDS].shape[:2]
    sizes = {"batch": batch, "capacity": seq if kv_form(runtime.manifest.kv_cache.form).writes_cache else 0}
    return {t.name: np.zeros([sizes.get(d, d) for d in t.shape], t.dtype)
            for t in runtime.manifest.graphs["decoder"].inputs if "capacity" in t.shape}


def _with_images(runtime: JanusRuntime, ids: np.ndarray, text_embeds: np.ndarray,
                 image_embeds: np.ndarray) -> np.ndarray:
    embeds = text_embeds.copy()
    embeds[image_slots(ids, runtime.manifest, len(image_embeds))] = image_embeds.reshape(-1, embeds.shape[-1])
    return embeds


def _teacher_forced_hidden(runtime: JanusRuntime, embeds: np.ndarray, prompt: int) -> np.ndarray:
    """Hidden states predicting positions prompt..S-1 of `embeds` [B,S,D], run as the runtime runs a request: the
    prompt prefilled, then the rest in one step that reads the KV cache the prompt wrote."""
    batch, length = embeds.shape[:2]
    positions = np.broadcast_to(np.arange(length), (batch, length))
    with runtime.backend.kv_decoder(batch, request_capacity(length, runtime.manifest.limits.max_context)) as decoder:
        hidden = [decoder.step(embeds[:, :prompt], np.ones((batch, prompt), np.int64), positions[:, :prompt],
                               last_only=True)]
        if length - 1 > prompt:  # the last position predicts nothing we score
            hidden.append(decoder.step(embeds[:, prompt:-1], np.ones((batch, length - 1), np.int64),
                                       positions[:, prompt:-1]))
    return np.concatenate(hidden, axis=1)


def _score_understanding(pair: _Pair, image, question: str, answer_tokens: int) -> dict:
    ref, cand = pair.ref, pair.cand
    answer = ref.understand([image], question, max_new_tokens=answer_tokens)
    prompt = ref.prompts.understanding([Turn(question, [image])])
    ids = np.array([prompt + answer.token_ids])
    vision = pair.apply("vision_encoder", preprocess(image, ref.manifest.preprocessing)[None])
    text = pair.apply("text_embedding", ids)
    embeds = [_with_images(rt, ids, t, v) for rt, t, v in zip((ref, cand), text, vision)]
    pair.run("decoder", **{INPUTS_EMBEDS: embeds[0], ATTENTION_MASK: np.ones_like(ids),
                           POSITION_IDS: np.arange(ids.size)[None]})
    hidden = [_teacher_forced_hidden(rt, e, len(prompt)) for rt, e in zip((ref, cand), embeds)]
    reference_logits = pair.apply("lm_head", hidden[0])[0][0]
    candidate_logits = cand.backend.apply("lm_head", hidden[1])[0]
    p, q = _log_softmax(reference_logits), _log_softmax(candidate_logits)
    return {"question": question, "tokens": len(answer.token_ids), "finish_reason": answer.finish_reason,
            "agreeing": int((reference_logits.argmax(-1) == candidate_logits.argmax(-1)).sum()),
            "kl_sum": float((np.exp(p) * (p - q)).sum())}


def _score_generation(pair: _Pair, prompt: str, seed: int) -> dict:
    ref, cand = pair.ref, pair.cand
    generated = ref.generate_images(prompt, n=1, seed=seed)
    tokens = generated.tokens[0]
    ids = ref.prompts.generation(prompt)
    rows = np.array([ids, ref.prompts.unconditional(ids)], np.int64)
    text = pair.apply("text_embedding", rows)
    image = pair.apply("generation_embedding", np.stack([tokens[:-1]] * 2))
    embeds = [np.concatenate([t, i], axis=1) for t, i in zip(text, image)]
    hidden = [_teacher_forced_hidden(rt, e, len(ids)) for rt, e in zip((ref, cand), embeds)]
    cfg = ref.manifest.generation.cfg_weight
    mix = lambda logits: logits[1] + cfg * (logits[0] - logits[1])  # noqa: E731  rows [cond, uncond]
    reference_logits = mix(pair.apply("generation_head", hidden[0])[0])
    candidate_logits = mix(cand.backend.apply("generation_head", hidden[1]))
    expected, got = pair.apply("vq_decoder", tokens[None])
    error = float(((to_uint8(expected).astype(np.float64) - to_uint8(got)) ** 2).mean())
    return {"prompt": prompt, "token_agreement": float((reference_logits.argmax(-1) == candidate_logits.argmax(-1))
                                                       .mean()),
            "vq_psnr_db": 10 * np.log10(255.0 ** 2 / error) if error else np.inf}


def accuracy(reference_dir: str | Path, candidate_dir: str | Path, images_dir: str | None = None,
             prompts_file: str | None = None, samples: int = 4, answer_tokens: int = 24) -> dict:
    with JanusRuntime.load(reference_dir) as ref, JanusRuntime.load(candidate_dir) as cand:
        calibration = data.load_set(images_dir, prompts_file, samples)
        pair = _Pair(ref, cand)
        answers = [_score_understanding(pair, image, question, answer_tokens)
                   for image, question in zip(calibration.images, calibration.questions)]
        images = [_score_generation(pair, prompt, seed) for seed, prompt in enumerate(calibration.image_prompts)]
        candidate_precision = cand.manifest.precision
        graphs = pair.report()
    scored = sum(a["tokens"] for a in answers)
    psnr = [i["vq_psnr_db"] for i in images]
    return {
        "reference": str(reference_dir), "candidate": str(candidate_dir),
        "candidate_precision": candidate_precision, "samples": samples, "graphs": graphs,
        "understanding": {"top1_agreement": sum(a["agreeing"] for a in answers) / scored,
                          "kl": sum(a["kl_sum"] for a in answers) / scored, "tokens_scored": scored,
                          "answers": [{k: a[k] for k in ("question", "tokens", "finish_reason", "agreeing")}
                                      for a in answers]},
        "generation": {"token_agreement": float(np.mean([i["token_agreement"] for i in images])),
                       "vq_psnr_db": float(np.mean(psnr)) if np.isfinite(psnr).all() else None},  # None: identical
    }


def format_report(report: dict) -> str:
    lines = [f"{report['candidate']} ({report['candidate_precision']}) vs {report['reference']} (fp32), "
             f"{report['samples']} samples",
             f"{'graph':<22}{'precision':<11}{'cosine':>10}{'rel L2':>11}  worst output"]
    for name, g in report["graphs"].items():
        lines.append(f"{name:<22}{g['precision']:<11}{g['cosine']:>10.5f}{g['rel_l2']:>11.2e}  {g['worst_output']}")
    u, g = report["understanding"], report["generation"]
    lines.append(f"understanding (teacher forcing, {u['tokens_scored']} answer tokens): top-1 agreement "
                 f"{u['top1_agreement']:.3f}, KL {u['kl']:.4f}")
    psnr = "identical" if g["vq_psnr_db"] is None else f"{g['vq_psnr_db']:.1f} dB"
    lines.append(f"generation (teacher forcing): token agreement {g['token_agreement']:.3f}, VQ PSNR {psnr}")
    return "\n".join(lines)
