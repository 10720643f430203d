"""Speculative Jacobi decoding (runtime/pipelines/speculative.py): exact by construction, checked four ways.

- Greedy generation with every mode returns the plain loop's tokens on ONNX Runtime (both KV forms) and on the
  TensorRT STAND-IN (tests/standin/, not a GPU), CFG on.
- Sampling keeps the distribution: the decoder loop runs over a model whose distributions are enumerable (a
  second-order chain over 4 tokens, filtered by the real Sampler), its per-position and adjacent-pair histograms pass
  a chi-square test against the exact marginals, and the same test fails with "accept always".
- A rewound cache is the cache of a run that never saw the rejected positions (read back from the buffers).
- The acceptance step reproduces junhyukso/SCD's own code on a saved vector (tests/runtime/data/scd_acceptance.json).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.pipelines import requests, speculative
from janus_edge.runtime.pipelines.speculative import DEFAULT_WINDOW, MAX_WINDOW, MODES, SpeculativeDecoder
from janus_edge.runtime.sampling import Sampler
from standin_env import standin_imports

PROMPT = "a red fox"
WINDOW = 4  # CPU passes cost about the window's width on the tiny model; one test runs the default


def _plain_and_modes(runtime, n: int, window: int = WINDOW, **options):
    plain = runtime.generate_images(PROMPT, n=n, seed=1, **options)
    return plain, {mode: runtime.generate_images(PROMPT, n=n, seed=1, speculative=mode, window=window, **options)
                   for mode in MODES}


def _check_same_tokens(plain, results, steps: int) -> None:
    for mode, result in results.items():
        np.testing.assert_array_equal(result.tokens, plain.tokens, err_msg=mode)
        summary = result.speculative
        assert summary["mode"] == mode and 1 <= summary["decoder_passes"] <= steps - 1
        assert result.timings["decoder_passes"] == summary["decoder_passes"]
        assert sum(k * c for k, c in enumerate(summary["tokens_per_pass_histogram"], 1)) == (steps - 1) * len(
            result.tokens)  # every image token but the prefill's, decided once
    assert plain.speculative is None and plain.timings["decoder_passes"] == steps - 1


def test_greedy_speculative_tokens_equal_the_plain_loop_on_both_kv_forms(form_runtime):
    steps = form_runtime.manifest.generation.image_tokens
    images = 2 if form_runtime.manifest.kv_cache.form == "in_place" else 1  # two images: rows decided apart
    plain, results = _plain_and_modes(form_runtime, images, temperature=0)
    _check_same_tokens(plain, results, steps)


def test_top_k_1_gives_the_plain_tokens_too_and_the_window_defaults_to_16(runtime):
    plain = runtime.generate_images(PROMPT, n=1, seed=5, temperature=1.0, top_k=1)
    result = runtime.generate_images(PROMPT, n=1, seed=5, temperature=1.0, top_k=1, speculative="gumbel",
                                     window=WINDOW)
    np.testing.assert_array_equal(result.tokens, plain.tokens)
    assert requests.speculative("maximal", None) == ("maximal", DEFAULT_WINDOW) == ("maximal", 16)


def test_greedy_speculative_tokens_equal_the_plain_loop_on_the_tensorrt_standin(standin_engines, runtime):
    with standin_imports():
        from janus_edge.runtime import JanusRuntime

        engines = JanusRuntime.load(standin_engines)
        assert engines.backend.name == "tensorrt"
        plain, results = _plain_and_modes(engines, 1, temperature=0)
        _check_same_tokens(plain, results, engines.manifest.generation.image_tokens)
        np.testing.assert_array_equal(plain.tokens, runtime.generate_images(PROMPT, n=1, temperature=0).tokens)
        engines.close()


def test_tensorrt_profiles_have_a_verify_pass_and_profile_0_covers_every_later_one(runtime):
    """The decoder's third profile is the verify pass (rows 1..batch, 1..MAX_WINDOW positions, opt the default
    window, a cache of up to the context); the generation embedding and head take a window; every graph's profile 0
    covers its later profiles (ONNX Runtime's TensorRT EP may use profile 0 alone)."""
    from janus_edge.runtime.profiles import graph_profiles

    manifest = runtime.manifest
    batch, context, hidden = manifest.limits.max_batch, manifest.limits.max_context, manifest.model.hidden_size
    profiles = graph_profiles(manifest, batch, context)
    prefill, decode, verify = profiles["decoder"]
    assert verify["inputs_embeds"] == [[1, 1, hidden], [2, DEFAULT_WINDOW, hidden], [batch, MAX_WINDOW, hidden]]
    assert verify["position_ids"][2] == [batch, MAX_WINDOW]
    assert verify["attention_mask"][2] == [batch, context + MAX_WINDOW]
    assert verify["past_key_values.0.key"][2][2] == context
    assert profiles["generation_head"][0]["hidden_states"][2][1] == MAX_WINDOW
    assert profiles["generation_embedding"][0]["image_ids"][2][1] == MAX_WINDOW
    for graph, ranges in profiles.items():
        first = ranges[0]
        for later in ranges[1:]:
            for name, (low, _, high) in later.items():
                assert all(a <= b for a, b in zip(first[name][0], low)), (graph, name)
                assert all(b <= a for a, b in zip(first[name][2], high)), (graph, name)


def test_tensorrt_verify_passes_replay_one_graph_per_bucket_and_width(standin_engines, runtime):
    """On the stand-in: verify passes (S > 1 positions after a prompt, rewound like the speculative loop) run on the
    decoder's verify profile, in step buffers widened once, captured once per (bucket, S) and replayed after that
    (the stand-in's graph launches); their hidden states equal ONNX Runtime's; a prefill of a few positions is never
    captured; nothing is left after close."""
    from janus_edge.runtime import kv

    with standin_imports():
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime

        with JanusRuntime.load(standin_engines) as gpu:
            trt, ort = gpu.backend, runtime.backend
            rng = np.random.default_rng(3)
            ids = rng.integers(0, 100, (2, 40))
            decoder, reference = trt.kv_decoder(2, 192), ort.kv_decoder(2, 192)
            for each, backend in ((decoder, trt), (reference, ort)):
                each.step(backend.embed("text_embedding", ids), np.ones((2, 40), np.int64),
                          np.broadcast_to(np.arange(40), (2, 40)).copy(), last_only=True)
            assert decoder.captures == decoder.replays == 0  # the prefill is never captured
            launches, keys, passes = cudart.graph_launches(), [], 0
            sizes = [4] * 14 + [3] * 4 + [4] * 2  # a width change in the middle: a second graph, then a third
            for size in sizes:
                cached = decoder.length
                image_ids = rng.integers(0, runtime.manifest.model.codebook_size, (2, size))
                mask = np.ones((2, cached + size), np.int64)
                positions = np.broadcast_to(np.arange(cached, cached + size), (2, size)).copy()
                hidden = decoder.step(trt.embed("generation_embedding", image_ids), mask, positions)
                expected = reference.step(ort.embed("generation_embedding", image_ids), mask, positions)
                np.testing.assert_allclose(hidden.download(trt.stream), expected, atol=1e-5)
                assert trt.graph("decoder").profile == 2  # prefill, decode, verify
                keys.append((kv.bucket(cached + size), size))
                keep = 1 + passes % 3  # the accepted prefix plus the corrected token
                for each in (decoder, reference):
                    each.rewind(cached + keep)
                passes += 1
            assert len(set(keys)) > 2 and keys[0][0] != keys[-1][0]  # both buckets and widths changed
            graphs = 1 + sum(a != b for a, b in zip(keys, keys[1:]))
            assert (decoder.captures, decoder.replays) == (graphs, passes - graphs)
            assert cudart.graph_launches() - launches == decoder.replays
            assert decoder.step_width == 4
            decoder.close()
            reference.close()
        assert cudart.live_allocations() == {} and not cudart.live_host_allocations()
        assert not cudart.live_streams() and not cudart.live_graphs()


def test_speculative_generation_on_tensorrt_replays_its_verify_graphs(standin_engines):
    """A greedy speculative generation on the stand-in: every pass after the first of each (bucket, S) replays
    the captured graph, and the decoder's profile switches once per phase (prefill, verify, a last one-position
    pass), never per pass."""
    with standin_imports():
        from cuda.bindings import runtime as cudart

        from janus_edge.runtime import JanusRuntime

        with JanusRuntime.load(standin_engines) as engines:
            seen = []
            progress = lambda *_: seen.append((engines.backend.decoders[-1].captures,  # noqa: E731
                                               engines.backend.decoders[-1].replays, cudart.graph_launches()))
            launches = cudart.graph_launches()
            cudart.reset_call_counts()
            result = engines.generate_images(PROMPT, n=1, temperature=0, speculative="sjd", window=WINDOW,
                                             progress=progress)
            switches = cudart.call_counts().get("set_optimization_profile_async", 0)
        captures, replays, launched = seen[-1]
        passes = result.speculative["decoder_passes"]
        assert captures + replays == passes and launched - launches == replays
        steps = engines.manifest.generation.image_tokens
        assert captures <= -(-steps // 64) + WINDOW and replays >= passes - captures > 0  # buckets + the tail's S
        assert switches <= 2  # the decoder: prefill -> verify, and a last one-position pass -> decode


def test_seeded_speculative_sampling_repeats_and_differs_across_seeds(runtime):
    def tokens(seed: int):
        return runtime.generate_images(PROMPT, n=1, seed=seed, temperature=1.0, top_k=50, speculative="sjd",
                                       window=WINDOW).tokens

    first = tokens(3)
    np.testing.assert_array_equal(first, tokens(3))
    assert (first != tokens(4)).any()


@pytest.mark.parametrize("options, words", [
    ({"speculative": "jacobi"}, "speculative is 'jacobi'"),
    ({"speculative": "sjd", "window": 0}, "window is 0"),
    ({"speculative": "sjd", "window": MAX_WINDOW + 1}, f"window is {MAX_WINDOW + 1}"),
    ({"speculative": "sjd", "window": 2.0}, "window is 2.0"),
    ({"window": 8}, "without a speculative mode"),
])
def test_bad_speculative_options_are_one_request_error(runtime, options, words):
    with pytest.raises(RequestError, match=words) as caught:
        runtime.generate_images(PROMPT, n=1, **options)
    assert caught.value.hint


# -- the distribution, on a model whose distributions are enumerable --------------------------------------------

VOCAB, STEPS = 4, 6
LOGITS = np.random.default_rng(11).normal(0, 1.5, (STEPS, VOCAB + 1, VOCAB + 1, VOCAB))  # [position, t-2, t-1]
FILTER = Sampler(temperature=0.8, top_k=3)  # zeros in every distribution: residuals must respect them


def _chain(prefix) -> np.ndarray:
    before = [VOCAB, VOCAB, *prefix][-2:]  # VOCAB stands for "no token yet"
    return FILTER.probabilities(LOGITS[len(prefix), before[0], before[1]])


class ChainDecoder:
    """The decoder-and-head stand-in `SpeculativeDecoder.run` drives: a per-image list of fed tokens, cut back to
    `cached` before every pass as `KVDecoder.rewind` cuts the cache."""

    def __init__(self, images: int):
        self.fed: list[list[int]] = [[] for _ in range(images)]

    def __call__(self, inputs: np.ndarray, cached: int) -> np.ndarray:
        out = np.zeros((*inputs.shape, VOCAB))
        for b, row in enumerate(inputs):
            self.fed[b] = self.fed[b][:cached] + row.tolist()
            for k in range(len(row)):
                out[b, k] = _chain(self.fed[b][:cached + k + 1])
        return out


def _exact_marginals() -> tuple[np.ndarray, np.ndarray]:
    single, pairs = np.zeros((STEPS, VOCAB)), np.zeros((STEPS - 1, VOCAB * VOCAB))
    for sequence in itertools.product(range(VOCAB), repeat=STEPS):
        probability = np.prod([_chain(sequence[:i])[sequence[i]] for i in range(STEPS)])
        for i in range(STEPS):
            single[i, sequence[i]] += probability
        for i in range(STEPS - 1):
            pairs[i, sequence[i] * VOCAB + sequence[i + 1]] += probability
    return single, pairs


def _smallest_p_value(tokens: np.ndarray, single: np.ndarray, pairs: np.ndarray) -> float:
    """Chi-square p-values of every position's and every adjacent pair's histogram against the exact marginals
    (cells with zero probability must stay empty); the smallest, Bonferroni-corrected."""
    from scipy.stats import chisquare

    values = []
    for observed, expected in [(np.bincount(tokens[:, i], minlength=VOCAB), single[i]) for i in range(STEPS)] + [
            (np.bincount(tokens[:, i] * VOCAB + tokens[:, i + 1], minlength=VOCAB * VOCAB), pairs[i])
            for i in range(STEPS - 1)]:
        live = expected > 0
        if observed[~live].any():
            return 0.0
        values.append(chisquare(observed[live], expected[live] / expected[live].sum() * observed.sum()).pvalue)
    return min(1.0, min(values) * len(values))


def _sample_chain(mode: str, seed: int, images: int = 3000, window: int = 3) -> np.ndarray:
    decoder = SpeculativeDecoder(mode, window, np.random.default_rng(seed))
    tokens, stats = decoder.run(np.tile(_chain([]), (images, 1)), ChainDecoder(images), STEPS)
    assert stats.summary()["tokens_per_pass_mean"] > 1.2  # drafts are accepted: acceptance is exercised too
    return tokens


@pytest.fixture(scope="module")
def marginals():
    return _exact_marginals()


@pytest.mark.parametrize("mode", MODES)
def test_speculative_sampling_keeps_the_distribution(mode, marginals):
    assert _smallest_p_value(_sample_chain(mode, seed=0), *marginals) > 0.01


def test_the_plain_sampler_passes_the_same_test(marginals):
    """The test's own calibration: sampling one position at a time from the chain passes it."""
    rng, tokens = np.random.default_rng(0), np.zeros((3000, STEPS), np.int64)
    for row in tokens:
        for i in range(STEPS):
            row[i] = speculative.sample(_chain(row[:i].tolist()), rng.random(1))[()]
    assert _smallest_p_value(tokens, *marginals) > 0.01


@pytest.mark.parametrize("mode", MODES)
def test_accepting_every_draft_fails_the_same_test(mode, marginals, monkeypatch):
    monkeypatch.setattr(speculative, "accepts", lambda r, q, p: np.ones_like(r, dtype=bool))
    assert _smallest_p_value(_sample_chain(mode, seed=0), *marginals) < 1e-6


# -- the cache -----------------------------------------------------------------------------------------------------

def _cache(decoder) -> dict[str, np.ndarray]:
    return {name: view[:, :, :decoder.length].copy() for name, view in decoder.cache.views().items()}


def test_a_rewound_cache_is_one_that_never_saw_the_rejected_positions(form_runtime):
    """The verify pass writes a window, the rejected tail is forgotten (rewind), the next pass writes over it: the
    cache read back and the next hidden states equal those of a run fed only the kept positions; slots beyond the
    length are masked out (in_place: step_mask zeros them; ort_gqa: the mask covers length + new positions only)."""
    backend, hidden = form_runtime.backend, form_runtime.manifest.model.hidden_size
    rng = np.random.default_rng(0)
    prompt, window, kept = rng.standard_normal((2, 7, hidden), dtype=np.float32), 5, 2
    drafts, corrected = (rng.standard_normal((2, s, hidden), dtype=np.float32) for s in (window, 3))

    def feed(decoder, embeds):
        length, size = decoder.length, embeds.shape[1]
        positions = np.broadcast_to(np.arange(length, length + size), (2, size)).copy()
        return decoder.step(embeds, np.ones((2, length + size), np.int64), positions)

    with backend.kv_decoder(2, 64) as speculated, backend.kv_decoder(2, 64) as clean:
        for decoder in (speculated, clean):
            feed(decoder, prompt)
        feed(speculated, drafts)
        speculated.rewind(7 + kept)
        assert speculated.length == 7 + kept
        feed(clean, drafts[:, :kept])
        after_rewind = feed(speculated, corrected)
        expected = feed(clean, corrected)
        np.testing.assert_array_equal(after_rewind, expected)
        speculated_cache, clean_cache = _cache(speculated), _cache(clean)
        assert speculated_cache.keys() == clean_cache.keys()
        for name in clean_cache:
            np.testing.assert_array_equal(speculated_cache[name], clean_cache[name], err_msg=name)
        if form_runtime.manifest.kv_cache.form == "in_place":
            from janus_edge.runtime.backends.base import step_mask

            mask = step_mask(np.ones((2, speculated.length + 1), np.int64), speculated.length,
                             speculated.cache.slots)
            assert not mask[:, speculated.length:speculated.cache.slots].any()  # stale slots are never read


# -- the reference's acceptance step ----------------------------------------------------------------------------

VECTOR = json.loads((Path(__file__).parent / "data" / "scd_acceptance.json").read_text())


def test_acceptance_reproduces_scds_own_code_on_a_saved_vector():
    drafts, q = np.array(VECTOR["draft_tokens"]), np.array(VECTOR["draft_prob"])
    p, uniform = np.array(VECTOR["advanced_prob"]), np.array(VECTOR["uniform"])
    rows, length = drafts.shape
    for b in range(rows):
        r = uniform[b, np.arange(1, length), drafts[b, 1:]]
        accepted, rest = speculative.verify(drafts[b, 1:], q[b, 1:], p[b, :-1], r)
        assert (accepted + 1 if rest is not None else length) == VECTOR["first_misaligned"][b]
        assert drafts[b, 1:1 + accepted].tolist() == VECTOR["accepted_tokens"][b]
        expected_rest = VECTOR["residual_at_first_rejection"][b]
        assert (rest is None) == (expected_rest is None)
        if rest is not None:
            np.testing.assert_allclose(rest, expected_rest, rtol=1e-6, atol=1e-7)
        kept = [bool(speculative.accepts(r[i], q[b, i + 1, x], p[b, i, x])) for i, x in enumerate(drafts[b, 1:])]
        assert kept == VECTOR["maximal_kept"][b]
        gumbels = speculative.gumbel_noise(np.array(VECTOR["gumbel_uniform"][b]))
        assert speculative.gumbel_argmax(p[b], gumbels).tolist() == VECTOR["gumbel_tokens"][b]


def test_bench_rows_follow_the_schema_and_count_passes(runtime):
    import jsonschema

    from janus_edge.bench import Settings, load_schema
    from janus_edge.bench.speculative import speculative_rows

    rows = speculative_rows(runtime, Settings(speculative=("sjd",), window=2, image_runs=1))
    schema = load_schema()
    for row in rows:
        jsonschema.validate(row, {"$defs": schema["$defs"], "$ref": "#/$defs/speculative"})
    plain, sjd = rows
    steps = runtime.manifest.generation.image_tokens
    assert (plain["mode"], plain["decoder_passes"], plain["window"]) == ("plain", steps - 1, 1)
    assert sjd["mode"] == "sjd" and sjd["decoder_passes"] == sum(sjd["tokens_per_pass_histogram"])
    for target, effect in sjd["modelled"].items():  # plan's floors: a 2-wide pass costs at least a 1-wide step
        assert effect["pass_ms"] >= effect["one_token_step_ms"] > 0, target


def test_cli_generate_speculative_prints_its_passes_and_refuses_a_bad_window(export_hf, tmp_path):
    from cli_helpers import run_cli

    result = run_cli("generate", export_hf, "--prompt", PROMPT, "-n", "1", "--temperature", "0", "--speculative",
                     "gumbel", "--window", "2", "--out", tmp_path / "out", check_code=0)
    assert "speculative gumbel (window 2):" in result.stdout and "decoder passes" in result.stdout
    bad = run_cli("generate", export_hf, "--prompt", PROMPT, "--speculative", "sjd", "--window", "0", "--out",
                  tmp_path / "bad", check_code=2)
    assert "window is 0" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_janusflow_refuses_speculative_decoding_in_one_line(flow_runtime):
    with pytest.raises(RequestError, match="does not apply to JanusFlow") as caught:
        flow_runtime.generate_images(PROMPT, n=1, speculative="sjd")
    assert "\n" not in str(caught.value) and caught.value.hint
