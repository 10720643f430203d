"""`JanusRuntime`: the Python API over an export directory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .backends import open_backend
from .backends.base import Closeable
from .chat import ChatSession
from .errors import RequestError
from .images import ImageInput
from .manifest import Manifest, load_manifest
from .pipelines.flow import FlowPipeline
from .pipelines import requests
from .pipelines.generate import GeneratedImages, GenerationPipeline
from .pipelines.requests import StopCallback
from .pipelines.understand import Answer, UnderstandingPipeline
from .prompts import PromptBuilder, Turn
from .tokenizer import TextTokenizer

History = Sequence[Turn]


class JanusRuntime(Closeable):
    """Runs an export: image understanding and text-to-image generation.

    >>> rt = JanusRuntime.load("out/janus-pro-1b-onnx")
    >>> rt.understand(["photo.jpg"], "What is in this picture?").text
    >>> rt.generate_images("a red fox in the snow", n=2, seed=0).images[0].save("fox.png")

    Threads may share a runtime: its requests run one at a time (a per-runtime lock), so each gets the result a
    serial run gives. A stream holds the runtime from its first piece until it ends or is closed. Every request
    takes `should_stop`, a callback checked before each decoder step (e.g. `threading.Event().is_set`): when it
    returns true the request raises `Cancelled` and hands its KV cache back. `close()` (or `with`) frees the
    loaded graphs and pooled buffers; it is idempotent, and a later request loads them again.
    """

    def __init__(self, directory: Path, manifest: Manifest, backend):
        self.directory, self.manifest, self.backend = directory, manifest, backend
        self.tokenizer = TextTokenizer(directory / manifest.tokenizer_file)
        self.prompts = PromptBuilder(manifest, self.tokenizer)
        self._lock = requests.RequestLock()
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
        """Frees the loaded graphs and the KV-cache buffers kept for reuse (they load again on the next call);
        waits for a running request to finish first."""
        with self._lock.hold():
            self.backend.close()

    def understand(self, images: Sequence[ImageInput], question: str, history: History | None = None,
                   max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float | None = None,
                   top_k: int | None = None, seed: int | None = None,
                   should_stop: StopCallback | None = None) -> Answer:
        """Answers one question about zero or more images; `history` holds earlier turns (with their answers)."""
        return self.understand_batch([[*(history or []), self._turn(question, images)]], max_new_tokens,
                                     temperature, top_p, top_k, seed, should_stop)[0]

    def understand_batch(self, conversations: Sequence[Sequence[Turn]], max_new_tokens: int | None = None,
                         temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None,
                         seed: int | None = None, should_stop: StopCallback | None = None) -> list[Answer]:
        """Answers several conversations at once (left-padded into one batch); the last turn of each is asked."""
        sampler = requests.sampler(temperature, top_k, top_p, seed)
        limit = self._limit(max_new_tokens)
        with self._lock.hold():
            return self._understanding.run([list(c) for c in conversations], limit, sampler, should_stop)

    def stream_understand(self, images: Sequence[ImageInput], question: str, history: History | None = None,
                          max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float | None = None,
                          top_k: int | None = None, seed: int | None = None,
                          should_stop: StopCallback | None = None) -> Iterator[str]:
        """Like `understand`, yielding text pieces as tokens are produced; close() it if you stop reading early."""
        sampler = requests.sampler(temperature, top_k, top_p, seed)
        turns = [*(history or []), self._turn(question, images)]
        return self._lock.stream(self._understanding.stream(turns, self._limit(max_new_tokens), sampler,
                                                            should_stop))

    def chat(self, max_new_tokens: int | None = None) -> ChatSession:
        """A conversation that keeps its KV cache between turns (`ask`, `stream`); close it to free the cache."""
        return ChatSession(self.backend, self._understanding, self._limit(max_new_tokens), self._lock)

    def generate_images(self, prompt: str, n: int = 4, cfg_weight: float | None = None,
                        temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                        seed: int | None = None, progress: Callable[[int, int], None] | None = None,
                        steps: int | None = None, initial_latents=None,
                        should_stop: StopCallback | None = None, speculative: str | None = None,
                        window: int | None = None) -> GeneratedImages:
        """Generates `n` 384x384 images for `prompt`; temperature 0 picks the argmax token at every step.

        `speculative` ("sjd", "maximal" or "gumbel") decodes `window` positions per decoder pass (default 16) and
        keeps the sampled distribution exactly (with temperature 0: the same tokens); the result's `speculative`
        says how many passes it took (docs/SPECULATIVE.md).

        JanusFlow exports run the rectified flow instead and return `FlowImages` (with the final `latents`):
        `steps` Euler steps (default 30) from seeded noise or from `initial_latents` [n,4,48,48] (which then set
        n); temperature, top_k and top_p do not apply.
        """
        defaults = self.manifest.generation
        prompt = requests.text("prompt", prompt, allow_empty=False)
        weight = requests.cfg_weight(defaults.cfg_weight if cfg_weight is None else cfg_weight)
        n = requests.integer("n", n, -math.inf, math.inf, "pass the number of images as an integer")
        if self._flow is not None:
            if speculative is not None or window is not None:
                raise RequestError("speculative decoding does not apply to JanusFlow (its flow steps are not token "
                                   "steps)", "drop speculative and window for this export")
            if temperature is not None or top_k is not None or top_p is not None:
                raise RequestError("temperature, top_k and top_p do not apply to JanusFlow's flow (it samples no "
                                   "tokens)", "drop them; steps, cfg_weight and seed steer JanusFlow")
            if steps is not None:
                steps = requests.integer("steps", steps, 1, 1000, "use 1 to 1000 Euler steps (30 is the default)")
            with self._lock.hold():
                return self._flow.run(prompt, n, weight, steps, requests.checked_seed(seed), initial_latents,
                                      progress, should_stop)
        if steps is not None or initial_latents is not None:
            raise RequestError("steps and initial_latents apply to JanusFlow exports only",
                               f"this export is {self.manifest.model.family}: drop them")
        sampler = requests.sampler(defaults.temperature if temperature is None else temperature, top_k, top_p, seed)
        mode, window = requests.speculative(speculative, window)
        with self._lock.hold():
            return self._generation.run(prompt, n, weight, sampler, progress, should_stop, mode, window)

    def _limit(self, max_new_tokens: int | None) -> int:
        default = self.manifest.generation.understanding_max_new_tokens
        return requests.max_new_tokens(default if max_new_tokens is None else max_new_tokens,
                                       self.manifest.limits.max_context)

    @staticmethod
    def _turn(question: str, images) -> Turn:
        images = requests.image_list(images)  # a question about images may be empty; one without them may not
        return Turn(requests.text("question", question, allow_empty=bool(images)), images)
