"""The decoder's KV cache, decided in one place: export, calibrate, `plan`, `build` and every backend ask here.

It owns:
- the forms (`FORMS`): how the decoder graph updates its cache, the output each cache tensor is written to and
  the input it is read from (`kv_names`, `kv_input`, `kv_output`, `kv_present`);
- the rule table (`check_support`): which form, cache precision, backend and model family go together; every
  refusal is one `RequestError` written once below, whichever command meets it first;
- bytes (`bytes_per_position`, `cache_bytes`, `spare_bytes`, `decode_io_bytes`): one formula, from the model's
  sizes and the cache's dtype, for the backends, `plan` and `bench`;
- the growth policy (`bucket`, `request_capacity`, `grow_view`). A request's cache holds `capacity` slots per row:
  its prompt plus the tokens it may add, never more than the exported context. The decoder graph reads every slot
  it is given, so a decoder feeds only the first `bucket(length)` slots (a view of its buffer) and moves to the
  next bucket when the cache fills it: one move per bucket crossing instead of reading unused capacity every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import numpy as np

from .errors import InternalError, RequestError
from .tensor_names import ATTENTION_MASK, HIDDEN_STATES, INPUTS_EMBEDS, POSITION_IDS

# --- names --------------------------------------------------------------------------------------------------------


def kv_names(num_layers: int) -> list[str]:
    """Names of the KV cache's tensors, "0.key", "0.value", "1.key", ...: the decoder graph reads the cache as
    inputs `kv_input(name)` and writes it as its form says (`KVForm.output`). The one place these names are
    spelled; export, backends and TensorRT profiles all take them from here."""
    return [f"{layer}.{kind}" for layer in range(num_layers) for kind in ("key", "value")]


def kv_input(name: str) -> str:
    """The decoder input holding cache tensor `name` (an element of `kv_names`)."""
    return f"past_key_values.{name}"


def kv_output(name: str) -> str:
    """The decoder output holding the new positions of cache tensor `name` ("in_place" form)."""
    return f"new_key_values.{name}"


def kv_present(name: str) -> str:
    """The decoder output that is cache tensor `name` itself, written in place ("ort_gqa" form: bound to the same
    buffer as `kv_input(name)`)."""
    return f"present_key_values.{name}"


# --- forms --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KVForm:
    """How a decoder graph updates its cache (the manifest's `kv_cache.form`; see manifest.KVCacheFormat)."""

    name: str
    output: Callable[[str], str]  # the decoder output cache tensor `name` is written to
    output_length: str  # that output's third dimension: "sequence" (new positions only) or "capacity" (the cache)
    mask_length: str  # attention_mask's second dimension
    writes_cache: bool  # the graph writes the new positions into the bound cache itself (else the runtime does)


IN_PLACE, ORT_GQA = "in_place", "ort_gqa"
FORMS = {
    IN_PLACE: KVForm(IN_PLACE, kv_output, "sequence", "capacity_and_sequence", writes_cache=False),
    ORT_GQA: KVForm(ORT_GQA, kv_present, "capacity", "past_and_sequence", writes_cache=True),
}
KV_FORMS = tuple(FORMS)


def kv_form(name: str) -> KVForm:
    """The form called `name` (`check_support` refuses unknown ones first)."""
    check_support(name)
    return FORMS[name]


def cache_tensors(form: str, names: Iterable[str]) -> set[str]:
    """The decoder inputs and outputs that hold cache tensors `names` in `form` (what changes dtype with it)."""
    output = kv_form(form).output
    return {kv_input(n) for n in names} | {output(n) for n in names}


# --- the rule table -----------------------------------------------------------------------------------------------

ORT_CPU, ORT_GPU, TENSORRT = "onnxruntime", "onnxruntime-gpu", "tensorrt"  # ORT_GPU: its CUDA and TensorRT EPs
BACKENDS = (ORT_CPU, ORT_GPU, TENSORRT)
IN_PLACE_ONLY_FAMILIES = ("janusflow",)  # their exporters write the in_place decoder only


@dataclass(frozen=True)
class _Asked:
    """What a caller wants to run; None: not decided yet (export knows no backend, plan knows no form)."""

    form: str | None
    kv8: bool  # an INT8 cache
    half: bool  # the decoder computes in fp16 (its cache fp16)
    backend: str | None
    family: str | None


@dataclass(frozen=True)
class Rule:
    """One refusal: when it applies, and the one message and fix every command shows for it."""

    name: str
    applies: Callable[[_Asked], bool]
    message: str  # may name {form}, {backend}, {family}
    fix: str


RULES = (
    Rule("unknown_form", lambda a: a.form is not None and a.form not in FORMS, "unknown KV cache form {form!r}",
         f"use one of {', '.join(FORMS)} (--kv-form)"),
    Rule("family_form", lambda a: a.family in IN_PLACE_ONLY_FAMILIES and a.form not in (None, IN_PLACE),
         "{family} exports have the in_place KV cache form only", "leave out --kv-form"),
    Rule("family_kv8", lambda a: a.kv8 and a.family in IN_PLACE_ONLY_FAMILIES,
         "kv8 is not available for {family} exports (they have the in_place KV form only)", "leave kv8 out"),
    Rule("kv8_fp16", lambda a: a.kv8 and a.half, "kv8 (an INT8 cache for ONNX Runtime's CPU provider) excludes fp16",
         "leave out fp16 (w4,kv8 is the CPU's combination) or kv8"),
    Rule("kv8_in_place", lambda a: a.kv8 and a.form == IN_PLACE,
         "kv8 needs an export whose decoder has the ort_gqa KV form; this one has in_place",
         "export with `janus-edge export ... --kv-form ort_gqa`, then calibrate that"),
    Rule("kv8_tensorrt", lambda a: a.kv8 and a.backend == TENSORRT,
         "kv8 (an INT8 KV cache in ONNX Runtime's GroupQueryAttention) runs on ONNX Runtime, not on TensorRT",
         "leave kv8 out (of --precision / --scheme), or run the kv8 export on ONNX Runtime's CPU provider"),
    Rule("gqa_fp16", lambda a: a.form == ORT_GQA and a.half,
         "the ort_gqa form runs on ONNX Runtime's CPU provider, where fp16 is slower than fp32",
         "leave fp16 out (export fp32, then calibrate w4 and/or kv8), or use the in_place form (--kv-form in_place)"),
    Rule("gqa_gpu", lambda a: a.form == ORT_GQA and a.backend == ORT_GPU,
         "this export's decoder has the ort_gqa KV form, which janus-edge runs on ONNX Runtime's CPU provider only",
         "run it on the CPU, or export with --kv-form in_place for GPU providers"),
    Rule("gqa_tensorrt", lambda a: a.form == ORT_GQA and a.backend == TENSORRT,
         "this export's decoder has the ort_gqa KV form (an ONNX Runtime operator), which TensorRT cannot build",
         "export again with --kv-form in_place"),
)


def check_support(form: str | None = None, *, kv_dtype: str | None = None, backend: str | None = None,
                  family: str | None = None, precision_words: Iterable[str] = ()) -> None:
    """Raises the one `RequestError` for a combination janus-edge does not run: KV form `form`, a cache of
    `kv_dtype` (numpy name) or the precision words that make it ("kv8": int8; "fp16": float16), on `backend`
    (`BACKENDS`), for model `family`. Arguments left out are not checked against anything."""
    words = set(precision_words)
    asked = _Asked(form, "kv8" in words or kv_dtype == "int8", "fp16" in words or kv_dtype == "float16", backend,
                   family)
    for rule in RULES:
        if rule.applies(asked):
            raise RequestError(rule.message.format(form=form, backend=backend, family=family), rule.fix)


# --- bytes --------------------------------------------------------------------------------------------------------


class CacheDims(Protocol):
    """The model sizes the cache depends on (a `manifest.ModelInfo` has them)."""

    @property
    def num_layers(self) -> int: ...
    @property
    def num_kv_heads(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...


@dataclass(frozen=True)
class CacheSizes:
    """`CacheDims` for a model known by its sizes alone (e.g. the PyTorch reference `bench` times)."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int


def tensor_shape(model: CacheDims, rows: int, slots: int) -> list[int]:
    """One cache tensor's layout, [rows, kv_heads, slots, head_dim]: the manifest's `KVCacheFormat.layout`."""
    return [int(rows), int(model.num_kv_heads), int(slots), int(model.head_dim)]


def slot_rows(model: CacheDims, rows: int) -> int:
    """A cache tensor of `rows` rows seen as rows of slots (what a pitched copy moves): rows x kv_heads."""
    return int(rows) * int(model.num_kv_heads)


def slot_bytes(model: CacheDims, dtype: str | np.dtype) -> int:
    """One slot of one such row: head_dim values."""
    return int(model.head_dim) * np.dtype(dtype).itemsize


def tensor_bytes(model: CacheDims, dtype: str | np.dtype, rows: int, slots: int) -> int:
    """One cache tensor (`tensor_shape`): the one formula every size below is made of."""
    return slot_rows(model, rows) * int(slots) * slot_bytes(model, dtype)


def bytes_per_position(model: CacheDims, dtype: str | np.dtype) -> int:
    """Keys and values of every layer for one position of one row."""
    return 2 * model.num_layers * tensor_bytes(model, dtype, 1, 1)


def cache_bytes(model: CacheDims, dtype: str | np.dtype, rows: int, capacity: int) -> int:
    """What a decoder for `rows` rows and `capacity` slots allocates for its cache (every layer's keys and values)."""
    return 2 * model.num_layers * tensor_bytes(model, dtype, rows, capacity)


def spare_bytes(model: CacheDims, dtype: str | np.dtype, rows: int, capacity: int) -> int:
    """The one extra cache tensor a device cache keeps to re-lay itself out at a bucket crossing (device copies must
    not overlap, so the wider layout is written into the spare, which then takes the tensor's place)."""
    return tensor_bytes(model, dtype, rows, capacity)


def decode_io_bytes(model: CacheDims, dtype: str | np.dtype, rows: int, capacity: int,
                    positions: int = 1) -> dict[str, int]:
    """The in_place decoder's inputs and outputs for a step of `positions` new positions per row on `capacity`
    slots, by tensor: hidden states (fp32), each KV output's new positions (`kv_output`, in the KV dtype), the mask
    [rows, capacity + positions] and position ids (int64), and the embeddings (fp32). TensorRT reserves them for one
    position at full capacity when a request opens, so decoding allocates nothing; a prefill chunk's and a verify
    pass's buffer holds them for their positions (`trt_decoder.prefill_layout`)."""
    rows, positions = int(rows), int(positions)
    hidden = rows * positions * int(model.hidden_size) * 4
    new = tensor_bytes(model, dtype, rows, positions)
    return {HIDDEN_STATES: hidden, **{kv_output(name): new for name in kv_names(model.num_layers)},
            ATTENTION_MASK: rows * (int(capacity) + positions) * 8, POSITION_IDS: rows * positions * 8,
            INPUTS_EMBEDS: hidden}


# --- growth -------------------------------------------------------------------------------------------------------

CAPACITY_BUCKET = 64  # slots; ~sqrt(2 x 576): balances per-step reads of unused slots against moves per crossing


def bucket(positions: int) -> int:
    """`positions` rounded up to a whole number of buckets (at least one)."""
    return max(1, -(-int(positions) // CAPACITY_BUCKET)) * CAPACITY_BUCKET


def request_capacity(positions: int, max_context: int) -> int:
    """Slots a request that may reach `positions` positions allocates: bucketed, clamped to the context."""
    return min(bucket(positions), int(max_context))


def first_view(capacity: int | None, max_context: int) -> tuple[int, int]:
    """(view slots, allocated slots) of a new cache sized for `capacity` positions (None: grows from one bucket)."""
    allocated = min(capacity or bucket(1), int(max_context))
    return min(bucket(1), allocated), allocated


def grow_view(needed: int, allocated: int, fixed: bool, max_context: int) -> tuple[int, int]:
    """(view slots, allocated slots) for a cache that must now hold `needed` positions: the view widens to the next
    bucket; a cache of fixed size keeps its last bucket partial (e.g. 639 slots) and refuses to outgrow itself; a
    growing one at least doubles. The one policy every KV-cache backend follows."""
    slots = min(bucket(needed), int(max_context))
    if fixed:
        if needed > allocated:
            raise InternalError(f"the KV cache was sized for {allocated} positions; {needed} are needed")
        return min(slots, allocated), allocated
    if slots > allocated:
        allocated = request_capacity(max(needed, 2 * allocated), max_context)
    return min(slots, allocated), allocated
