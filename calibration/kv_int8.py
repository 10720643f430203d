"""kv8: the decoder's KV cache in INT8, for exports whose decoder attention is ONNX Runtime's GroupQueryAttention
(`--kv-form ort_gqa`). The operator quantises each new position as it writes it into the cache and dequantises
as it reads, with one fixed scale per (head, channel) of every cache tensor: symmetric, absmax / 127 over the
keys and values the fp32 export itself produces for the calibration set (understanding requests, and the first
image tokens of generation requests at the CFG batch). A value beyond its channel's calibrated peak saturates.
"""

from __future__ import annotations

import numpy as np

from janus_edge.runtime.errors import Cancelled, InternalError
from janus_edge.runtime.kv import ORT_GQA, kv_form, kv_input

QMAX = 127
GENERATION_TOKENS = 64  # image tokens per generation request observed (the cache's statistics settle quickly)


def collect_scales(runtime, calibration, generation_tokens: int = GENERATION_TOKENS) -> dict[str, np.ndarray]:
    """Per cache tensor, scales [1, heads, 1, head_dim]: the peak |value| of the valid new positions of every
    decoder step the calibration requests make, / 127. The runtime's decoders are observed, not changed."""
    peaks: dict[str, np.ndarray] = {}
    backend = runtime.backend
    open_decoder = backend.kv_decoder

    def observed(batch: int, capacity: int | None = None):
        decoder = open_decoder(batch, capacity)
        step = decoder.step

        def observed_step(inputs_embeds, attention_mask, position_ids, last_only: bool = False):
            start = decoder.length
            hidden = step(inputs_embeds, attention_mask, position_ids, last_only)
            valid = attention_mask[:, start:].astype(bool)[:, None, :, None]  # [B,1,S,1]: not left padding
            for name, view in decoder.cache.views().items():
                new = np.where(valid, np.abs(view[:, :, start:decoder.length]), 0)
                peaks[name] = np.maximum(peaks.get(name, 0), new.max(axis=(0, 2)))
            return hidden

        decoder.step = observed_step
        return decoder

    backend.kv_decoder = observed
    try:
        for image, question in zip(calibration.images, calibration.questions):
            runtime.understand([image], question, max_new_tokens=8)
        for seed, prompt in enumerate(calibration.image_prompts):
            made = []
            try:
                runtime.generate_images(prompt, n=1, seed=seed, progress=lambda done, total: made.append(done),
                                        should_stop=lambda: len(made) >= generation_tokens)
            except Cancelled:
                pass  # stopped on purpose after `generation_tokens` tokens
    finally:
        del backend.kv_decoder  # the backend's own method again
    tiny = np.finfo(np.float32).tiny
    return {name: (np.maximum(peak, tiny) / QMAX).astype(np.float32)[None, :, None, :]
            for name, peak in peaks.items()}


def quantize_cache(proto, scales: dict[str, np.ndarray]) -> None:
    """Makes the decoder graph's cache INT8: every GroupQueryAttention node gets its tensors' scales (inputs 12
    and 13: k_scale, v_scale) and per-channel 8-bit quantisation; the cache inputs and present outputs become int8."""
    from onnx import TensorProto, helper, numpy_helper

    present = kv_form(ORT_GQA).output  # kv8 exports have the ort_gqa form (kv.check_support)
    cache_names = {kv_input(name): name for name in scales} | {present(name): name for name in scales}
    nodes = [node for node in proto.graph.node if node.op_type == "GroupQueryAttention"]
    if len(nodes) * 2 != len(scales):
        raise InternalError(f"{len(nodes)} GroupQueryAttention nodes for {len(scales)} cache tensors")
    for node in nodes:
        key, value = cache_names[node.input[3]], cache_names[node.input[4]]
        inputs = list(node.input) + [""] * (14 - len(node.input))
        inputs[12:14] = [f"{kv_input(key)}.scale", f"{kv_input(value)}.scale"]  # k_scale, v_scale
        del node.input[:]
        node.input.extend(inputs)
        node.attribute.extend([helper.make_attribute("k_quant_type", "PER_CHANNEL"),
                               helper.make_attribute("v_quant_type", "PER_CHANNEL"),
                               helper.make_attribute("kv_cache_bit_width", 8)])
        proto.graph.initializer.extend([numpy_helper.from_array(scales[key], f"{kv_input(key)}.scale"),
                                        numpy_helper.from_array(scales[value], f"{kv_input(value)}.scale")])
    for tensor in list(proto.graph.input) + list(proto.graph.output):
        if tensor.name in cache_names:
            tensor.type.tensor_type.elem_type = TensorProto.INT8
