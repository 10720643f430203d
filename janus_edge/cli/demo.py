"""`janus-edge demo [--out DIR]`: the whole product on the embedded default model, in about a minute on a CPU.

Makes the tiny random-weight Janus-Pro, exports it, answers a question about a real photograph (scikit-image's
astronaut) and generates images. The weights are random, so the answer and images are noise; what it shows is
that every stage runs, end to end.
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="out/demo", help="where to put the model, export and outputs")
    parser.add_argument("-n", type=int, default=2, help="images to generate")


def run(args) -> int:
    from skimage import data
    from PIL import Image

    from janus_edge.cli.generate import progress_bar, save_images
    from janus_edge.export.exporter import export
    from janus_edge.export.tiny import write_checkpoint
    from janus_edge.runtime import JanusRuntime

    out = Path(args.out)
    model_dir, export_dir = out / "tiny-janus-pro", out / "tiny-janus-pro-onnx"
    print(f"1/4 writing the tiny Janus-Pro checkpoint to {model_dir}")
    write_checkpoint(model_dir, "hf", seed=0)
    print(f"2/4 exporting ONNX graphs to {export_dir}")
    export(model_dir, export_dir, log=lambda message: print(f"    {message}"))
    photo = out / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    runtime = JanusRuntime.load(export_dir)
    question = "Describe this image."
    print(f"3/4 understanding {photo}: {question}\n    answer: ", end="")
    for piece in runtime.stream_understand([photo], question, max_new_tokens=24):
        sys.stdout.write(piece)
        sys.stdout.flush()
    print()
    prompt = "A photo of an astronaut riding a horse on the moon."
    print(f"4/4 generating {args.n} images for: {prompt}")
    result = runtime.generate_images(prompt, n=args.n, seed=0, progress=progress_bar("    generating"))
    paths = save_images(result, out / "generated")
    print(f"done. answer above; images: {', '.join(str(p) for p in paths)}")
    print("(random weights: the text and pictures are noise; with real weights see README 'Using real weights')")
    return 0
