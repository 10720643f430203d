"""The LLM decoder as a graph over a preallocated KV cache, in one of two forms (`KV_FORMS`, the manifest's
`kv_cache.form`).

"in_place" (plain ONNX: ONNX Runtime, TensorRT): per layer the graph takes the whole cache
`past_key_values.{i}.key/value` [B,H,C,hd] (C = capacity, slots the runtime owns) and only reads it: scores
against the cache (Kc @ q^T, transposed afterwards: the transpose is on the small score tensor, never on the
cache) and against the new keys (S x S, causal) are concatenated, masked, softmaxed and split again, and
out = p_c @ Vc + p_n @ Vn. It returns the hidden states and the new keys/values [B,H,S,hd]; the runtime writes
those into its cache. No node copies, concatenates or outputs a cache-sized tensor, so a decode step reads the
weights and the cache once and writes almost nothing. `attention_mask` [B, C+S] marks the valid cache slots (1)
and the new positions (1, 0 for left padding). Masked scores are replaced (not added to), and softmax gives them
exactly 0, so stale or zero slots never leak in; the cache must hold finite values (the runtime zero-fills new
buffers).

"ort_gqa" (ONNX Runtime only; janus-edge runs it on the CPU provider): attention is ONNX Runtime's fused
`com.microsoft.GroupQueryAttention` (after `com.microsoft.RotaryEmbedding`) with its past and present buffers
shared: the runtime binds each cache tensor as both `past_key_values.*` and `present_key_values.*`, and the
operator writes the new positions into it itself (slots length..length+S-1). `attention_mask` [B, length+S]
covers the filled slots and the new positions (0 for left padding) and becomes an additive bias. The cache may be
int8 (`calibrate` with kv8 sets per-channel scales).

Written over the transformers Llama modules (q/k/v/o projections, RMSNorms, MLP, rotary embedding) rather than
transformers' cache classes, so every Llama-style LLM (Janus, Janus-Pro, JanusFlow) exports the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from janus_edge.runtime.kv import IN_PLACE, KV_FORMS, ORT_GQA


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class KVCacheDecoder(nn.Module):
    """A transformers Llama-style model (`embed_tokens`, `layers`, `norm`, `rotary_emb`) with an external cache."""

    def __init__(self, llm: nn.Module, form: str = IN_PLACE):
        super().__init__()
        config = llm.config
        if config.num_key_value_heads != config.num_attention_heads:
            raise ValueError("grouped-query attention is not supported by the in-place decoder graph")
        if form not in KV_FORMS:
            raise ValueError(f"unknown KV cache form {form!r}; expected one of {KV_FORMS}")
        self.llm, self.form = llm, form
        self.num_layers, self.num_heads = config.num_hidden_layers, config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim ** -0.5
        if form == ORT_GQA:  # RotaryEmbedding's tables: transformers' cos/sin at every position, half width
            rotary = llm.rotary_emb
            positions = torch.arange(config.max_position_embeddings, dtype=torch.float32)
            angles = positions[:, None] * rotary.inv_freq.float()[None, :]
            self.register_buffer("cos_cache", angles.cos() * rotary.attention_scaling, persistent=False)
            self.register_buffer("sin_cache", angles.sin() * rotary.attention_scaling, persistent=False)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        batch, seq = inputs_embeds.shape[0], inputs_embeds.shape[1]
        gqa = self.form == ORT_GQA
        masks = (self._gqa_masks if gqa else self._in_place_masks)(attention_mask, past[0], seq)
        if gqa:
            rotary = (position_ids,)
        else:
            cos, sin = self.llm.rotary_emb(inputs_embeds, position_ids)
            rotary = (cos[:, None], sin[:, None], (batch, seq, -1, self.head_dim))
        hidden = inputs_embeds
        cache_out = []
        for i, layer in enumerate(self.llm.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            attend = self._gqa_attention if gqa else self._in_place_attention
            out, kept = attend(attn.q_proj(x), attn.k_proj(x), attn.v_proj(x), rotary, past[2 * i], past[2 * i + 1],
                               masks)
            hidden = hidden + attn.o_proj(out)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            cache_out += kept
        return (self.llm.norm(hidden), *cache_out)

    @staticmethod
    def _in_place_masks(attention_mask, past_key, seq: int):
        capacity = past_key.shape[2]
        valid = attention_mask.bool()
        causal = torch.ones(seq, seq, dtype=torch.bool, device=attention_mask.device).tril()
        return valid[:, None, None, :capacity], valid[:, None, None, capacity:] & causal[None, None]  # [B,1,1,C]

    def _in_place_attention(self, q, k, v, rotary, past_k, past_v, masks):
        cache_allowed, new_allowed = masks
        capacity = past_k.shape[2]
        cos, sin, shape = rotary
        q, k, v = (x.view(shape).transpose(1, 2) for x in (q, k, v))
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        # [B,H,C,hd] @ [B,H,hd,S] -> [B,H,C,S] -> [B,H,S,C]: the cache is a MatMul operand as it is stored
        cache_scores = torch.matmul(past_k, q.transpose(2, 3)).transpose(2, 3)
        min_value = torch.finfo(q.dtype).min
        scores = torch.cat([torch.where(cache_allowed, cache_scores * self.scaling, min_value),
                            torch.where(new_allowed, torch.matmul(q, k.transpose(2, 3)) * self.scaling, min_value)],
                           dim=-1)
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs[..., :capacity], past_v) + torch.matmul(probs[..., capacity:], v)
        return out.transpose(1, 2).flatten(2), [k, v]

    @staticmethod
    def _gqa_masks(attention_mask, past_key, seq: int):
        """GroupQueryAttention's per-step inputs: seqlens_k [B] (int32, total - 1), total_sequence_length (int32
        scalar), the additive bias [B,1,S,total] that hides left padding (causality is the operator's), and
        query_seqlens [B] (= S: every new position is valid; given, the operator accepts several new positions over
        a cache at any batch, where it otherwise wants batch 1)."""
        total = torch._shape_as_tensor(attention_mask)[1].to(torch.int32)
        rows = torch.zeros_like(attention_mask[:, 0], dtype=torch.int32)
        masked = torch.finfo(torch.float32).min
        bias = torch.where(attention_mask.bool(), 0.0, masked)[:, None, None, :]
        return rows + (total - 1), total, bias.expand(-1, -1, seq, -1), rows + seq

    def _gqa_attention(self, q, k, v, rotary, past_k, past_v, masks):
        """q, k, v stay [B,S,H*hd]: RotaryEmbedding and GroupQueryAttention take them as they come from the
        projections, so no reshape or transpose is left in the layer."""
        (position_ids,) = rotary
        q, k = (OrtRotaryEmbedding.apply(x, position_ids, self.cos_cache, self.sin_cache, self.num_heads)
                for x in (q, k))
        out, present_k, present_v = OrtGroupQueryAttention.apply(q, k, v, past_k, past_v, *masks, self.num_heads,
                                                                 self.scaling)
        return out, [present_k, present_v]


class OrtRotaryEmbedding(torch.autograd.Function):
    """`com.microsoft.RotaryEmbedding` (non-interleaved: transformers' rotate_half) on [B,S,H*hd], for export."""

    @staticmethod
    def forward(ctx, x, position_ids, cos_cache, sin_cache, num_heads: int):
        batch, seq = x.shape[0], x.shape[1]
        heads = x.view(batch, seq, num_heads, -1)
        cos, sin = (torch.cat([c[position_ids]] * 2, dim=-1)[:, :, None] for c in (cos_cache, sin_cache))
        return (heads * cos + _rotate_half(heads) * sin).flatten(2)

    @staticmethod
    def symbolic(g, x, position_ids, cos_cache, sin_cache, num_heads: int):
        out = g.op("com.microsoft::RotaryEmbedding", x, position_ids, cos_cache, sin_cache, num_heads_i=num_heads,
                   rotary_embedding_dim_i=cos_cache.type().sizes()[1] * 2, interleaved_i=0)
        out.setType(x.type())
        return out


class OrtGroupQueryAttention(torch.autograd.Function):
    """`com.microsoft.GroupQueryAttention` with shared past/present buffers, for export: `forward` is its maths in
    PyTorch (the values the tracer sees), `symbolic` the node it becomes."""

    @staticmethod
    def forward(ctx, q, k, v, past_k, past_v, seqlens_k, total, bias, query_seqlens, num_heads: int, scale: float):
        batch, seq = q.shape[0], q.shape[1]
        length = int(total) - seq
        heads = lambda x: x.view(batch, seq, num_heads, -1).transpose(1, 2)  # noqa: E731
        present_k, present_v = past_k.clone(), past_v.clone()
        present_k[:, :, length:length + seq] = heads(k).to(past_k.dtype)
        present_v[:, :, length:length + seq] = heads(v).to(past_v.dtype)
        keys, values = present_k[:, :, :int(total)].float(), present_v[:, :, :int(total)].float()
        causal = torch.ones(seq, int(total), dtype=torch.bool).tril(length)
        scores = torch.matmul(heads(q), keys.transpose(2, 3)) * scale + bias
        scores = scores.masked_fill(~causal, torch.finfo(torch.float32).min)
        out = torch.matmul(torch.softmax(scores, dim=-1), values)
        return out.transpose(1, 2).flatten(2), present_k, present_v

    @staticmethod
    def symbolic(g, q, k, v, past_k, past_v, seqlens_k, total, bias, query_seqlens, num_heads: int, scale: float):
        from torch.onnx.symbolic_helper import _optional_input_placeholder_tensor as absent

        # inputs 7-9 (rotary caches, position ids), 11-15 (head sink, KV scales, QK norms) absent: kv8 sets 12-13
        out, present_k, present_v = g.op("com.microsoft::GroupQueryAttention", q, k, v, past_k, past_v, seqlens_k,
                                         total, *[absent(g)] * 3, bias, *[absent(g)] * 5, query_seqlens,
                                         num_heads_i=num_heads, kv_num_heads_i=num_heads, scale_f=scale, outputs=3)
        out.setType(q.type())
        present_k.setType(past_k.type())
        present_v.setType(past_v.type())
        return out, present_k, present_v
