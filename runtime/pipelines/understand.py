"""Image understanding: conversations with images -> answers, batched with left padding, streamed if asked."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..backends.base import Backend, KVDecoder
from ..errors import RequestError
from ..images import load_image, preprocess
from ..manifest import Manifest
from ..prompts import PromptBuilder, Turn
from ..sampling import Sampler
from ..kv import request_capacity
from .requests import StopCallback, check_stop
from ..tokenizer import IncrementalText, TextTokenizer


def image_slots(ids: np.ndarray, manifest: Manifest, images: int) -> np.ndarray:
    """Where the vision encoder's output goes in token ids [B,S] (a boolean mask); refuses a prompt whose image
    tokens do not match `images` images (the pipelines' and `janus-edge accuracy`'s one splice rule)."""
    slots = ids == manifest.tokens.image
    if slots.sum() != images * manifest.model.num_image_tokens:
        raise RequestError(f"the prompt has {int(slots.sum())} image tokens for {images} images",
                           "do not write image tokens into questions yourself")
    return slots


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    finish_reason: str  # "eos", "length" (max_new_tokens) or "context" (exported context full)
    timings: dict[str, float] = field(default_factory=dict)


class UnderstandingPipeline:
    def __init__(self, backend: Backend, manifest: Manifest, tokenizer: TextTokenizer, prompts: PromptBuilder):
        self.backend, self.manifest, self.tokenizer, self.prompts = backend, manifest, tokenizer, prompts

    def run(self, conversations: list[list[Turn]], max_new_tokens: int, sampler: Sampler,
            should_stop: StopCallback | None = None) -> list[Answer]:
        timings: dict[str, float] = {}
        steps = list(self._steps(conversations, max_new_tokens, sampler, timings, should_stop))
        eos, answers = self.manifest.tokens.eos, []
        for row in range(len(conversations)):
            ids = []
            for step in steps:
                ids.append(int(step[row]))
                if ids[-1] == eos:
                    break
            reason = "eos" if ids[-1] == eos else ("context" if timings.get("context_full") else "length")
            answers.append(Answer(self.tokenizer.decode([t for t in ids if t != eos]), ids, reason, dict(timings)))
        return answers

    def stream(self, turns: list[Turn], max_new_tokens: int, sampler: Sampler,
               should_stop: StopCallback | None = None) -> Iterator[str]:
        """Yields the answer's text piece by piece as tokens are produced (one conversation)."""
        text = IncrementalText(self.tokenizer)
        for step in self._steps([turns], max_new_tokens, sampler, {}, should_stop):
            if int(step[0]) == self.manifest.tokens.eos:
                break
            if piece := text.add(int(step[0])):
                yield piece
        if rest := text.flush():  # an answer cut inside a character ends as `understand().text` does
            yield rest

    def check(self, conversations: list[list[Turn]], max_new_tokens: int) -> list[list[int]]:
        """The prompts' token ids, after checking the request against the export's limits."""
        manifest = self.manifest
        if not conversations or not all(conversations):
            raise RequestError("a conversation has no question", "pass at least one Turn per conversation")
        if len(conversations) > manifest.limits.max_batch:
            raise RequestError(f"{len(conversations)} conversations in one batch, over the exported max batch of "
                               f"{manifest.limits.max_batch}", "split the batch or export with a larger --max-batch")
        if max_new_tokens < 1:
            raise RequestError(f"max_new_tokens is {max_new_tokens}", "ask for at least 1 new token")
        rows = [self.prompts.understanding(turns) for turns in conversations]
        longest = max(len(r) for r in rows)
        if longest > manifest.limits.max_context:
            raise RequestError(f"the prompt is {longest} tokens, {longest - manifest.limits.max_context} over the "
                               f"exported context of {manifest.limits.max_context} (each image takes "
                               f"{manifest.model.num_image_tokens + 2})",
                               "shorten the question or history, send fewer images, or export with --max-context")
        return rows

    def _steps(self, conversations: list[list[Turn]], max_new_tokens: int, sampler: Sampler,
               timings: dict[str, float], should_stop: StopCallback | None) -> Iterator[np.ndarray]:
        """Yields the tokens chosen at each step, [B] (pad for rows that already ended)."""
        start = time.perf_counter()
        rows = self.check(conversations, max_new_tokens)
        longest = max(len(r) for r in rows)
        pixels = [preprocess(load_image(image), self.manifest.preprocessing)
                  for turns in conversations for turn in turns for image in turn.images]
        timings["preprocess_s"] = time.perf_counter() - start

        start = time.perf_counter()
        ids = np.full((len(rows), longest), self.manifest.tokens.pad, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for i, row in enumerate(rows):  # left padding, as batched generation needs
            ids[i, longest - len(row):], mask[i, longest - len(row):] = row, 1
        embeds = self.embed(ids, pixels)
        timings["vision_s"] = time.perf_counter() - start
        budget = self.budget(longest, max_new_tokens, timings)
        capacity = request_capacity(longest + budget - 1, self.manifest.limits.max_context)
        with self.backend.kv_decoder(len(rows), capacity) as decoder:
            yield from self.decode(decoder, embeds, mask, np.maximum(mask.cumsum(-1) - 1, 0), budget, sampler,
                                   timings, should_stop)

    def budget(self, prompt_length: int, max_new_tokens: int, timings: dict[str, float]) -> int:
        """New tokens a prompt of `prompt_length` may get within the context (the last token is never fed)."""
        budget = min(max_new_tokens, self.manifest.limits.max_context - prompt_length + 1)
        timings["context_full"] = float(budget < max_new_tokens)
        return budget

    def decode(self, decoder: KVDecoder, embeds: np.ndarray, mask: np.ndarray, positions: np.ndarray, budget: int,
               sampler: Sampler, timings: dict[str, float], should_stop: StopCallback | None = None
               ) -> Iterator[np.ndarray]:
        """Prefills `embeds` on `decoder` (which may already hold earlier positions), then yields up to `budget`
        tokens per row, feeding each back but the last; `should_stop` is asked before every decoder step."""
        tokens = self.manifest.tokens
        batch = embeds.shape[0]
        start = time.perf_counter()
        check_stop(should_stop)
        hidden = decoder.step(embeds, mask, positions, last_only=True)
        timings["prefill_s"], timings["prefill_tokens"] = time.perf_counter() - start, float(embeds.shape[1])
        finished = np.zeros(batch, dtype=bool)
        start = time.perf_counter()
        for step in range(budget):
            chosen = np.where(finished, tokens.pad, self.backend.choose("lm_head", hidden, sampler))
            finished |= chosen == tokens.eos
            if step == 0:
                timings["time_to_first_token_s"] = timings.get("preprocess_s", 0.0) + timings.get("vision_s", 0.0) \
                    + timings["prefill_s"] + time.perf_counter() - start
            yield chosen
            if finished.all() or step == budget - 1:
                break
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
            positions = positions[:, -1:] + 1
            check_stop(should_stop)
            hidden = decoder.step(self.backend.embed("text_embedding", chosen[:, None]), mask, positions)
        decode_s = time.perf_counter() - start
        timings["decode_s"] = decode_s
        timings["new_tokens"] = float(step + 1)
        timings["tokens_per_s"] = (step + 1) / decode_s if decode_s > 0 else 0.0

    def embed(self, ids: np.ndarray, pixels: list[np.ndarray]) -> np.ndarray:
        """Token embeddings [B,S,D] with the vision encoder's output written over the image-token positions."""
        embeds = self.backend.apply("text_embedding", ids)
        slots = image_slots(ids, self.manifest, len(pixels))
        if pixels:
            embeds[slots] = self._encode_images(np.stack(pixels)).reshape(-1, embeds.shape[-1])
        return embeds

    def _encode_images(self, pixels: np.ndarray) -> np.ndarray:
        chunk = max(1, self.manifest.limits.max_batch // 2)  # the images a generation request may hold
        parts = [self.backend.apply("vision_encoder", pixels[i:i + chunk]) for i in range(0, len(pixels), chunk)]
        return np.concatenate(parts)
