"""Checking an export's files against the sha256 its manifest lists, without re-hashing gigabytes at every load.

Hashing the full-size 1B export takes about 20 s on the development CPU. A full check records, per file, the stat
fields that change whenever the content can have changed (size, mtime, ctime, inode, device) with the hash it
found; a later load re-hashes only the files whose stat differs from that record. ctime cannot be set back by a
user, so `touch -r` does not hide an edit. `janus-edge verify DIR` (`full=True`) hashes everything regardless.
The record lives in the user's cache directory ($JANUS_EDGE_CACHE_DIR, else $XDG_CACHE_HOME/janus-edge, else
~/.cache/janus-edge), one small JSON file per export directory; if it cannot be written, every load hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from .errors import ManifestError

RECORD_VERSION = 1


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    if os.environ.get("JANUS_EDGE_CACHE_DIR"):
        return Path(os.environ["JANUS_EDGE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "janus-edge"


def verify_files(directory: Path, files: dict[str, str], manifest_name: str, full: bool = False,
                 progress: Callable[[str], None] | None = None) -> int:
    """Raises `ManifestError` unless every file in `files` (relative path -> sha256) exists with that hash.

    Returns how many files were hashed (the rest matched the record of an earlier check)."""
    directory = Path(directory).resolve()
    record_path = cache_dir() / "verified" / f"{hashlib.sha256(str(directory).encode()).hexdigest()[:32]}.json"
    record = {} if full else _read_record(record_path)
    fresh, hashed = {}, 0
    for relative, expected in files.items():
        file = directory / relative
        if not file.is_file():
            raise ManifestError(f"{file} is missing from the export (the manifest lists it)",
                                "copy the whole export directory again, or re-run `janus-edge export`")
        stamp = _stamp(file)
        known = record.get(relative)
        if known is not None and known["stamp"] == stamp and known["sha256"] == expected:
            fresh[relative] = known
            continue
        if progress:
            progress(relative)
        hashed += 1
        if sha256_file(file) != expected:
            raise ManifestError(f"{file} changed after export (sha256 differs from {manifest_name})",
                                "restore the original file or re-run `janus-edge export`")
        fresh[relative] = {"stamp": stamp, "sha256": expected}
    _write_record(record_path, fresh)
    return hashed


def _stamp(file: Path) -> list[int]:
    st = file.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _read_record(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def _write_record(path: Path, files: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"version": RECORD_VERSION, "files": files}), encoding="utf-8")
        temporary.replace(path)
    except OSError:  # a read-only home or cache: every load hashes, which is slower but still safe
        pass
