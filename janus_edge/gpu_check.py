"""`make gpu-check`: on a machine with an NVIDIA GPU, TensorRT and cuda-python, build the tiny model's engines, run
both pipelines on them and compare with ONNX Runtime on the CPU. Prints a short report; exits 1 on a failure.

Tolerances: fp32 engines must give the CPU's tokens exactly (greedy understanding, argmax generation); fp16
engines must agree on at least 90 % of tokens, with VQ pixels within 0.05 on tokens both agree on (the decoded
image of the CPU's tokens).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m janus_edge.gpu_check")
    parser.add_argument("--out", default="out/gpu-check")
    parser.add_argument("--target", default="datacenter", help="build target (orin-nano-8gb on a Jetson Orin Nano)")
    args = parser.parse_args(argv)
    from janus_edge.runtime.backends.cuda import device_name_and_capability
    from janus_edge.runtime.backends.tensorrt import require_tensorrt
    from janus_edge.runtime.errors import JanusEdgeError

    try:
        require_tensorrt()
        gpu, capability = device_name_and_capability()
    except JanusEdgeError as exc:
        print(f"gpu-check: error: {exc}", file=sys.stderr)
        return 2
    import tensorrt

    from janus_edge.export.exporter import export
    from janus_edge.export.tiny import write_checkpoint
    from janus_edge.export.trt_build import build
    from janus_edge.runtime import JanusRuntime

    out = Path(args.out)
    quiet = lambda message: None  # noqa: E731
    model = write_checkpoint(out / "tiny", "hf", seed=0)
    lines, ok = [f"gpu-check on {gpu} (compute capability {capability}), TensorRT {tensorrt.__version__}"], True
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    for precision in ("fp32", "fp16"):
        export_dir, engine_dir = out / f"export-{precision}", out / f"engines-{precision}"
        export(model, export_dir, precision=precision, max_batch=4, max_context=1024, log=quiet)
        build(export_dir, engine_dir, args.target, log=quiet)
        cpu, gpu_rt = JanusRuntime.load(export_dir), JanusRuntime.load(engine_dir, backend="tensorrt")
        text_cpu = cpu.understand([image], "Describe this image.", max_new_tokens=24).token_ids
        text_gpu = gpu_rt.understand([image], "Describe this image.", max_new_tokens=24).token_ids
        images_cpu = cpu.generate_images("a red fox", n=1, temperature=0)
        images_gpu = gpu_rt.generate_images("a red fox", n=1, temperature=0)
        text_agree = np.mean([a == b for a, b in zip(text_cpu, text_gpu)]) if text_cpu else 1.0
        image_agree = float((images_cpu.tokens == images_gpu.tokens).mean())
        pixels = gpu_rt.backend.run("vq_decoder", image_ids=images_cpu.tokens)["pixels"]
        pixel_error = float(np.abs(pixels - images_cpu.pixels).max())
        passed = bool(text_cpu == text_gpu and image_agree == 1.0 and pixel_error <= 1e-3) if precision == "fp32" \
            else bool(text_agree >= 0.9 and image_agree >= 0.9 and pixel_error <= 0.05)
        ok &= passed
        lines.append(f"{precision}: understanding tokens agree {text_agree:.3f}, image tokens agree {image_agree:.3f}, "
                     f"VQ pixels max error {pixel_error:.2e} -> {'PASS' if passed else 'FAIL'}")
        seeded = [gpu_rt.generate_images("a red fox", n=1, seed=3).tokens for _ in range(2)]
        repeatable = bool((seeded[0] == seeded[1]).all())
        ok &= repeatable
        lines.append(f"{precision}: seeded sampling on the GPU repeats run to run: {repeatable}")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
