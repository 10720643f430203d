"""The PyTorch reference: transformers' Janus model in the strongest configuration a PyTorch user would run.

Each configuration is one row, measured in its own child process, and says exactly what it is (attention
implementation, dtype, threads, device, cache, torch and transformers versions):

- `sdpa-bf16`: sdpa attention in bfloat16, where the CPU has native bf16 kernels (AVX-512 BF16 / AMX) and on GPUs;
- `sdpa-fp32`: sdpa attention in float32 (the export's own precision);
- `eager-fp32`: transformers' eager attention, only as a labelled extra (export checks parity against it);
- `static-compile-bf16` (GPU only): a static KV cache and `torch.compile(mode="reduce-overhead")` (CUDA graphs),
  as the fastest public Janus pipelines run; it times the decode step only.

The model is loaded by `load_checkpoint` (both checkpoint formats, no network), then switched to the configuration
with transformers' `set_attn_implementation` and `.to(device, dtype)`. Its weights are then copied into the
process's own memory: a float32 safetensors checkpoint is otherwise memory-mapped, and on a machine short of memory
the kernel evicts those file pages and reads them back from disk on every step (a 6 GiB memory limit made the fp32
decode step 8x slower), which measures the disk, not PyTorch. Every call runs in `torch.inference_mode()`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from janus_edge.runtime import kv

from .common import Result, Settings, cpu_has_bf16, peak_host_mb, throughput_rows, timed, timing

TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
ATTENTIONS = ("sdpa", "eager", "static-compile")


@dataclass(frozen=True)
class ReferenceConfig:
    attention: str  # sdpa, eager, or static-compile (sdpa + static cache + torch.compile, GPU only)
    dtype: str  # fp32, bf16, fp16

    @property
    def name(self) -> str:
        return f"{self.attention}-{self.dtype}"

    @property
    def extra(self) -> bool:
        """Eager attention is measured only as a labelled extra: sdpa is what transformers runs by default."""
        return self.attention == "eager"


def parse_configs(text: str, gpu: bool) -> list[ReferenceConfig]:
    """"auto" or a comma-separated list such as "sdpa-bf16,sdpa-fp32,eager-fp32"."""
    from janus_edge.runtime.errors import RequestError

    if text == "auto":
        names = ["sdpa-bf16", "sdpa-fp32", "static-compile-bf16"] if gpu else \
            (["sdpa-bf16"] if cpu_has_bf16() else []) + ["sdpa-fp32"]
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
    configs = []
    for name in names:
        attention, _, dtype = name.rpartition("-")
        if attention not in ATTENTIONS or dtype not in TORCH_DTYPES:
            raise RequestError(f"unknown reference configuration {name!r}",
                               "use auto or ATTENTION-DTYPE with ATTENTION sdpa, eager or static-compile and "
                               "DTYPE fp32, bf16 or fp16, e.g. sdpa-bf16,sdpa-fp32")
        if attention == "static-compile" and not gpu:
            raise RequestError(f"reference configuration {name} needs a CUDA GPU (CUDA graphs)",
                               "drop it on this machine")
        configs.append(ReferenceConfig(attention, dtype))
    return configs


def load_reference(model_dir: str, config: ReferenceConfig, device: str):
    import torch

    from janus_edge.export.checkpoint import load_checkpoint

    model = load_checkpoint(model_dir).model
    model.set_attn_implementation("eager" if config.attention == "eager" else "sdpa")
    model.to(device=device, dtype=getattr(torch, TORCH_DTYPES[config.dtype]))
    if device == "cpu":
        model._apply(lambda t: t.clone())  # resident weights, not pages of the checkpoint file (module docstring)
    return model


def measure_reference(model_dir: str, settings: Settings, config: ReferenceConfig, max_batch: int = 8
                      ) -> Result:
    import torch
    import transformers

    torch.set_num_threads(settings.threads or os.cpu_count() or 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    start = time.perf_counter()
    model = load_reference(model_dir, config, device)
    dtype = getattr(torch, TORCH_DTYPES[config.dtype])
    result = Result(f"pytorch {config.name}", "reference", config.dtype, backend="pytorch", reference={
        "configuration": config.name, "attention": model.config._attn_implementation, "dtype": str(dtype),
        "extra": config.extra, "threads": torch.get_num_threads(), "device": _device_name(device),
        "cache": "static, torch.compile reduce-overhead" if config.attention == "static-compile" else "dynamic",
        "torch": torch.__version__, "transformers": transformers.__version__})
    metrics, stages, rng = result.metrics, settings.stages, np.random.default_rng(settings.seed)
    metrics["load"] = timing([(time.perf_counter() - start) * 1e3])
    llm, text = model.model.language_model, model.config.text_config
    tensor = lambda array: torch.from_numpy(array).to(device=device, dtype=dtype)  # noqa: E731
    run = lambda fn: torch.inference_mode()(fn)  # noqa: E731
    heads = {"b1": (1, model.lm_head), "b2": (2, model.model.generation_head)}
    if config.attention == "static-compile":  # the decode step only: what CUDA graphs change
        for tag, (batch, head) in heads.items() if "decode" in stages else ():
            metrics[f"decode_{tag}"] = _compiled_decode(llm, head, batch, settings, dtype, device, sync)
            metrics[f"tokens_per_s_{tag}"] = 1e3 / metrics[f"decode_{tag}"]["median"]
        return _finish(result, model, settings)
    side = model.config.vision_config.image_size
    image_tokens = (side // model.config.vision_config.patch_size) ** 2
    pixels = tensor(rng.standard_normal((1, 3, side, side), dtype=np.float32))
    if "vision" in stages:
        metrics["vision_encoder_per_image"] = timed(run(lambda: model.model.get_image_features(pixels)),
                                                    settings.runs, settings.warmup, sync)
    for length in settings.prompt_lengths if "prefill" in stages else ():
        from transformers import DynamicCache

        embeds = tensor(rng.standard_normal((1, length, text.hidden_size), dtype=np.float32))
        metrics[f"prefill_{length}"] = timed(run(lambda: llm(inputs_embeds=embeds, cache=DynamicCache(config=text),
                                                             use_cache=True)), settings.runs, settings.warmup, sync)
    for tag, (batch, head) in heads.items() if "decode" in stages else ():
        metrics[f"decode_{tag}"] = _decode(llm, head, batch, settings, tensor, sync, rng)
        metrics[f"tokens_per_s_{tag}"] = 1e3 / metrics[f"decode_{tag}"]["median"]
    words = rng.integers(0, min(text.vocab_size, 500), 16).tolist()
    boi = model.generation_config.generation_kwargs["boi_token_id"]
    question = [text.bos_token_id, boi] + [model.config.image_token_id] * image_tokens + [boi + 1] + words

    def understand(batch: int, new_tokens: int):
        prompt = torch.tensor([question] * batch, device=device)
        return model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                              pixel_values=pixels.repeat(batch, 1, 1, 1), max_new_tokens=new_tokens,
                              do_sample=False)

    def generate(n: int):
        rows = torch.tensor([[text.bos_token_id] + words + [boi]] * n, device=device)
        return model.generate(input_ids=rows, attention_mask=torch.ones_like(rows), generation_mode="image",
                              do_sample=True)

    if "ttft" in stages:
        metrics["time_to_first_token"] = timed(run(lambda: understand(1, 1)), settings.runs, settings.warmup, sync)
    throughput_rows(result, settings, max_batch, sync, generate=run(generate),
                    understand=run(lambda batch: understand(batch, settings.understand_tokens)))
    if "vq" in stages:
        ids = torch.from_numpy(rng.integers(0, model.config.vq_config.num_embeddings, (1, image_tokens))).to(device)
        metrics["vq_decode"] = timed(run(lambda: model.model.vqmodel.decode(ids)), settings.runs, settings.warmup,
                                     sync)
    return _finish(result, model, settings)


def _decode(llm, head, batch: int, settings: Settings, tensor, sync, rng) -> dict:
    """One generation step after a `settings.past` past: language model + head on one new position per row."""
    import torch
    from transformers import DynamicCache

    hidden = llm.config.hidden_size
    cache = DynamicCache(config=llm.config)
    with torch.inference_mode():
        llm(inputs_embeds=tensor(rng.standard_normal((batch, settings.past, hidden), dtype=np.float32)),
            cache=cache, use_cache=True)
    token = tensor(rng.standard_normal((batch, 1, hidden), dtype=np.float32))

    @torch.inference_mode()
    def step():
        head(llm(inputs_embeds=token, cache=cache, use_cache=True).last_hidden_state)

    return timed(step, settings.runs * 4, settings.warmup, sync)


def _compiled_decode(llm, head, batch: int, settings: Settings, dtype, device: str, sync) -> dict:
    """The decode step with a static cache, compiled with CUDA graphs (torch.compile mode="reduce-overhead")."""
    import torch
    from transformers import StaticCache

    hidden, steps = llm.config.hidden_size, settings.runs * 4 + settings.warmup + 3
    cache = StaticCache(config=llm.config, max_cache_len=settings.past + steps)
    with torch.inference_mode():
        llm(inputs_embeds=torch.randn(batch, settings.past, hidden, dtype=dtype, device=device), cache=cache,
            use_cache=True)
    token = torch.randn(batch, 1, hidden, dtype=dtype, device=device)
    position = [settings.past]

    @torch.compile(mode="reduce-overhead", fullgraph=True)
    def forward(embeds, positions):
        return head(llm(inputs_embeds=embeds, position_ids=positions, cache=cache, use_cache=True).last_hidden_state)

    @torch.inference_mode()
    def step():
        forward(token, torch.full((batch, 1), position[0], device=device))
        position[0] += 1

    return timed(step, settings.runs * 4, settings.warmup + 2, sync)  # two warm-ups record the CUDA graph


def _finish(result: Result, model, settings: Settings) -> Result:
    result.metrics["peak_host_mb"] = peak_host_mb()
    llm = model.model.language_model
    size = lambda *ms: sum(p.numel() * p.element_size() for m in ms for p in m.parameters())  # noqa: E731
    result.weight_bytes = {"decoder": size(llm) - size(llm.embed_tokens), "lm_head": size(model.lm_head),
                           "generation_head": size(model.model.generation_head)}
    text = llm.config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    itemsize = next(llm.parameters()).element_size()  # DynamicCache holds keys and values in the model's dtype
    sizes = kv.CacheSizes(text.num_hidden_layers, text.num_key_value_heads, head_dim, text.hidden_size)
    result.kv = {"bytes_per_position_per_row": kv.bytes_per_position(sizes, f"float{8 * itemsize}"),
                 "itemsize": itemsize}
    return result


def _device_name(device: str) -> str:
    import platform

    import torch

    return torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
