"""Ask a question about an image with the janus-edge Python API.

    python samples/understand.py EXPORT_DIR photo.jpg "What is in this picture?"
"""

import sys

from janus_edge.runtime import JanusRuntime

export_dir, image, question = sys.argv[1], sys.argv[2], sys.argv[3]
runtime = JanusRuntime.load(export_dir)
for piece in runtime.stream_understand([image], question):
    print(piece, end="", flush=True)
print()
answer = runtime.understand([image], question, max_new_tokens=64)
print(f"{len(answer.token_ids)} tokens, {answer.timings['tokens_per_s']:.1f} tokens/s, stopped by {answer.finish_reason}")
