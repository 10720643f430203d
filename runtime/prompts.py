"""Janus prompts as token ids, from the manifest's prompt format.

Understanding: BOS + system + sep + "<|User|>: " + images + question + sep + "<|Assistant|>:"; earlier answers
end with EOS. Generation: BOS + "<|User|>: {prompt}" + sep + "<|Assistant|>:" + "<begin_of_image>" (no system).
Each image becomes <begin_of_image> + 576 image tokens + <end_of_image>; the runtime writes the encoder's
embeddings over the 576 image tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .manifest import Manifest
from .tokenizer import TextTokenizer


@dataclass
class Turn:
    """One exchange of a conversation: a question (with its images) and, for earlier turns, the answer."""

    question: str
    images: list = field(default_factory=list)
    answer: str | None = None


class PromptBuilder:
    def __init__(self, manifest: Manifest, tokenizer: TextTokenizer):
        self.fmt, self.tokens, self.tokenizer = manifest.prompt, manifest.tokens, tokenizer
        self.num_image_tokens = manifest.model.num_image_tokens

    def _image_text(self) -> str:
        return self.fmt.image_start + self.fmt.image_token * self.num_image_tokens + self.fmt.image_end

    def understanding(self, turns: list[Turn]) -> list[int]:
        fmt = self.fmt
        text = fmt.system_prompt + fmt.separator if fmt.system_prompt else ""
        for i, turn in enumerate(turns):
            images = "".join(self._image_text() + "\n" for _ in turn.images)
            text += f"{fmt.user_role}: {images}{turn.question.strip()}{fmt.separator}{fmt.assistant_role}:"
            if i < len(turns) - 1:
                text += f" {(turn.answer or '').strip()}{fmt.eos_text}"
        return [self.tokens.bos] + self.tokenizer.encode(text)

    def generation(self, prompt: str) -> list[int]:
        fmt = self.fmt
        text = f"{fmt.user_role}: {prompt.strip()}{fmt.separator}{fmt.assistant_role}:{fmt.image_start}"
        return [self.tokens.bos] + self.tokenizer.encode(text)

    def unconditional(self, ids: list[int]) -> list[int]:
        """The CFG row: pad everywhere except BOS and <begin_of_image>, as the official recipe builds it."""
        keep = (self.tokens.bos, self.tokens.image_start)
        return [t if t in keep else self.tokens.pad for t in ids]
