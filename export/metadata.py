"""What the manifest says besides the graphs: prompt format, special token ids, preprocessing, read from the
checkpoint's own files (never hard-coded ids: the tiny model's ids differ from the real ones)."""

from __future__ import annotations

import json
from pathlib import Path

from janus_edge.runtime.errors import CheckpointError
from janus_edge.runtime.manifest import Preprocessing, PromptFormat, SpecialTokens

from .components import IMAGE_SIZE

# The system prompt of DeepSeek's VLChatProcessor and of transformers' JanusProcessor (use_default_system_prompt).
DEFAULT_SYSTEM_PROMPT = ("You are a helpful language and vision assistant. You are able to understand the visual "
                         "content that the user provides, and assist the user with a variety of tasks using natural "
                         "language.")
ROLES = {"janus-pro": ("<|User|>", "<|Assistant|>"), "janus": ("User", "Assistant")}
PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def tokenizer_vocab(tokenizer_file: Path) -> dict[str, int]:
    try:
        data = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
        vocab = dict(data["model"]["vocab"])
        vocab.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{tokenizer_file} is not a tokenizers JSON file ({exc})",
                              "copy tokenizer.json from the checkpoint's download") from None
    return vocab


def token_id(vocab: dict[str, int], token: str) -> int:
    if token not in vocab:
        raise CheckpointError(f"the tokenizer has no {token!r} token, which Janus prompts need",
                              "use the tokenizer.json that came with the checkpoint")
    return vocab[token]


def prompt_format(family: str, processor: dict, vocab: dict[str, int], eos_id: int) -> PromptFormat:
    user, assistant = ROLES[family]
    eos_text = next((t for t, i in vocab.items() if i == eos_id), None)
    if eos_text is None:
        raise CheckpointError(f"the tokenizer has no token with the EOS id {eos_id}", "use the matching tokenizer.json")
    system = processor.get("system_prompt", DEFAULT_SYSTEM_PROMPT)
    if processor.get("use_default_system_prompt") is False:
        system = ""
    fmt = PromptFormat(system_prompt=system.strip(), user_role=user, assistant_role=assistant, separator="\n\n",
                       eos_text=eos_text, image_start=processor.get("image_start_tag", "<begin_of_image>"),
                       image_token=processor.get("image_tag", "<image_placeholder>"),
                       image_end=processor.get("image_end_tag", "<end_of_image>"))
    for token in (fmt.image_start, fmt.image_token, fmt.image_end):
        token_id(vocab, token)
    return fmt


def preprocessing(processor: dict) -> Preprocessing:
    size = processor.get("size", {}).get("height") if isinstance(processor.get("size"), dict) else None
    size = size or processor.get("image_size", IMAGE_SIZE)
    mean = list(processor.get("image_mean", [0.5, 0.5, 0.5]))
    std = list(processor.get("image_std", [0.5, 0.5, 0.5]))
    return Preprocessing(image_size=int(size), min_size=int(processor.get("min_size", 14)),
                         resample=PIL_FILTERS.get(processor.get("resample", 3), "bicubic"),
                         background=[int(m * 255) for m in mean],
                         rescale_factor=float(processor.get("rescale_factor", 1 / 255)), image_mean=mean,
                         image_std=std)


def special_tokens(text, vocab: dict[str, int], fmt: PromptFormat, image: int | None = None) -> SpecialTokens:
    """The manifest's token ids: BOS/EOS/PAD from the LLM's config `text`, the image markers from the tokenizer
    (`image`: the config's image token id where it has one)."""
    return SpecialTokens(bos=text.bos_token_id, eos=text.eos_token_id, pad=text.pad_token_id,
                         image=token_id(vocab, fmt.image_token) if image is None else image,
                         image_start=token_id(vocab, fmt.image_start), image_end=token_id(vocab, fmt.image_end))
