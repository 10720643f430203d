"""Text-to-image generation with classifier-free guidance: prompt -> 576 image tokens per image -> pixels.

Rows are stacked [conditional x n; unconditional x n]. Each step: decoder -> generation head on the last hidden
state -> logits = u + w (c - u) -> sample -> the same token to both rows -> generation embedding is the next input.
With `speculative` set, a window of draft tokens goes through each decoder pass instead (`speculative`): the same
distribution in fewer passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

from ..backends.base import Backend
from ..errors import RequestError
from ..images import to_uint8
from ..manifest import Manifest
from ..prompts import PromptBuilder
from ..sampling import Sampler
from ..kv import request_capacity
from .requests import StopCallback, check_stop
from .speculative import SpeculativeDecoder


@dataclass
class GeneratedImages:
    images: list  # PIL images, RGB, `ModelInfo.image_size` square
    tokens: np.ndarray  # [n, num_image_tokens] image token ids (a row-major square grid)
    pixels: np.ndarray  # [n, 3, image_size, image_size] VQ decoder output in [-1, 1]
    timings: dict[str, float] = field(default_factory=dict)
    speculative: dict | None = None  # with speculative decoding: passes and tokens per pass (SpeculativeStats)


class GenerationPipeline:
    def __init__(self, backend: Backend, manifest: Manifest, prompts: PromptBuilder):
        self.backend, self.manifest, self.prompts = backend, manifest, prompts

    def run(self, prompt: str, n: int, cfg_weight: float, sampler: Sampler,
            progress: Callable[[int, int], None] | None = None, should_stop: StopCallback | None = None,
            speculative: str | None = None, window: int = 1) -> GeneratedImages:
        """`speculative` (a mode of `speculative.MODES`, checked by the caller) decodes `window` positions a pass."""
        limits, steps = self.manifest.limits, self.manifest.generation.image_tokens
        if n < 1 or 2 * n > limits.max_batch:
            raise RequestError(f"n={n} images need {2 * n} rows with CFG; the export allows 1 to "
                               f"{limits.max_batch // 2} images ({limits.max_batch} rows)",
                               "ask for fewer images per call, or export with a larger --max-batch (engines: "
                               "`janus-edge build --images N`)")
        ids = self.prompts.generation(prompt)
        if len(ids) + steps - 1 > limits.max_context:  # the last image token is never fed back
            over = len(ids) + steps - 1 - limits.max_context
            raise RequestError(f"the prompt is {len(ids)} tokens; with {steps} image tokens that is {over} over the "
                               f"exported context of {limits.max_context}", "shorten the prompt")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        rows = np.array([ids] * n + [self.prompts.unconditional(ids)] * n, dtype=np.int64)
        mask = np.ones_like(rows)
        positions = np.broadcast_to(np.arange(rows.shape[1]), rows.shape).copy()
        tokens = np.zeros((n, steps), dtype=np.int64)
        capacity = request_capacity(len(ids) + steps - 1, limits.max_context)
        stats = None
        with self.backend.kv_decoder(2 * n, capacity) as decoder:
            check_stop(should_stop)
            hidden = decoder.step(self.backend.embed("text_embedding", rows), mask, positions, last_only=True)
            timings["prefill_s"] = time.perf_counter() - start
            start = time.perf_counter()
            if speculative is None:
                self._plain(decoder, hidden, tokens, cfg_weight, sampler, progress, should_stop)
            else:
                tokens, stats = self._speculative(decoder, hidden, len(ids), cfg_weight, sampler, progress,
                                                  should_stop, SpeculativeDecoder(speculative, window, sampler.rng))
        timings["decode_s"] = time.perf_counter() - start
        timings["decode_ms_per_step"] = timings["decode_s"] / steps * 1e3
        timings["decoder_passes"] = stats.passes if stats else steps - 1  # after the prefill
        timings["decode_ms_per_pass"] = timings["decode_s"] / max(timings["decoder_passes"], 1) * 1e3
        start = time.perf_counter()
        pixels = np.concatenate([self.backend.apply("vq_decoder", tokens[i:i + 1]) for i in range(n)])
        timings["vq_decode_s"] = time.perf_counter() - start
        images = [Image.fromarray(array) for array in to_uint8(pixels)]
        return GeneratedImages(images, tokens, pixels, timings, stats.summary() if stats else None)

    def _plain(self, decoder, hidden, tokens: np.ndarray, cfg_weight: float, sampler: Sampler, progress,
               should_stop) -> None:
        """One decoder step per image token: tokens [n, steps] filled in place."""
        n, steps = tokens.shape
        for step in range(steps):
            tokens[:, step] = self.backend.choose("generation_head", hidden, sampler, cfg_weight)
            if progress:
                progress(step + 1, steps)
            if step == steps - 1:
                break
            step_ids = np.concatenate([tokens[:, step], tokens[:, step]])[:, None]
            mask = np.ones((2 * n, decoder.length + 1), dtype=np.int64)
            positions = np.full((2 * n, 1), decoder.length, dtype=np.int64)
            check_stop(should_stop)
            hidden = decoder.step(self.backend.embed("generation_embedding", step_ids), mask, positions)

    def _speculative(self, decoder, hidden, prompt: int, cfg_weight: float, sampler: Sampler, progress,
                     should_stop, speculative: SpeculativeDecoder):
        """Windows of drafts through one decoder pass each; the cache is rewound to the decided positions first."""
        steps, rows = self.manifest.generation.image_tokens, decoder.batch

        def distributions(hidden) -> np.ndarray:
            logits = self.backend.apply("generation_head", hidden)
            half = rows // 2
            return sampler.probabilities(logits[half:] + cfg_weight * (logits[:half] - logits[half:]))

        def forward(inputs: np.ndarray, cached: int) -> np.ndarray:
            check_stop(should_stop)
            decoder.rewind(prompt + cached)
            size = inputs.shape[1]
            mask = np.ones((rows, decoder.length + size), dtype=np.int64)
            positions = np.broadcast_to(np.arange(decoder.length, decoder.length + size), (rows, size)).copy()
            embeds = self.backend.embed("generation_embedding", np.concatenate([inputs, inputs]))
            return distributions(decoder.step(embeds, mask, positions))

        report = (lambda done: progress(done, steps)) if progress else None
        return speculative.run(distributions(hidden)[:, -1], forward, steps, report)
