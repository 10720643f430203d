"""The LLM decoder as a graph that reads a preallocated KV cache and returns only the new positions' keys/values.

Per layer the graph takes the whole cache `past_key_values.{i}.key/value` [B,H,C,hd] (C = capacity, slots the
runtime owns) and only reads it: scores against the cache (Kc @ q^T, transposed afterwards: the transpose is on
the small score tensor, never on the cache) and against the new keys (S x S, causal) are concatenated, masked,
softmaxed and split again, and out = p_c @ Vc + p_n @ Vn. It returns the hidden states and the new keys/values
[B,H,S,hd]; the runtime writes those into its cache. No node copies, concatenates or outputs a cache-sized tensor,
so a decode step reads the weights and the cache once and writes almost nothing.

`attention_mask` [B, C+S] marks the valid cache slots (1) and the new positions (1, 0 for left padding). Masked
scores are replaced (not added to), and softmax gives them exactly 0, so stale or zero slots never leak in; the
cache must hold finite values (the runtime zero-fills new buffers).

Written over the transformers Llama modules (q/k/v/o projections, RMSNorms, MLP, rotary embedding) rather than
transformers' cache classes, so every Llama-style LLM (Janus, Janus-Pro, JanusFlow) exports the same way.
"""

from __future__ import annotations

import torch
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class InPlaceKVDecoder(nn.Module):
    """A transformers Llama-style model (`embed_tokens`, `layers`, `norm`, `rotary_emb`) with an external cache."""

    def __init__(self, llm: nn.Module):
        super().__init__()
        config = llm.config
        if config.num_key_value_heads != config.num_attention_heads:
            raise ValueError("grouped-query attention is not supported by the in-place decoder graph")
        self.llm = llm
        self.num_layers = config.num_hidden_layers
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim ** -0.5

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        batch, seq = inputs_embeds.shape[0], inputs_embeds.shape[1]
        capacity = past[0].shape[2]
        valid = attention_mask.bool()
        causal = torch.ones(seq, seq, dtype=torch.bool, device=inputs_embeds.device).tril()
        cache_allowed = valid[:, None, None, :capacity]  # [B,1,1,C]
        new_allowed = valid[:, None, None, capacity:] & causal[None, None]  # [B,1,S,S]
        cos, sin = self.llm.rotary_emb(inputs_embeds, position_ids)
        cos, sin = cos[:, None], sin[:, None]
        hidden = inputs_embeds
        new_kv = []
        for i, layer in enumerate(self.llm.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            shape = (batch, seq, -1, self.head_dim)
            q = attn.q_proj(x).view(shape).transpose(1, 2)
            k = attn.k_proj(x).view(shape).transpose(1, 2)
            v = attn.v_proj(x).view(shape).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            past_k, past_v = past[2 * i], past[2 * i + 1]
            # [B,H,C,hd] @ [B,H,hd,S] -> [B,H,C,S] -> [B,H,S,C]: the cache is a MatMul operand as it is stored
            cache_scores = torch.matmul(past_k, q.transpose(2, 3)).transpose(2, 3)
            min_value = torch.finfo(q.dtype).min
            scores = torch.cat([torch.where(cache_allowed, cache_scores * self.scaling, min_value),
                                torch.where(new_allowed, torch.matmul(q, k.transpose(2, 3)) * self.scaling,
                                            min_value)], dim=-1)
            probs = torch.softmax(scores, dim=-1)
            out = torch.matmul(probs[..., :capacity], past_v) + torch.matmul(probs[..., capacity:], v)
            out = attn.o_proj(out.transpose(1, 2).reshape(batch, seq, -1))
            hidden = hidden + out
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            new_kv += [k, v]
        return (self.llm.norm(hidden), *new_kv)
