"""The names of the graphs' inputs and outputs, and of the sampler engines: the one place each is spelled.

Export's graph specifications write them into the manifest (each `Graph`'s `inputs` and `outputs`); the
pipelines, backends, TensorRT profiles, calibration and tools take them from here (or, for a graph of one input
and one output, from the manifest: `Backend.apply`), never as literals. The KV cache's tensor names are
`kv.kv_names`/`kv_input`/`kv_output`/`kv_present`.
"""

from __future__ import annotations

# Janus-Pro and JanusFlow alike
PIXEL_VALUES = "pixel_values"  # vision_encoder input: normalised images [batch, 3, size, size]
IMAGE_EMBEDS = "image_embeds"  # vision_encoder output: one LLM embedding per image token
INPUT_IDS = "input_ids"  # text_embedding input: token ids
INPUTS_EMBEDS = "inputs_embeds"  # LLM input embeddings: text_embedding, generation_embedding, flow_encoder out
ATTENTION_MASK = "attention_mask"  # decoder: which cache slots and new positions are valid
POSITION_IDS = "position_ids"  # decoder: the new positions' rotary positions
HIDDEN_STATES = "hidden_states"  # decoder output, heads' and flow_decoder's input
LOGITS = "logits"  # lm_head and generation_head output
PIXELS = "pixels"  # vq_decoder and vae_decoder output: images in [-1, 1]

# Janus-Pro's image tokens
IMAGE_IDS = "image_ids"  # generation_embedding and vq_decoder input: codebook ids

# JanusFlow's rectified flow
LATENTS = "latents"  # flow_encoder and vae_decoder input
TIMESTEPS = "timesteps"  # flow_encoder input
SKIP = "skip"  # flow_encoder output, flow_decoder input: the encoder's skip connection
TIME_EMBEDDING = "time_embedding"  # flow_encoder output, flow_decoder input
VELOCITY = "velocity"  # flow_decoder output

# The sampler engines `janus-edge build` adds beside the export's graphs (export/tensorrt/sampler_graph.py)
SAMPLER = "sampler"  # engine: logits [R, V] -> greedy [R]
CFG_SAMPLER = "cfg_sampler"  # engine: logits [2N, V] (rows [cond; uncond]) and cfg_weight -> mixed, greedy [N]
SAMPLERS = {SAMPLER: False, CFG_SAMPLER: True}  # engine name -> whether it mixes CFG rows
CFG_WEIGHT = "cfg_weight"  # cfg_sampler input [1]
MIXED = "mixed"  # cfg_sampler output: uncond + cfg_weight x (cond - uncond)
GREEDY = "greedy"  # both samplers' output: the argmax ids
