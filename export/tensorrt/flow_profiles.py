"""TensorRT optimisation profiles for JanusFlow; `profiles.engine_profiles` adds them for exports with a `flow` section.

The flow step is unlike Janus-Pro's token loop: every step runs 577 positions (time embedding + 576 latent tokens)
on top of the prompt's cache, for 2 rows per image, so it is compute-bound. The decoder gets a third profile for
exactly that shape (past = a text prompt); the flow encoder and decoder run all rows at once; the VAE one image at
a time (the pipeline calls it so: lowest memory, and the SDXL VAE at 384x384 is the largest activation).
"""

from __future__ import annotations

from janus_edge.runtime.manifest import Manifest, kv_input
from janus_edge.runtime.kv import request_capacity

Shape = list[int]
Profile = dict[str, list[Shape]]
TYPICAL_TEXT_PROMPT = 64  # tokens of a generation prompt (no image); `plan` and `bench` size a flow request by it


def flow_profiles(manifest: Manifest, batch: int, context: int) -> dict[str, list[Profile]]:
    """Profiles of the flow graphs and the decoder's flow step; `batch` counts rows (2 per image)."""
    model = manifest.model
    encoder = manifest.graphs["flow_encoder"]
    latent = [int(d) for d in encoder.inputs[0].shape[1:]]
    skip = [int(d) for d in encoder.outputs[1].shape[1:]]
    tokens, hidden = int(encoder.outputs[0].shape[1]), model.hidden_size
    rows = min(2, batch)
    past = min(TYPICAL_TEXT_PROMPT, context - tokens)

    def rows_of(*shape: int) -> list[Shape]:
        return [[rows, *shape], [rows, *shape], [batch, *shape]]

    slots = request_capacity(past + tokens, context)  # the capacity the pipeline allocates for such a prompt
    kv = [[rows, model.num_kv_heads, 1, model.head_dim], [rows, model.num_kv_heads, slots, model.head_dim],
          [batch, model.num_kv_heads, context, model.head_dim]]
    step = {"inputs_embeds": rows_of(tokens, hidden),
            "attention_mask": [[rows, tokens + 1], [rows, slots + tokens], [batch, context + tokens]],
            "position_ids": rows_of(tokens),
            **{kv_input(name): kv for name in model.kv_names}}
    return {
        "decoder_flow_step": [step],  # the third decoder profile, beside prefill and decode
        "flow_encoder": [{"latents": rows_of(*latent), "timesteps": rows_of()}],
        "flow_decoder": [{"hidden_states": rows_of(tokens, hidden), "skip": rows_of(*skip),
                          "time_embedding": rows_of(hidden)}],
        "vae_decoder": [{"latents": [[1, *latent]] * 3}],
    }
