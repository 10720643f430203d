"""The precision words and what each makes: one parser for `export --precision`, `calibrate --scheme` and
`plan --precision`, so a word describes the same export wherever it is written.

    fp32   every graph fp32 (an fp32 export); only alone
    fp16   every graph no other word covers: fp16 weights and activations (norms, softmax, GELU kept fp32)
    int8   the vision encoder and the VQ decoder: Q/DQ INT8 (symmetric, per-channel weights)
    w8/w4  the decoder, lm_head and generation_head: weight-only INT8 / block-wise INT4 (fp32 activations), and the
           text embedding table in fp16; w8 and w4 exclude each other
    kv8    the decoder's KV cache in INT8 (per-channel scales calibrated on the set's requests); exports with the
           ort_gqa KV form only (ONNX Runtime's GroupQueryAttention reads and writes it)

A graph no word covers stays fp32 ("w4" alone leaves the vision encoder fp32; "w4,fp16" makes it fp16). With fp16,
the weight-only graphs compute in fp16 too ("fp16,w4": INT4 weights, fp16 activations). `export` makes fp32 and fp16
alone; `calibrate` makes the others from an fp32 export (fp16 too, alone or combined), and w8, w4 and fp16 from an fp16
export as well ("w4" from fp16 makes "fp16,w4"). The KV cache follows the
decoder's activations: fp16 whenever the decoder computes in fp16 (fp16, fp16,w4, ...: what GPU and TensorRT
deployments want), int8 with kv8, fp32 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from janus_edge.runtime.errors import RequestError
from janus_edge.runtime.kv import check_support

WORDS = ("fp32", "fp16", "int8", "w8", "w4", "kv8")
INT8_GRAPHS = ("vision_encoder", "vq_decoder")
WEIGHT_ONLY_GRAPHS = ("decoder", "lm_head", "generation_head")
FP16_WITH_WEIGHT_ONLY = ("text_embedding",)  # TensorRT's parser has no INT8 Gather (calibration/calibrate.py)
EXPORT_WORDS = (("fp32",), ("fp16",))  # what `export` makes directly


@dataclass(frozen=True)
class Precision:
    words: tuple[str, ...]  # as given, e.g. ("int8", "w4")

    @property
    def text(self) -> str:
        """The form the manifest records ("int8,w4")."""
        return ",".join(self.words)

    def graph(self, name: str) -> str:
        """The precision graph `name` gets: the word that covers it, else fp16 if asked, else fp32."""
        words = set(self.words)
        if "int8" in words and name in INT8_GRAPHS:
            return "int8"
        weight_only = words & {"w8", "w4"}
        if weight_only and name in WEIGHT_ONLY_GRAPHS:
            return weight_only.pop()
        if weight_only and name in FP16_WITH_WEIGHT_ONLY:
            return "fp16"
        return "fp16" if "fp16" in words else "fp32"

    def activation_dtype(self, name: str) -> str:
        """The dtype graph `name` computes in: fp16 graphs, and weight-only graphs when fp16 is asked too, in fp16;
        the rest (fp32, INT8 Q/DQ, weight-only alone) in fp32."""
        scheme = self.graph(name)
        return "float16" if scheme == "fp16" or (scheme in ("w8", "w4") and "fp16" in self.words) else "float32"

    @property
    def kv_dtype(self) -> str:
        """The decoder's KV cache dtype: int8 with kv8, else the decoder's activation dtype."""
        return "int8" if "kv8" in self.words else self.activation_dtype("decoder")


def parse_precision(text: str) -> Precision:
    """'fp16', 'int8,w4', ... -> its `Precision` (the same whether export or calibrate makes it)."""
    words = tuple(w.strip() for w in str(text).split(",") if w.strip())
    if not words or any(w not in WORDS for w in words) or len(set(words)) < len(words) or \
            ("fp32" in words and len(words) > 1) or {"w8", "w4"} <= set(words):
        raise RequestError(f"precision {text!r} is not one janus-edge makes",
                           "use fp32 alone, or fp16, int8, w8, w4, kv8 or a combination such as int8,w4 "
                           "(w8 and w4 exclude each other)")
    check_support(precision_words=words)  # the words that make the cache (kv8 excludes fp16)
    return Precision(words)
