"""Speculative decoding in `bench`: decoder passes per image, tokens decided per pass, seconds per image with and
without, and what those passes would cost on each GPU target by `plan`'s floors.

The acceptance rate is a property of the weights: on random weights (the tiny model, a random full-size config)
drafts are almost never accepted and the numbers say nothing about a real checkpoint. Users measure their own with
`janus-edge bench EXPORT --stages images --speculative sjd,gumbel` on their export.
"""

from __future__ import annotations

from .common import Settings, timed

PROMPT = "a red fox in the snow"
MODEL_TARGETS = ("orin-nano-8gb", "datacenter")  # Jetson Orin Nano and an H100-class GPU
CAVEAT = ("acceptance depends on the weights: on random weights it says nothing about a real checkpoint; run "
          "bench --speculative on your own export to measure yours")


def speculative_rows(runtime, settings: Settings) -> list[dict]:
    """One image per call (`settings.image_runs` calls, the same seed) with the plain loop and each mode."""
    rows = []
    for mode in ("plain", *settings.speculative):
        options = {} if mode == "plain" else {"speculative": mode, "window": settings.window}
        results = []
        call = timed(lambda: results.append(runtime.generate_images(PROMPT, n=1, seed=settings.seed, **options)),
                     settings.image_runs, 0, unit="s")
        result = results[-1]
        passes = int(result.timings["decoder_passes"])
        histogram = result.speculative["tokens_per_pass_histogram"] if result.speculative else [passes]
        rows.append({"mode": mode, "window": settings.window if result.speculative else 1, "n": 1,
                     "seconds_per_image": call, "decoder_passes": passes,
                     "tokens_per_pass_mean": result.speculative["tokens_per_pass_mean"] if result.speculative else 1.0,
                     "tokens_per_pass_histogram": histogram,
                     "modelled": modelled_effect(runtime.manifest, passes, settings.window if result.speculative
                                                 else 1)})
    return rows


def modelled_effect(manifest, passes: int, window: int) -> dict:
    """Per target, from `plan`'s per-image floors for this export's model and precision (one image, CFG rows): a
    one-token step takes t1 = max(B, C) (B: weights and KV cache over bandwidth; C: FLOPs over the datasheet peak),
    a pass of w positions reads the weights once, t_w = max(B, w C) (`plan.pass_floors_s`); an image takes
    `passes` + 1 steps (the first token comes with the prefill). Empty where `plan` cannot size the export (kv8,
    JanusFlow, older manifests without the architecture)."""
    from janus_edge.export.tensorrt.targets import TARGETS
    from janus_edge.export.families import family_named
    from janus_edge.plan import make_plan, pass_floors_s
    from janus_edge.runtime.errors import JanusEdgeError

    model, tokens = manifest.model, manifest.model.num_image_tokens
    if manifest.flow is not None or family_named(model.family).missing(model):
        return {}
    effect = {}
    for name in MODEL_TARGETS:
        target = TARGETS[name]
        try:
            plan = make_plan(model.family, model, target, manifest.precision,
                             min(manifest.limits.max_context, target.max_context), 1, suggest=False)
        except JanusEdgeError:
            return {}
        one, wide = pass_floors_s(plan.image_floors_s, tokens, window)
        effect[name] = {"one_token_step_ms": one * 1e3, "pass_ms": wide * 1e3, "plain_s_per_image": tokens * one,
                        "s_per_image": (passes + 1) * wide, "speedup": tokens * one / ((passes + 1) * wide)}
    return effect


def format_rows(label: str, rows: list[dict]) -> list[str]:
    """The report's lines for one row's speculative measurements."""
    lines = []
    for row in rows:
        histogram = ", ".join(f"{k}:{c}" for k, c in enumerate(row["tokens_per_pass_histogram"], 1) if c)
        modelled = "; ".join(f"{t} x{e['speedup']:.2f} ({e['plain_s_per_image']:.3g} -> {e['s_per_image']:.3g} s)"
                             for t, e in row["modelled"].items())
        lines.append(f"{label} {row['mode']} (window {row['window']}): {row['decoder_passes']} passes/image, "
                     f"{row['tokens_per_pass_mean']:.2f} tokens/pass [{histogram}], "
                     f"{row['seconds_per_image']['median']:.2f} s/image here"
                     + (f"; modelled {modelled}" if modelled else ""))
    return lines
