"""Parameter counting for `plan`, torch-free: the building blocks every family's graphs are made of (Linear,
the VQ and VAE decoders' ResNet and attention blocks, SigLIP, the Llama decoder). Each family's
`graph_parameters` sums them for its graphs; tests check the sums against the real modules on the meta device.
"""

from __future__ import annotations

from janus_edge.runtime.manifest import ModelInfo

# The fields a description needs for the vision tower and the LLM decoder (every family has both).
LLM_AND_VISION = ("intermediate_size", "num_heads", "vision_hidden_size", "vision_layers", "vision_intermediate_size")


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def resblock(c_in: int, c_out: int) -> int:
    """Two GroupNorms, two 3x3 convs, and a 1x1 shortcut where the width changes."""
    conv = c_in * c_out * 9 + c_out + c_out * c_out * 9 + c_out
    return 2 * c_in + 2 * c_out + conv + (linear(c_in, c_out) if c_in != c_out else 0)


def attnblock(c: int) -> int:
    """A GroupNorm and the q, k, v, output projections (1x1 convs)."""
    return 2 * c + 4 * linear(c, c)


def vision_tower(d: ModelInfo) -> int:
    """SigLIP: patch embedding, position embedding, blocks and the final norm."""
    w, mlp, patch = d.vision_hidden_size, d.vision_intermediate_size, d.patch_size
    vision_layer = 4 * w + 3 * linear(w, w) + linear(w, w) + linear(w, mlp) + linear(mlp, w)
    return 3 * patch * patch * w + w + d.num_image_tokens * w + d.vision_layers * vision_layer + 2 * w


def llm_decoder(d: ModelInfo) -> int:
    """The Llama decoder without its embedding table: attention, gated MLP and two norms per layer, a final norm."""
    hidden, heads, kv_heads, head_dim = d.hidden_size, d.num_heads, d.num_kv_heads, d.head_dim
    attention = linear(hidden, heads * head_dim, False) + 2 * linear(hidden, kv_heads * head_dim, False) \
        + linear(heads * head_dim, hidden, False)
    return d.num_layers * (attention + 3 * d.intermediate_size * hidden + 2 * hidden) + hidden
