"""Lossless speculative Jacobi decoding of image tokens: fewer decoder passes, the same distribution.

Each pass feeds a window of positions through ONE decoder step over the cache: the last decided token, then draft
tokens for the next positions. The pass returns the next-token distribution p at every window position (CFG-mixed
and filtered exactly as the plain loop samples). Drafts are verified left to right with the speculative sampling
rule: draft x, drawn from q, is accepted when r * q(x) < p(x) (r uniform), else the position takes a token drawn
from max(p - q, 0), normalised, and verification stops. The cache then forgets every position whose input was not
accepted (`KVDecoder.rewind`: a length change, nothing copied), and the positions after the stop get new drafts from
the p this pass computed for them (Jacobi iteration). Modes differ only in how those drafts are made:

- "sjd" (Speculative Jacobi Decoding, Teng et al. ICLR 2025): a fresh sample from p.
- "maximal" (SCD's maximal coupling, arXiv 2510.24211): the previous draft x ~ q kept when r * q(x) < p(x),
  else a sample from max(p - q, 0): a sample from p that equals the previous draft as often as possible.
- "gumbel" (SCD's Gumbel coupling): argmax(log p + g) with one Gumbel vector g per position, drawn once and reused
  every pass until that position is decided, so drafts change only where p moved.

Why it is exact: every draft at position j is, given everything at positions < j, a sample from the q stored with
it (randomness "at j" -- the Gumbel table, the coupling's uniforms -- touches only tokens at j, and the model is
causal), and p at the first undecided position is the model's exact distribution there; speculative sampling then
gives a token distributed as p. With a greedy sampler p is one-hot at the argmax: every mode returns the plain
loop's tokens. Rows of a batch (images) are decided independently; the cache keeps the positions every image has
decided, and tokens an image decided beyond that are fed again as inputs, never re-verified.

The loop is written against `Forward`, so tests drive it with a model whose distributions they can enumerate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InternalError
from ..sampling import sample

MODES = ("sjd", "maximal", "gumbel")
DEFAULT_WINDOW = 16  # SCD's janus_pro default (its --max_num_new_tokens)
MAX_WINDOW = 64  # the widest window a request may ask for: TensorRT profiles cover verify passes up to it

# forward(inputs [n, S], cached) -> p [n, S, V]: feeds the tokens of positions cached..cached+S-1 over a cache that
# keeps positions < cached (forgetting any later ones) and returns the distributions of positions cached+1..cached+S
Forward = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class SpeculativeStats:
    """What a speculative run did: `accepted[k][b]` tokens image b decided in pass k (1 to window while it is the
    slowest image's turn; 0 when an image that ran ahead waits for the cache to catch up)."""

    mode: str
    window: int
    accepted: list = field(default_factory=list)

    @property
    def passes(self) -> int:
        """Decoder passes after the prefill (the plain loop takes one per image token but the first)."""
        return len(self.accepted)

    def summary(self) -> dict:
        """Passes, and tokens decided per pass per image (mean, and histogram for 1..window) for results and
        `bench`; passes where an image waited (0 tokens) are left out."""
        counts = np.concatenate(self.accepted) if self.accepted else np.zeros(0, np.int64)
        counts = counts[counts > 0]
        return {"mode": self.mode, "window": self.window, "decoder_passes": self.passes,
                "tokens_per_pass_mean": float(counts.mean()) if counts.size else 0.0,
                "tokens_per_pass_histogram": np.bincount(counts, minlength=self.window + 1)[1:].tolist()}


def accepts(r, q_x, p_x):
    """The speculative sampling test: accept a draft x ~ q with probability min(1, p(x) / q(x)) (numbers or
    arrays of them)."""
    return r * q_x < p_x


def residual(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """What a rejected position is drawn from: max(p - q, 0), normalised (rows [..., V])."""
    excess = np.maximum(p - q, 0.0)
    return excess / excess.sum(-1, keepdims=True)


def verify(drafts: np.ndarray, q: np.ndarray, p: np.ndarray, r: np.ndarray) -> tuple[int, np.ndarray | None]:
    """Drafts [m] (drawn from q [m, V]) against the model's p [m, V] with uniforms r [m], left to right: the number
    accepted, and the residual distribution at the first rejection (None if every draft was accepted)."""
    for i, x in enumerate(drafts):
        if not accepts(r[i], q[i, x], p[i, x]):
            return i, residual(p[i], q[i])
    return len(drafts), None


def gumbel_noise(uniforms: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -np.log(-np.log(uniforms))


def gumbel_argmax(p: np.ndarray, gumbels: np.ndarray) -> np.ndarray:
    """argmax(log p + g): a sample from p when g is standard Gumbel noise (zero-probability tokens never win)."""
    with np.errstate(divide="ignore"):
        return (np.log(p) + gumbels).argmax(-1).astype(np.int64)


class DraftWindow:
    """Draft tokens, the distribution each was drawn from, and Gumbel tables, for positions (cached, cached+window]
    of every image; slot = position % (window + 1), so nothing moves when the window slides."""

    def __init__(self, n: int, vocab: int, window: int, steps: int):
        self.slots = window + 1
        self.tokens = np.zeros((n, steps), np.int64)  # the draft at each position (where one exists)
        self.q = np.zeros((n, self.slots, vocab))
        self.gumbel = np.zeros((n, self.slots, vocab))
        self.drafted = np.ones(n, np.int64)  # positions below this have a draft or are decided (position 0)
        self.tabled = np.full((n, self.slots), -1, np.int64)  # the position each slot's Gumbel vector belongs to

    def set(self, image: int, positions: np.ndarray, tokens: np.ndarray, q: np.ndarray) -> None:
        """Drafts `tokens` [m] at consecutive `positions` [m], drawn from q [m, V]."""
        self.tokens[image, positions], self.q[image, positions % self.slots] = tokens, q
        self.drafted[image] = max(self.drafted[image], positions[-1] + 1)

    def gumbels(self, image: int, positions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The positions' Gumbel vectors [m, V]: drawn the first time a position asks, then the same until it is
        decided (its slot is reused only by a position one window later)."""
        slots = positions % self.slots
        new = self.tabled[image, slots] != positions
        if new.any():
            self.gumbel[image, slots[new]] = gumbel_noise(rng.random((int(new.sum()), self.gumbel.shape[-1])))
            self.tabled[image, slots[new]] = positions[new]
        return self.gumbel[image, slots]


class SpeculativeDecoder:
    """Decides `steps` tokens per image in as few `forward` passes as the drafts allow."""

    def __init__(self, mode: str, window: int, rng: np.random.Generator):
        if mode not in MODES or window < 1:
            raise InternalError(f"speculative mode {mode!r} with window {window} reached the decoder unchecked")
        self.mode, self.window, self.rng = mode, window, rng

    def run(self, first: np.ndarray, forward: Forward, steps: int,
            progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, SpeculativeStats]:
        """`first` [n, V]: the distribution of token 0 (from the prefill). Returns tokens [n, steps] and stats;
        `progress(k)` is told the number of tokens every image has decided after each pass."""
        n, vocab = first.shape
        rng, stats = self.rng, SpeculativeStats(self.mode, self.window)
        tokens = np.zeros((n, steps), np.int64)
        tokens[:, 0] = sample(first, rng.random((n, 1)))
        decided = np.ones(n, np.int64)  # tokens[b, :decided[b]] are final
        drafts = DraftWindow(n, vocab, self.window, steps)
        while decided.min() < steps:
            cached = int(decided.min()) - 1  # the cache keeps the positions whose inputs every image decided
            size = min(self.window, steps - 1 - cached)  # the last token is never fed
            self._initial_drafts(drafts, cached + size, vocab)
            positions = np.arange(cached, cached + size)
            inputs = np.where(positions[None] < decided[:, None], tokens[:, positions], drafts.tokens[:, positions])
            p = forward(inputs, cached)
            before = decided.copy()
            for b in range(n):
                start, exact = self._verify(b, p[b], cached, size, int(decided[b]), tokens, drafts)
                decided[b] = self._redraft(b, p[b], cached, size, start, exact, tokens, drafts)
            stats.accepted.append(decided - before)
            if progress:
                progress(int(decided.min()))
        return tokens, stats

    def _initial_drafts(self, drafts: DraftWindow, end: int, vocab: int) -> None:
        """Positions entering the window for the first time get a uniform random token, held with probability 1
        (SCD's "random" initialisation: a draft known when it is verified is its own distribution)."""
        for b in range(drafts.tokens.shape[0]):
            positions = np.arange(int(drafts.drafted[b]), end)
            if positions.size:
                chosen = self.rng.integers(vocab, size=positions.size)
                drafts.set(b, positions, chosen, _one_hot(chosen, vocab))

    def _verify(self, b: int, p: np.ndarray, cached: int, size: int, start: int, tokens: np.ndarray,
                drafts: DraftWindow) -> tuple[int, bool]:
        """Verifies image b's fed drafts from its first undecided position; returns its new decided count and
        whether every input fed was decided (then the pass's last p is exact too)."""
        end = cached + size  # drafts were fed at positions start..end-1
        if start >= end:
            return start, True
        fed = np.arange(start, end)
        slots = fed % drafts.slots
        accepted, rest = verify(drafts.tokens[b, fed], drafts.q[b, slots], p[fed - cached - 1],
                                self.rng.random(len(fed)))
        tokens[b, start:start + accepted] = drafts.tokens[b, start:start + accepted]
        if rest is None:
            return end, True
        tokens[b, start + accepted] = sample(rest, self.rng.random(1))[()]
        return start + accepted + 1, False

    def _redraft(self, b: int, p: np.ndarray, cached: int, size: int, start: int, exact: bool, tokens: np.ndarray,
                 drafts: DraftWindow) -> int:
        """New drafts for image b's undecided positions up to cached+size from this pass's p (drawn from the
        context fed, right or wrong). When every input fed was decided (`exact`), position cached+size's p is the
        model's and its new draft is a sample of it: decided. Returns the decided count."""
        last = cached + size
        if start > last:
            return start
        positions = np.arange(start, last + 1)
        dists = p[positions - cached - 1]
        if self.mode == "gumbel":
            chosen = gumbel_argmax(dists, drafts.gumbels(b, positions, self.rng))
        elif self.mode == "maximal":
            chosen = self._couple(drafts.tokens[b, positions], drafts.q[b, positions % drafts.slots], dists,
                                  positions < drafts.drafted[b])
        else:
            chosen = sample(dists, self.rng.random((positions.size, 1)))
        drafts.set(b, positions, chosen, dists)
        if exact and start == last:
            tokens[b, last] = chosen[-1]
            return last + 1
        return start

    def _couple(self, old: np.ndarray, q: np.ndarray, p: np.ndarray, drafted: np.ndarray) -> np.ndarray:
        """Maximal coupling: each previous draft (where `drafted`) kept when r * q(x) < p(x), else a token from
        max(p - q, 0); positions without one draw from p. Every result is a sample from its row of p."""
        chosen = old.copy()
        rows = np.arange(old.size)
        rejected = drafted & ~accepts(self.rng.random(old.size), q[rows, old], p[rows, old])
        for redraw, source in ((rejected, lambda: residual(p[rejected], q[rejected])), (~drafted, lambda: p[~drafted])):
            if redraw.any():
                chosen[redraw] = sample(source(), self.rng.random((int(redraw.sum()), 1)))
        return chosen


def _one_hot(tokens: np.ndarray, vocab: int) -> np.ndarray:
    rows = np.zeros((tokens.size, vocab))
    rows[np.arange(tokens.size), tokens] = 1.0
    return rows
