"""JanusFlow text-to-image: a rectified flow on the VAE latent, with the LLM predicting the velocity.

Rows are [conditional x n; unconditional x n]; unconditional rows are pad after BOS and masked over the prompt,
as DeepSeek's code builds them. The prompt (without its last token, the begin-of-generation tag) goes through the
decoder once; each of the Euler steps then appends 577 tokens (the time embedding and the 576 latent tokens of
the flow encoder) on top of the prompt's KV cache, reads the velocity from their hidden states through the flow
decoder, and rewinds the cache to the prompt. v = w v_cond - (w - 1) v_uncond; z += dt v; the VAE decodes z.
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
from ..kv import request_capacity
from ..tensor_names import HIDDEN_STATES, INPUTS_EMBEDS, LATENTS, SKIP, TIME_EMBEDDING, TIMESTEPS, VELOCITY
from .generate import GeneratedImages
from .requests import StopCallback, check_stop


@dataclass
class FlowImages(GeneratedImages):
    """`GeneratedImages` (so callers of `generate_images` see one type) with no image tokens ([n, 0]); `pixels` is
    the VAE's output in [-1, 1] (not clipped)."""

    latents: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 48, 48), np.float32))  # [n,4,48,48], final


def round_to(values: np.ndarray | np.floating | float, dtype: str) -> np.ndarray:
    """float32 values rounded to bfloat16 (round to nearest even) and back, or left as float32."""
    array = np.asarray(values, dtype=np.float32)
    if dtype == "float32":
        return array
    bits = array.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


class FlowPipeline:
    def __init__(self, backend: Backend, manifest: Manifest, prompts: PromptBuilder):
        self.backend, self.manifest, self.prompts = backend, manifest, prompts
        assert manifest.flow is not None
        self.settings = manifest.flow
        self.latent_shape = tuple(manifest.graphs["flow_encoder"].inputs[0].shape[1:])
        self.flow_tokens = manifest.graphs["flow_encoder"].outputs[0].shape[1]

    def run(self, prompt: str, n: int, cfg_weight: float, steps: int | None = None, seed: int | None = None,
            initial_latents: np.ndarray | None = None, progress: Callable[[int, int], None] | None = None,
            should_stop: StopCallback | None = None) -> FlowImages:
        steps = self.settings.steps if steps is None else steps
        z = self._initial(n, seed, initial_latents)
        n = z.shape[0]
        limits = self.manifest.limits
        if n < 1 or 2 * n > limits.max_batch:
            raise RequestError(f"n={n} images need {2 * n} rows with CFG; the export allows 1 to "
                               f"{limits.max_batch // 2} images ({limits.max_batch} rows)",
                               "ask for fewer images per call or export with a larger --max-batch")
        if not 1 <= steps <= 1000:
            raise RequestError(f"steps={steps}", "use 1 to 1000 Euler steps (30 is JanusFlow's default)")
        ids = self.prompts.generation(prompt)[:-1]  # the begin-of-generation tag's place goes to the time embedding
        if len(ids) + self.flow_tokens > limits.max_context:
            over = len(ids) + self.flow_tokens - limits.max_context
            raise RequestError(f"the prompt is {len(ids)} tokens; with {self.flow_tokens} flow tokens that is {over} "
                               f"over the exported context of {limits.max_context}", "shorten the prompt")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        tokens = self.manifest.tokens
        rows = np.array([ids] * n + [[tokens.bos] + [tokens.pad] * (len(ids) - 1)] * n, dtype=np.int64)
        mask = np.ones_like(rows)
        mask[n:, 1:] = 0
        with self.backend.kv_decoder(2 * n, request_capacity(len(ids) + self.flow_tokens,
                                                             limits.max_context)) as decoder:
            check_stop(should_stop)
            decoder.step(self.backend.embed("text_embedding", rows), mask,
                         np.broadcast_to(np.arange(len(ids)), rows.shape).copy())
            timings["prefill_s"] = time.perf_counter() - start
            start = time.perf_counter()
            z = self._flow(decoder, z, mask, len(ids), steps, cfg_weight, progress, should_stop)
        timings["flow_s"] = time.perf_counter() - start
        timings["flow_ms_per_step"] = timings["flow_s"] / steps * 1e3
        start = time.perf_counter()
        pixels = np.concatenate([self.backend.apply("vae_decoder", z[i:i + 1]) for i in range(n)])
        timings["vae_decode_s"] = time.perf_counter() - start
        return FlowImages([Image.fromarray(a) for a in to_uint8(pixels)], np.zeros((n, 0), np.int64), pixels, timings,
                          latents=z)

    def _flow(self, decoder, z: np.ndarray, mask: np.ndarray, prompt: int, steps: int, cfg_weight: float,
              progress: Callable[[int, int], None] | None, should_stop: StopCallback | None) -> np.ndarray:
        """The Euler steps: each runs the flow tokens on top of the prompt's cache, then rewinds to the prompt."""
        n = z.shape[0]
        flow_mask = np.concatenate([mask, np.ones((2 * n, self.flow_tokens), dtype=np.int64)], axis=1)
        positions = np.broadcast_to(np.arange(prompt, prompt + self.flow_tokens), (2 * n, self.flow_tokens)).copy()
        dt = round_to(np.float32(1.0 / steps), self.settings.schedule_dtype)
        for step in range(steps):
            t = round_to(np.full(2 * n, step / steps * self.settings.time_scale, np.float32),
                         self.settings.schedule_dtype)
            check_stop(should_stop)
            encoded = self.backend.run("flow_encoder", **{LATENTS: np.concatenate([z, z]), TIMESTEPS: t})
            hidden = decoder.step(encoded[INPUTS_EMBEDS], flow_mask, positions)
            v = self.backend.run("flow_decoder", **{HIDDEN_STATES: hidden, SKIP: encoded[SKIP],
                                                    TIME_EMBEDDING: encoded[TIME_EMBEDDING]})[VELOCITY]
            z = z + dt * (cfg_weight * v[:n] - (cfg_weight - 1.0) * v[n:])
            decoder.rewind(prompt)
            if progress:
                progress(step + 1, steps)
        return z

    def _initial(self, n: int, seed: int | None, initial_latents) -> np.ndarray:
        """Noise from `seed`, or the caller's latents (to reproduce another implementation's run)."""
        if initial_latents is None:
            return np.random.default_rng(seed).standard_normal((n, *self.latent_shape), dtype=np.float32)
        z = np.asarray(initial_latents)
        if z.ndim != 4 or tuple(z.shape[1:]) != self.latent_shape or not np.issubdtype(z.dtype, np.floating):
            raise RequestError(f"initial latents have shape {z.shape} ({z.dtype}); this export's flow runs on "
                               f"[n, {', '.join(map(str, self.latent_shape))}] floats",
                               f"pass an array of shape [n, {', '.join(map(str, self.latent_shape))}]")
        if not np.isfinite(z).all():
            raise RequestError("initial latents hold NaN or infinity", "pass finite values (standard normal noise)")
        return z.astype(np.float32)
