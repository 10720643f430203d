"""transformers called directly, the way its docs call it: the check that `janus-edge bench --reference` is fair.

    python docs/bench/direct_transformers.py MODEL_DIR [--dtype bfloat16|float32] [--attn sdpa|eager] [--resident]

Loads a Hugging Face format Janus checkpoint with `from_pretrained(dtype=..., attn_implementation=...)`, fills a
`DynamicCache` with a 600-position past for 2 rows (the CFG batch of one image), then times the decode step that
image generation repeats 576 times: language model + generation head on one new position per row. 2 threads,
inference mode, 1 warm-up step, median of 6 (REFERENCE.md section 9). The bench's reference decode step at the CFG
batch must agree with this within 15 %.
"""

import argparse
import statistics
import time

import torch
from transformers import DynamicCache, JanusForConditionalGeneration

parser = argparse.ArgumentParser()
parser.add_argument("model_dir")
parser.add_argument("--dtype", default="float32")
parser.add_argument("--attn", default="sdpa")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--batch", type=int, default=2)
parser.add_argument("--past", type=int, default=600)
parser.add_argument("--resident", action="store_true",
                    help="copy the weights into process memory (a float32 checkpoint is otherwise memory-mapped, and "
                         "evicted file pages are read back from disk during the step on a machine short of memory)")
args = parser.parse_args()

torch.set_num_threads(args.threads)
dtype = getattr(torch, args.dtype)
model = JanusForConditionalGeneration.from_pretrained(args.model_dir, dtype=dtype,
                                                      attn_implementation=args.attn).eval()
if args.resident:
    model._apply(lambda t: t.clone())
llm, head = model.model.language_model, model.model.generation_head
hidden = model.config.text_config.hidden_size
samples = []
with torch.inference_mode():
    cache = DynamicCache(config=llm.config)
    llm(inputs_embeds=torch.randn(args.batch, args.past, hidden, dtype=dtype), cache=cache, use_cache=True)
    for _ in range(7):
        token = torch.randn(args.batch, 1, hidden, dtype=dtype)
        start = time.perf_counter()
        head(llm(inputs_embeds=token, cache=cache, use_cache=True).last_hidden_state)
        samples.append((time.perf_counter() - start) * 1e3)
resident = " resident" if args.resident else ""
print(f"{args.attn} {args.dtype}{resident} batch {args.batch} past {args.past} threads {torch.get_num_threads()} "
      f"torch {torch.__version__}: decode step median {statistics.median(samples[1:]):.1f} ms "
      f"(min {min(samples[1:]):.1f}, max {max(samples[1:]):.1f}, 6 steps)")
