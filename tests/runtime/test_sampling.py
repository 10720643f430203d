"""Sampling rules: greedy, temperature, top-k and top-p, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.sampling import Sampler


def test_greedy_takes_the_argmax():
    logits = np.array([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9]])
    assert Sampler(0.0)(logits).tolist() == [1, 0]


def test_top_k_1_is_greedy_at_any_temperature():
    logits = np.random.default_rng(0).standard_normal((4, 50))
    assert (Sampler(2.0, top_k=1, seed=0)(logits) == logits.argmax(-1)).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    draws = {int(Sampler(1.0, top_p=0.7, seed=s)(logits)[0]) for s in range(200)}
    assert draws == {0, 1}


def test_distribution_follows_the_temperature():
    logits = np.log(np.array([[0.7, 0.2, 0.1]]))
    sampler = Sampler(1.0, seed=0)
    counts = np.bincount([int(sampler(logits)[0]) for _ in range(4000)], minlength=3) / 4000
    np.testing.assert_allclose(counts, [0.7, 0.2, 0.1], atol=0.03)


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_bad_options_are_user_errors(kwargs):
    with pytest.raises(RequestError):
        Sampler(**{"temperature": 1.0, **kwargs})


def test_a_seeded_draw_picks_the_token_whose_cdf_interval_holds_it():
    """Exact, not statistical: each row's token is the first whose cumulative probability reaches that row's
    uniform draw from numpy's generator with the same seed (the stream device backends take their draws from)."""
    logits = np.random.default_rng(1).standard_normal((3, 500)) * 2
    sampler, draws = Sampler(0.7, seed=5), np.random.default_rng(5)
    for _ in range(20):
        probs = np.exp(logits / 0.7 - (logits / 0.7).max(-1, keepdims=True))
        cdf = np.cumsum(probs / probs.sum(-1, keepdims=True), -1)
        expected = [int(np.searchsorted(row, u)) for row, u in zip(cdf, draws.random(3))]
        assert sampler(logits).tolist() == expected
