"""What a request is checked against before it touches a graph, and how requests share one runtime.

Options come from Python callers, the CLI and the server; each is checked here once, so a NaN temperature or a
negative seed is a `RequestError` naming the option rather than a numpy exception or silently odd output.

Requests on one runtime run one at a time (`RequestLock`): graphs, pooled buffers and, on TensorRT, execution
contexts and device buffers are shared by every request, so interleaving two would corrupt both. Threads wait
their turn and get exactly the results of a serial run; a second request from the thread that holds the runtime
(for example inside an unfinished stream) is refused instead of deadlocking.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import Cancelled, RequestError
from ..sampling import Sampler
from .speculative import DEFAULT_WINDOW, MAX_WINDOW, MODES

MAX_CFG_WEIGHT = 100.0  # logits are u + w (c - u): far past the useful 1-10, float32 logits overflow to NaN
MIN_TEMPERATURE = 1e-4  # below it sampling is the argmax in all but name, and logits / T can overflow

StopCallback = Callable[[], bool]


def real(name: str, value, low: float, high: float, hint: str) -> float:
    """`value` as a float, refused unless it is a finite number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not low <= value <= high:
        raise RequestError(f"{name} is {value!r}", hint)
    return float(value)


def integer(name: str, value, low: float, high: float, hint: str) -> int:
    """`value` as an int, refused unless it is an integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise RequestError(f"{name} is {value!r}", hint)
    return int(value)


def sampler(temperature, top_k, top_p, seed) -> Sampler:
    """A `Sampler`, after checking each option (None leaves top_k, top_p and seed unset)."""
    temperature = real("temperature", temperature, 0.0, math.inf, "use 0 for greedy or a finite value > 0")
    if 0 < temperature < MIN_TEMPERATURE:
        raise RequestError(f"temperature {temperature} is too small to sample with",
                           f"use 0 for greedy or at least {MIN_TEMPERATURE}")
    if top_k is not None:
        top_k = integer("top_k", top_k, 1, math.inf, "use an integer >= 1, or None to disable it")
    if top_p is not None:
        top_p = real("top_p", top_p, 0.0, 1.0, "use a value in (0, 1], or None to disable it")
        if top_p == 0:
            raise RequestError("top_p is 0.0", "use a value in (0, 1], or None to disable it")
    return Sampler(temperature, top_k, top_p, checked_seed(seed))


def checked_seed(value) -> int | None:
    if value is None:
        return None
    return integer("seed", value, 0, math.inf, "use a non-negative integer, or None for a random seed")


def cfg_weight(value) -> float:
    return real("cfg_weight", value, 0.0, MAX_CFG_WEIGHT,
                f"use a guidance weight from 0 to {MAX_CFG_WEIGHT:g} (5 is Janus-Pro's default)")


def speculative(mode, window) -> tuple[str | None, int]:
    """The speculative decoding mode (None: one token per decoder pass) and its window (None: the default)."""
    if mode is None:
        if window is not None:
            raise RequestError(f"window is {window!r} without a speculative mode",
                               f"pass speculative= one of {', '.join(MODES)}, or drop window")
        return None, 1
    if not isinstance(mode, str) or mode not in MODES:
        raise RequestError(f"speculative is {mode!r}", f"use one of {', '.join(MODES)}, or None for the plain loop")
    if window is None:
        return mode, DEFAULT_WINDOW
    return mode, integer("window", window, 1, MAX_WINDOW,
                         f"use 1 to {MAX_WINDOW} positions per decoder pass ({DEFAULT_WINDOW} is the default)")


def max_new_tokens(value, max_context: int) -> int:
    return integer("max_new_tokens", value, 1, max_context,
                   f"ask for 1 to {max_context} new tokens (the exported context)")


def text(name: str, value, allow_empty: bool) -> str:
    """A prompt or question: a str that encodes as UTF-8 (no lone surrogates), non-blank unless `allow_empty`."""
    if not isinstance(value, str):
        raise RequestError(f"the {name} is a {type(value).__name__}, not text", f"pass the {name} as a str")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(f"the {name} is not valid Unicode text ({exc.reason} at character {exc.start})",
                           "pass UTF-8 text (a lone surrogate usually comes from mis-decoded bytes)") from None
    if not allow_empty and not value.strip():
        raise RequestError(f"the {name} is empty", f"write a {name}")
    return value


def image_list(images) -> list:
    """A single image (path, bytes, PIL image or array) is accepted as well as a sequence of them."""
    from PIL import Image

    if images is None:
        return []
    if isinstance(images, (str, Path, bytes, Image.Image, np.ndarray)):
        return [images]
    try:
        return list(images)
    except TypeError:
        raise RequestError(f"images is a {type(images).__name__}",
                           "pass a list of paths, bytes, PIL images or arrays") from None


def check_stop(should_stop: StopCallback | None) -> None:
    """Raises `Cancelled` when the caller's callback says so (checked before every decoder step)."""
    if should_stop is not None and should_stop():
        raise Cancelled("the request was cancelled: its should_stop callback returned true")


class RequestLock:
    """One request at a time on a runtime; a nested request from the holding thread is refused, not deadlocked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self._owner == threading.get_ident():
            raise RequestError("this runtime is already running a request on this thread (an unfinished stream "
                               "or chat turn)", "finish or close() that stream first, or load a second runtime")
        with self._lock:
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._owner = None

    def stream(self, pieces: Iterator[str]) -> Iterator[str]:
        """`pieces`, run while holding the lock: from the first `next()` until exhausted, closed or collected."""
        with self.hold():
            yield from pieces
