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
