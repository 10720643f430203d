"""Calibration data: real photographs and varied prompts, turned into the inputs each graph really sees by
running the fp32 export's own pipelines (not random tensors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from janus_edge.runtime.errors import RequestError

QUESTIONS = [
    "Describe this image in detail.", "What is the main object in the picture?", "How many people are there?",
    "What colours dominate this photo?", "Is this photo taken indoors or outdoors?", "What is written here?",
    "What is unusual about this image?", "Describe the texture of the main subject.",
]
IMAGE_PROMPTS = [
    "A photo of an astronaut riding a horse on the moon.", "A cup of coffee on a wooden table, morning light.",
    "A watercolor landscape with mountains, a lake and pine trees at sunset.", "A portrait of a tabby cat.",
    "A red rocket on the launch pad under a blue sky.", "A bowl of fresh fruit, still life, oil painting.",
    "A futuristic city at night with neon lights and rain.", "A close-up of a sunflower with a bee on it.",
]
SKIMAGE_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "cat", "camera", "immunohistochemistry", "retina"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class CalibrationSet:
    images: list = field(default_factory=list)  # RGB PIL images
    questions: list[str] = field(default_factory=list)
    image_prompts: list[str] = field(default_factory=list)


def load_set(images_dir: str | None, prompts_file: str | None, samples: int) -> CalibrationSet:
    from janus_edge.runtime.images import load_image

    if samples < 1:
        raise RequestError(f"--samples {samples} is too small", "use at least 1")
    if images_dir:
        if not Path(images_dir).is_dir():
            raise RequestError(f"--images {images_dir} is not a directory", "pass a folder of photographs")
        paths = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise RequestError(f"{images_dir} has no images", f"put {', '.join(sorted(IMAGE_SUFFIXES))} files there")
        images = [load_image(p) for p in paths[:samples]]
    else:
        from PIL import Image
        from skimage import data

        images = [load_image(Image.fromarray(getattr(data, name)())) for name in SKIMAGE_PHOTOS[:samples]]
    questions, prompts = QUESTIONS, IMAGE_PROMPTS
    if prompts_file:
        if not Path(prompts_file).is_file():
            raise RequestError(f"--prompts {prompts_file} is not a file", "pass a text file, one prompt per line")
        lines = [line.strip() for line in Path(prompts_file).read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if not lines:
            raise RequestError(f"{prompts_file} has no prompts", "write one prompt per line")
        questions = prompts = lines
    repeat = lambda items: [items[i % len(items)] for i in range(samples)]  # noqa: E731
    return CalibrationSet(images, repeat(questions), repeat(prompts))


def vision_inputs(calibration: CalibrationSet, runtime) -> list[dict[str, np.ndarray]]:
    from janus_edge.runtime.images import preprocess

    name = runtime.manifest.graphs["vision_encoder"].inputs[0].name
    return [{name: preprocess(image, runtime.manifest.preprocessing)[None]} for image in calibration.images]


def vq_inputs(calibration: CalibrationSet, runtime, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Image-token grids the model itself generates for the image prompts (seeded sampling, CFG 5)."""
    name = runtime.manifest.graphs["vq_decoder"].inputs[0].name
    return [{name: runtime.generate_images(prompt, n=1, seed=seed + i).tokens}
            for i, prompt in enumerate(calibration.image_prompts)]
