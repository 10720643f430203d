"""JanusFlow generation in PyTorch exactly as DeepSeek's README and demo run it: the parity reference of the
runtime's flow pipeline (and of `bench`).

Rows [cond x n; uncond x n]; unconditional rows are pad after BOS and masked over the prompt; the last prompt
token (the begin-of-generation tag) is dropped and its place taken by the time embedding; every step recomputes
the whole sequence (no KV cache); t and dt are rounded to bfloat16 as DeepSeek's code does, whatever the model's
dtype; v = w v_cond - (w - 1) v_uncond; z += dt v; pixels = VAE.decode(z / scaling_factor).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def generate(model, vae, prompt_ids: list[int], pad_id: int, latents: torch.Tensor, steps: int = 30,
             cfg_weight: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (final latents [n,4,48,48], pixels [n,3,384,384] in [-1,1], not clipped)."""
    n = latents.shape[0]
    tokens = torch.tensor([prompt_ids] * (2 * n))
    tokens[n:, 1:] = pad_id
    prompt = model.language_model.get_input_embeddings()(tokens)[:, :-1]
    latent_tokens = (latents.shape[-1] // model.config.encoder["stride"]) ** 2  # one per image token
    mask = torch.ones(2 * n, prompt.shape[1] + 1 + latent_tokens, dtype=torch.int64)  # + the time embedding
    mask[n:, 1:prompt.shape[1]] = 0
    dt = torch.zeros_like(latents).to(torch.bfloat16) + 1.0 / steps
    z = latents.clone()
    for step in range(steps):
        t = torch.tensor([step / steps * 1000.0] * 2 * n).to(dt)
        inputs, skip, t_emb = model.encode_latents(torch.cat([z, z]), t)
        hidden = model.language_model.model(inputs_embeds=torch.cat([prompt, inputs], dim=1),
                                            attention_mask=mask).last_hidden_state
        v = model.velocity(hidden[:, -latent_tokens:], skip, t_emb)
        v_cond, v_uncond = torch.chunk(v, 2)
        z = z + dt * (cfg_weight * v_cond - (cfg_weight - 1.0) * v_uncond)
    return z, vae.decode(z / vae.config.scaling_factor).sample
