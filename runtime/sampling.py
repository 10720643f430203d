"""Next-token choice in numpy: greedy, or temperature with optional top-k and top-p, from a seeded generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import RequestError


@dataclass
class Sampler:
    temperature: float = 0.0  # 0 means greedy (argmax)
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise RequestError(f"temperature {self.temperature} is negative", "use 0 for greedy or a value > 0")
        if self.top_k is not None and self.top_k < 1:
            raise RequestError(f"top_k {self.top_k} must be at least 1", "use None to disable it")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise RequestError(f"top_p {self.top_p} must be in (0, 1]", "use None or 1 to disable it")
        self.rng = np.random.default_rng(self.seed)

    def draw(self, rows: int) -> np.ndarray:
        """The uniform numbers one sampling step consumes, [rows, 1]; device samplers take them from here too, so
        a seed gives the same tokens on every backend."""
        return self.rng.random((rows, 1))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The distribution a token is drawn from, float64 [..., V]: softmax(logits / T) after top-k and top-p
        (a one-hot of the argmax when greedy). Speculative decoding verifies drafts against exactly this."""
        if self.temperature == 0:
            probs = np.zeros(logits.shape, dtype=np.float64)
            np.put_along_axis(probs, logits.argmax(-1)[..., None], 1.0, -1)
            return probs
        scores = logits.astype(np.float64) / self.temperature
        if self.top_k is not None and self.top_k < scores.shape[-1]:
            kth = np.partition(scores, -self.top_k, axis=-1)[..., -self.top_k][..., None]
            scores = np.where(scores < kth, -np.inf, scores)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        if self.top_p is not None and self.top_p < 1:
            order = np.argsort(-probs, axis=-1)
            sorted_probs = np.take_along_axis(probs, order, -1)
            drop = np.cumsum(sorted_probs, -1) - sorted_probs >= self.top_p  # keep the smallest set reaching top_p
            mask = np.zeros_like(probs, dtype=bool)
            np.put_along_axis(mask, order, drop, -1)
            probs = np.where(mask, 0.0, probs)
            probs /= probs.sum(-1, keepdims=True)
        return probs

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """logits [B, V] -> token ids [B] (int64)."""
        if self.temperature == 0:
            return logits.argmax(-1).astype(np.int64)
        probs = self.probabilities(logits)
        return sample(probs, self.draw(probs.shape[0]))


def sample(probs: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Inverse-CDF choice for probs [..., V] and uniforms `draws` [..., 1] in [0, 1): token k where
    cdf[k-1] <= u * total < cdf[k], so a zero-probability token is never chosen, whatever the rounding."""
    cdf = np.cumsum(probs, -1)
    return (cdf <= draws * cdf[..., -1:]).sum(-1).astype(np.int64)
