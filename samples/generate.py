"""Generate images from a prompt with the janus-edge Python API.

    python samples/generate.py EXPORT_DIR "a red fox in the snow, watercolor" out/
"""

import sys
from pathlib import Path

from janus_edge.runtime import JanusRuntime

export_dir, prompt, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
runtime = JanusRuntime.load(export_dir)
result = runtime.generate_images(prompt, n=2, cfg_weight=5.0, temperature=1.0, seed=0,
                                 progress=lambda step, total: print(f"\r{step}/{total}", end="", flush=True))
print()
out.mkdir(parents=True, exist_ok=True)
for i, image in enumerate(result.images):
    image.save(out / f"image_{i}.png")
print(f"saved {len(result.images)} images to {out} ({result.timings['decode_ms_per_step']:.1f} ms per step)")
