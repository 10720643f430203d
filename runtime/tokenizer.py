"""Text tokenisation with the `tokenizers` library from the export's tokenizer.json."""

from __future__ import annotations

from pathlib import Path

from .errors import ManifestError


class TextTokenizer:
    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception for unreadable files
            raise ManifestError(f"{path} cannot be read as a tokenizer ({exc})", "re-run `janus-edge export`") from None

    def encode(self, text: str) -> list[int]:
        """Ids of `text` as written: special tokens in it are recognised, none are added."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)


class IncrementalText:
    """Text of a growing token sequence, decoded a few tokens at a time (not the whole answer per token).

    Keeps the last emitted boundary and decodes only the tokens since the one before it (so merges across the
    boundary, e.g. a leading space, come out right); a piece ending in U+FFFD is half a UTF-8 character and is
    held back until its other bytes arrive. `flush()` at the end gives what is still held back, so the pieces
    always join into the decoded text of the whole sequence.
    """

    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix, self.read = 0, 0  # ids[prefix:read] were decoded into text already emitted

    def add(self, token: int) -> str:
        """The new text after `token`, or "" while it is incomplete."""
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        text = self.tokenizer.decode(self.ids[self.prefix:])
        if len(text) <= len(before) or text.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(before):]

    def flush(self) -> str:
        """The text still held back when the sequence ends: a half character, decoded as U+FFFD as `decode` does."""
        before = self.tokenizer.decode(self.ids[self.prefix:self.read])
        text = self.tokenizer.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return text[len(before):]
