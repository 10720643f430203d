"""`JanusRuntime`: the Python API over an export directory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

from .backends import open_backend
from .backends.base import Closeable
from .chat import ChatSession
from .errors import RequestError
from .images import ImageInput
from .manifest import Manifest, load_manifest
from .pipelines.flow import FlowPipeline
from .pipelines.generate import GeneratedImages, GenerationPipeline
from .pipelines.understand import Answer, UnderstandingPipeline
from .prompts import PromptBuilder, Turn
from .sampling import Sampler
from .tokenizer import TextTokenizer

History = Sequence[Turn]


class JanusRuntime(Closeable):
    """Runs an export: image understanding and text-to-image generation.

    >>> rt = JanusRuntime.load("out/janus-pro-1b-onnx")
    >>> rt.understand(["photo.jpg"], "What is in this picture?").text
    >>> rt.generate_images("a red fox in the snow", n=2, seed=0).images[0].save("fox.png")
    """

    def __init__(self, directory: Path, manifest: Manifest, backend):
        self.directory, self.manifest, self.backend = directory, manifest, backend
        self.tokenizer = TextTokenizer(directory / manifest.tokenizer_file)
        self.prompts = PromptBuilder(manifest, self.tokenizer)
        self._understanding = UnderstandingPipeline(backend, manifest, self.tokenizer, self.prompts)
        self._generation = GenerationPipeline(backend, manifest, self.prompts)
        self._flow = FlowPipeline(backend, manifest, self.prompts) if manifest.flow else None

    @classmethod
    def load(cls, export_dir: str | Path, backend: str = "onnxruntime", verify: bool = True,
             **backend_options) -> "JanusRuntime":
        """Reads the manifest (checking every file's sha256 unless `verify=False`); graphs load on first use."""
        directory = Path(export_dir)
        manifest = load_manifest(directory, verify=verify)
        return cls(directory, manifest, open_backend(backend, directory, manifest, **backend_options))

    def close(self) -> None:
        """Frees the loaded graphs and the KV-cache buffers kept for reuse (they load again on the next call)."""
        self.backend.close()

    def understand(self, images: Sequence[ImageInput], question: str, history: History | None = None,
                   max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float | None = None,
                   top_k: int | None = None, seed: int | None = None) -> Answer:
        """Answers one question about zero or more images; `history` holds earlier turns (with their answers)."""
        return self.understand_batch([[*(history or []), Turn(question, _image_list(images))]], max_new_tokens,
                                     temperature, top_p, top_k, seed)[0]

    def understand_batch(self, conversations: Sequence[Sequence[Turn]], max_new_tokens: int | None = None,
                         temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None,
                         seed: int | None = None) -> list[Answer]:
        """Answers several conversations at once (left-padded into one batch); the last turn of each is asked."""
        sampler = Sampler(temperature, top_k, top_p, seed)
        limit = self.manifest.generation.understanding_max_new_tokens if max_new_tokens is None else max_new_tokens
        return self._understanding.run([list(c) for c in conversations], limit, sampler)

    def stream_understand(self, images: Sequence[ImageInput], question: str, history: History | None = None,
                          max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float | None = None,
                          top_k: int | None = None, seed: int | None = None) -> Iterator[str]:
        """Like `understand`, yielding text pieces as tokens are produced."""
        sampler = Sampler(temperature, top_k, top_p, seed)
        limit = self.manifest.generation.understanding_max_new_tokens if max_new_tokens is None else max_new_tokens
        return self._understanding.stream([*(history or []), Turn(question, _image_list(images))], limit, sampler)

    def chat(self, max_new_tokens: int | None = None) -> ChatSession:
        """A conversation that keeps its KV cache between turns (`ask`, `stream`); close it to free the cache."""
        limit = self.manifest.generation.understanding_max_new_tokens if max_new_tokens is None else max_new_tokens
        return ChatSession(self.backend, self._understanding, limit)

    def generate_images(self, prompt: str, n: int = 4, cfg_weight: float | None = None,
                        temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                        seed: int | None = None, progress: Callable[[int, int], None] | None = None,
                        steps: int | None = None, initial_latents=None) -> GeneratedImages:
        """Generates `n` 384x384 images for `prompt`; temperature 0 picks the argmax token at every step.

        JanusFlow exports run the rectified flow instead and return `FlowImages` (with the final `latents`):
        `steps` Euler steps (default 30) from seeded noise or from `initial_latents` [n,4,48,48] (which then set
        n); temperature, top_k and top_p do not apply.
        """
        defaults = self.manifest.generation
        if self._flow is not None:
            if temperature is not None or top_k is not None or top_p is not None:
                raise RequestError("temperature, top_k and top_p do not apply to JanusFlow's flow (it samples no "
                                   "tokens)", "drop them; steps, cfg_weight and seed steer JanusFlow")
            weight = defaults.cfg_weight if cfg_weight is None else cfg_weight
            return self._flow.run(prompt, n, weight, steps, seed, initial_latents, progress)
        if steps is not None or initial_latents is not None:
            raise RequestError("steps and initial_latents apply to JanusFlow exports only",
                               f"this export is {self.manifest.model.family}: drop them")
        sampler = Sampler(defaults.temperature if temperature is None else temperature, top_k, top_p, seed)
        weight = defaults.cfg_weight if cfg_weight is None else cfg_weight
        return self._generation.run(prompt, n, weight, sampler, progress)


def _image_list(images) -> list:
    """A single image (path, bytes, PIL image or array) is accepted as well as a sequence of them."""
    import numpy as np
    from PIL import Image

    if isinstance(images, (str, Path, bytes, Image.Image, np.ndarray)):
        return [images]
    return list(images)
