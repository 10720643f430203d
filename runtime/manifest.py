"""`janus_edge.json`: the one contract between export and the runtime.

Export writes it; the runtime reads nothing else to know what the graphs are, what they take and return, which
token ids and prompt format the model uses and how images are preprocessed. Every file it names carries a sha256
that `load` verifies, so a tampered or half-copied export fails loudly instead of producing garbage.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ManifestError
from .kv import IN_PLACE, KV_FORMS, ORT_GQA, cache_bytes, kv_input, kv_names, kv_output, kv_present  # noqa: F401
from .fieldtypes import type_problems
from .integrity import sha256_file, verify_files
from .jsonfile import read_object

MANIFEST_NAME = "janus_edge.json"
SCHEMA_VERSION = 2  # 2: in-place KV cache (decoder reads a cache of `capacity` slots, returns new positions only)
# The schema version an export of each KV form is written with: 3 keeps janus-edge versions that know only the
# in_place form (and would run an ort_gqa decoder as one) from loading an ort_gqa export.
FORM_SCHEMA_VERSIONS = {IN_PLACE: SCHEMA_VERSION, ORT_GQA: 3}


@dataclass
class Tensor:
    """One input or output of a graph: name, numpy dtype name and shape."""

    name: str
    dtype: str  # numpy dtype name: "float32", "float16", "int64"
    shape: list[int | str]  # ints, or symbolic names: batch, sequence, capacity, capacity_and_sequence,
    # past_and_sequence


@dataclass
class Graph:
    file: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    precision: str = "fp32"
    format: str = "onnx"  # "onnx" (ONNX Runtime) or "engine" (a TensorRT engine built by `janus-edge build`)


@dataclass
class KVCacheFormat:
    """How the decoder graph uses its KV cache (its dtype is that of the decoder's `past_key_values.*` inputs).

    "in_place": per layer the graph reads the cache `past_key_values.{i}.key/value` [batch, kv_heads, capacity,
    head_dim] and returns only the new positions' `new_key_values.{i}.key/value` [batch, kv_heads, sequence,
    head_dim] (names from `kv_names`, `kv_input`, `kv_output`), which the runtime writes into slots
    length..length+sequence-1. `attention_mask` [batch, capacity + sequence] marks valid cache slots and new
    positions.

    "ort_gqa": attention is ONNX Runtime's GroupQueryAttention, which writes the new positions itself: each cache
    tensor is bound as input `kv_input(name)` and output `kv_present(name)` [batch, kv_heads, capacity, head_dim]
    (one buffer), and `attention_mask` [batch, length + sequence] covers the filled slots and the new positions.
    ONNX Runtime only (janus-edge runs it on the CPU provider); the cache may be int8 (scales inside the graph).
    """

    form: str = IN_PLACE
    layout: str = "batch,kv_heads,capacity,head_dim"


@dataclass(frozen=True)
class ModelInfo:
    """The model's architecture: the one description of its sizes that export, `plan` and the runtime share.

    Export builds it from the checkpoint (its family's `model_info`), `plan` from a preset or a config;
    the runtime reads the first fields. The later ones let `plan` count every graph's parameters; they are None
    where the model has no such part (JanusFlow has no VQ model) or in exports written before they were recorded.
    """

    family: str  # janus-pro, janus, janusflow
    source_format: str  # hf, original
    hidden_size: int
    vocab_size: int
    codebook_size: int  # image tokens' vocabulary (0: JanusFlow, which generates latents)
    num_layers: int
    num_kv_heads: int
    head_dim: int
    image_size: int  # pixels per side of the square images both encoders see and the decoder produces
    num_image_tokens: int  # tokens per image: (image_size / patch_size) squared
    max_position_embeddings: int
    intermediate_size: int | None = None
    num_heads: int | None = None
    vision_hidden_size: int | None = None
    vision_layers: int | None = None
    vision_heads: int | None = None
    vision_intermediate_size: int | None = None
    codebook_dim: int | None = None
    vq_base_channels: int | None = None
    vq_channel_multiplier: list[int] | None = None
    vq_latent_channels: int | None = None
    vq_res_blocks: int | None = None
    # JanusFlow's rectified flow (None for models without one, and in exports written before they were recorded)
    latent_channels: int | None = None  # channels of the VAE latent the flow moves
    flow_channels: int | None = None  # width of the flow encoder and decoder (and of the skip features)
    flow_stride: int | None = None  # the flow encoder's patchifying conv: latent side per image-token grid side
    flow_layers_in_middle: int | None = None  # ConvNeXt blocks in each of their mid blocks
    vae_widths: list[int] | None = None  # the VAE decoder's block_out_channels
    vae_blocks: int | None = None  # its layers_per_block
    vae_attention: bool | None = None  # whether its mid block has attention

    @property
    def patch_size(self) -> int:
        """Pixels per side of one image token."""
        return self.image_size // math.isqrt(self.num_image_tokens)

    @property
    def latent_size(self) -> int:
        """Side of the flow's latent: the image-token grid times the flow encoder's stride (flow models only)."""
        return math.isqrt(self.num_image_tokens) * self.flow_stride

    @property
    def kv_names(self) -> list[str]:
        """The decoder's cache tensors, one key and one value per layer (see `kv_names`)."""
        return kv_names(self.num_layers)


@dataclass
class Limits:
    """The ranges the graphs were exported and checked for (TensorRT builds its profiles from these)."""

    max_batch: int
    max_context: int


@dataclass
class SpecialTokens:
    bos: int
    eos: int
    pad: int
    image: int
    image_start: int
    image_end: int


@dataclass
class PromptFormat:
    """Janus's chat format: BOS + system + sep + "<|User|>: ..." + sep + "<|Assistant|>:"; answers end with EOS."""

    system_prompt: str
    user_role: str
    assistant_role: str
    separator: str
    eos_text: str
    image_start: str
    image_token: str
    image_end: str


@dataclass
class Preprocessing:
    image_size: int
    min_size: int
    resample: str  # PIL filter name
    background: list[int]
    rescale_factor: float
    image_mean: list[float]
    image_std: list[float]


@dataclass
class GenerationDefaults:
    image_tokens: int  # positions a generated image takes: `ModelInfo.num_image_tokens` (JanusFlow: its flow tokens)
    cfg_weight: float = 5.0
    temperature: float = 1.0
    understanding_max_new_tokens: int = 512


@dataclass
class FlowSettings:
    """JanusFlow's rectified flow (family "janusflow"): Euler steps from noise at t=0 to the image latent at t=1.

    Step k feeds the flow encoder t = k / steps * time_scale and moves the latent by dt = 1 / steps, both rounded
    to `schedule_dtype` as DeepSeek's code does (bfloat16 there even when the model runs in fp32). The latent's
    shape is the flow_encoder graph's input; the default guidance weight is `generation.cfg_weight`.
    """

    steps: int = 30
    time_scale: float = 1000.0
    schedule_dtype: str = "bfloat16"  # "bfloat16" or "float32"


@dataclass
class Manifest:
    model: ModelInfo
    precision: str
    limits: Limits
    graphs: dict[str, Graph]
    tokens: SpecialTokens
    prompt: PromptFormat
    preprocessing: Preprocessing
    generation: GenerationDefaults
    tokenizer_file: str
    files: dict[str, str]  # relative path -> sha256, for every file of the export
    producer: dict[str, str] = field(default_factory=dict)
    kv_cache: KVCacheFormat = field(default_factory=KVCacheFormat)
    schema_version: int = SCHEMA_VERSION
    flow: FlowSettings | None = None  # JanusFlow exports only

    @property
    def kv_dtype(self) -> str:
        """The KV cache's numpy dtype name, as the decoder graph's cache inputs declare it."""
        first = kv_input(self.model.kv_names[0])
        return next(t.dtype for t in self.graphs["decoder"].inputs if t.name == first)

    def kv_cache_bytes(self, rows: int, positions: int) -> int:
        """Bytes of the decoder's KV cache holding `positions` positions for `rows` rows (keys and values, all
        layers), in the dtype the decoder's cache tensors have. Backends, `plan` and `bench` all size it here."""
        return cache_bytes(self.model, self.kv_dtype, rows, positions)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def write(self, directory: Path) -> None:
        (Path(directory) / MANIFEST_NAME).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        graphs = {
            name: Graph(file=g["file"], precision=g.get("precision", "fp32"), format=g.get("format", "onnx"),
                        inputs=[Tensor(**t) for t in g["inputs"]], outputs=[Tensor(**t) for t in g["outputs"]])
            for name, g in data["graphs"].items()
        }
        return cls(model=ModelInfo(**data["model"]), precision=data["precision"], limits=Limits(**data["limits"]),
                   graphs=graphs, tokens=SpecialTokens(**data["tokens"]), prompt=PromptFormat(**data["prompt"]),
                   preprocessing=Preprocessing(**data["preprocessing"]),
                   generation=GenerationDefaults(**data["generation"]), tokenizer_file=data["tokenizer_file"],
                   files=dict(data["files"]), producer=dict(data.get("producer", {})),
                   kv_cache=KVCacheFormat(**data["kv_cache"]), schema_version=data["schema_version"],
                   flow=FlowSettings(**data["flow"]) if data.get("flow") else None)


def load_manifest(directory: str | Path, verify: bool = True, full_check: bool = False) -> Manifest:
    """Reads and checks an export directory's manifest; with `verify`, checks every file's sha256 too (only the
    files changed since an earlier check are re-hashed, unless `full_check`; see integrity.py)."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ManifestError(f"export directory {directory} does not exist",
                            "pass the OUT_DIR of `janus-edge export`")
    data = read_object(path, ManifestError, (f"{directory} has no {MANIFEST_NAME}, so it is not a janus-edge export",
                       "run `janus-edge export MODEL_DIR OUT_DIR` and pass OUT_DIR"), "export's manifest",
                       "re-run `janus-edge export`")
    version = data.get("schema_version")
    if version == 1:
        raise ManifestError(f"{path} is a version-1 export, whose decoder copies its whole KV cache every step; "
                            f"this janus-edge reads version {SCHEMA_VERSION} (in-place KV cache)",
                            "re-export the checkpoint with this janus-edge (`janus-edge export`), then calibrate again")
    if version not in FORM_SCHEMA_VERSIONS.values():
        raise ManifestError(f"{path} has manifest schema version {version!r}; this janus-edge reads versions "
                            f"{', '.join(map(str, sorted(set(FORM_SCHEMA_VERSIONS.values()))))}",
                            "re-export with this janus-edge version, or install the matching one")
    try:
        manifest = Manifest.from_dict(data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ManifestError(f"{path} is missing or has malformed field {exc}", "re-run `janus-edge export`") from None
    if manifest.kv_cache.form not in KV_FORMS:
        raise ManifestError(f"{path} has a decoder with KV cache form {manifest.kv_cache.form!r}, which this "
                            f"janus-edge does not know (it knows {', '.join(KV_FORMS)})",
                            "re-export with this janus-edge version, or install the one that wrote it")
    if version != FORM_SCHEMA_VERSIONS[manifest.kv_cache.form]:
        raise ManifestError(f"{path} is schema version {version} but its decoder has the {manifest.kv_cache.form} KV "
                            f"form, written as version {FORM_SCHEMA_VERSIONS[manifest.kv_cache.form]}",
                            "re-run `janus-edge export`")
    if problems := type_problems(manifest):
        raise ManifestError(f"{path} has fields of the wrong type ({'; '.join(problems[:3])})",
                            "re-run `janus-edge export`")
    if verify:
        verify_files(directory, manifest.files, MANIFEST_NAME, full=full_check)
    return manifest
