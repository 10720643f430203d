"""The runtime runs where torch, transformers and onnx cannot be imported (an integrator's Jetson)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    FORBIDDEN = {"torch", "transformers", "onnx", "onnxscript", "safetensors", "skimage", "janus_edge.export"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN or name.startswith("janus_edge.export"):
                raise ImportError(f"{name} is blocked in the bare-runtime test")
            return None
    sys.meta_path.insert(0, Block())
""")

SCRIPT = BLOCKER + textwrap.dedent("""
    import sys
    import numpy as np
    from janus_edge.runtime import JanusRuntime
    runtime = JanusRuntime.load(sys.argv[1])
    image = np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)
    answer = runtime.understand([image], "What is this?", max_new_tokens=6)
    images = runtime.generate_images("a cat", n=1, seed=0)
    assert len(answer.token_ids) >= 1 and images.images[0].size == (384, 384)
    from janus_edge.cli import main
    assert main(["understand", sys.argv[1], "--question", "hi", "--max-new-tokens", "3"]) == 0
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "onnx"})
    assert not loaded, loaded
    print("BARE-OK", answer.token_ids)
""")


def test_runtime_runs_without_torch_transformers_onnx(export_hf):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(export_hf)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BARE-OK" in result.stdout


def test_the_blocker_really_blocks():
    result = subprocess.run([sys.executable, "-c", BLOCKER + "import torch"], capture_output=True, text=True)
    assert result.returncode != 0 and "blocked" in result.stderr
