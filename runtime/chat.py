"""Chat sessions: a conversation whose KV cache stays between turns, so a follow-up prefills only its new tokens.

Each turn the whole conversation is tokenised as a stateless call would; the cache is kept up to the longest
common prefix with what it already holds (images compared by their pixels, not only their placeholder tokens) and
only the rest is prefilled. Where the re-tokenised history differs from the generated tokens, the cache is rewound
to the point of difference, so answers are those of a stateless re-run.
"""

from __future__ import annotations

import hashlib
from typing import Iterator, Sequence

import numpy as np

from .backends.base import Backend, Closeable, KVDecoder
from .images import load_image, preprocess
from .pipelines import requests
from .pipelines.requests import RequestLock, StopCallback
from .pipelines.understand import Answer, UnderstandingPipeline
from .prompts import Turn
from .sampling import Sampler
from .tokenizer import IncrementalText


class ChatSession(Closeable):
    """One conversation (batch 1). Use as a context manager, or `close()` it, to hand its cache back.

    Its turns take the runtime's request lock, like every other request (see `JanusRuntime`).

    >>> with rt.chat() as chat:
    ...     chat.ask("What is in this picture?", images=["photo.jpg"]).text
    ...     chat.ask("And what colour is it?").text
    """

    def __init__(self, backend: Backend, pipeline: UnderstandingPipeline, max_new_tokens: int, lock: RequestLock):
        self.backend, self.pipeline, self.max_new_tokens, self.lock = backend, pipeline, max_new_tokens, lock
        self.manifest = pipeline.manifest
        self.turns: list[Turn] = []
        self.cached: list = []  # what each cached position holds: a token id, or (image digest, slot)
        self.decoder: KVDecoder | None = None

    def ask(self, question: str, images: Sequence = (), max_new_tokens: int | None = None,
            temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None,
            seed: int | None = None, should_stop: StopCallback | None = None) -> Answer:
        """Answers `question` (about `images`, if any) in the context of the earlier turns."""
        timings: dict[str, float] = {}
        eos = self.manifest.tokens.eos
        sampler = requests.sampler(temperature, top_k, top_p, seed)
        with self.lock.hold():
            ids = list(self._tokens(question, images, max_new_tokens, sampler, timings, should_stop))
        reason = "eos" if ids[-1] == eos else ("context" if timings.get("context_full") else "length")
        return Answer(self.turns[-1].answer or "", ids, reason, timings)

    def stream(self, question: str, images: Sequence = (), max_new_tokens: int | None = None,
               temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None,
               seed: int | None = None, should_stop: StopCallback | None = None) -> Iterator[str]:
        """Like `ask`, yielding text pieces as tokens are produced; the answer joins the history as it grows."""
        return self.lock.stream(self._pieces(question, images, max_new_tokens,
                                             requests.sampler(temperature, top_k, top_p, seed), should_stop))

    def _pieces(self, question: str, images: Sequence, max_new_tokens: int | None, sampler: Sampler,
                should_stop: StopCallback | None) -> Iterator[str]:
        text = IncrementalText(self.pipeline.tokenizer)
        for token in self._tokens(question, images, max_new_tokens, sampler, {}, should_stop):
            if token != self.manifest.tokens.eos and (piece := text.add(token)):
                yield piece
        if rest := text.flush():
            yield rest

    def _tokens(self, question: str, images: Sequence, max_new_tokens: int | None, sampler: Sampler,
                timings: dict[str, float], should_stop: StopCallback | None) -> Iterator[int]:
        limit = self.max_new_tokens if max_new_tokens is None else \
            requests.max_new_tokens(max_new_tokens, self.manifest.limits.max_context)
        images = requests.image_list(images)
        turn = Turn(requests.text("question", question, allow_empty=bool(images)), images)
        conversation = [*self.turns, turn]
        ids = self.pipeline.check([conversation], limit)[0]
        pixels = [preprocess(load_image(image), self.manifest.preprocessing)
                  for t in conversation for image in t.images]
        keys = self._keys(ids, pixels)
        common = self._common_prefix(keys)
        budget = self.pipeline.budget(len(ids), limit, timings)
        if self.decoder is None:
            self.decoder = self.backend.kv_decoder(1)
        self.decoder.rewind(common)
        new = np.array([ids[common:]], dtype=np.int64)
        first_image = sum(1 for key in keys[:common] if isinstance(key, tuple) and key[1] == 0)
        embeds = self.pipeline.embed(new, pixels[first_image:])
        self.turns.append(turn)
        generated: list[int] = []
        chosen = self.pipeline.decode(self.decoder, embeds, np.ones((1, len(ids)), np.int64),
                                      np.arange(common, len(ids))[None], budget, sampler, timings, should_stop)
        try:
            for step in chosen:
                generated.append(int(step[0]))
                yield generated[-1]
        finally:  # also when a stream is abandoned: the cache holds what was fed, the history what was said
            self.cached = (keys + generated)[:self.decoder.length]  # the last token is never fed back
            eos = self.manifest.tokens.eos
            turn.answer = self.pipeline.tokenizer.decode([t for t in generated if t != eos])

    def _keys(self, ids: list[int], pixels: list[np.ndarray]) -> list:
        """Token ids, with each image token replaced by (digest of its image, slot): equal keys, equal KV."""
        image, per_image = self.manifest.tokens.image, self.manifest.model.num_image_tokens
        digests = [hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]
        keys, seen = [], 0
        for token in ids:
            if token == image:
                keys.append((digests[seen // per_image], seen % per_image))
                seen += 1
            else:
                keys.append(token)
        return keys

    def _common_prefix(self, keys: list) -> int:
        """Positions of the cache that hold `keys`' start; never inside an image, and at least one new position
        is left to prefill (its hidden state gives the first token)."""
        common = 0
        for held, wanted in zip(self.cached, keys[:-1]):
            if held != wanted:
                break
            common += 1
        while common and isinstance(keys[common], tuple) and keys[common][1] > 0:
            common -= 1
        return common

    def close(self) -> None:
        """Hands the KV cache back and forgets the conversation; idempotent."""
        with self.lock.hold():
            if self.decoder is not None:
                self.decoder.close()
                self.decoder = None
            self.turns, self.cached = [], []
