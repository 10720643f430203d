"""Bad input, counted: each case below is one distinct mistake a user can make, run through the real CLI
(`python -m janus_edge ...`) where a command takes it and through the Python API where that is where it enters.

Every case must end in a typed user error (a `JanusEdgeError` subclass, never `InternalError`) whose message
names the problem and a fix; from the CLI: exit code 2, exactly one stderr line, no traceback, and nothing new
under the test's directory (no output or half-written staging directory). tests/runtime/test_runtime_errors.py holds
further cases (a text file named .png, missing graph files, n over the exported max batch, max_new_tokens 0,
a conversation without a question); tests/tensorrt/test_tensorrt_standin.py the refusals of foreign or broken engines.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from janus_edge.runtime import JanusRuntime, Turn
from janus_edge.runtime.errors import (BackendError, CheckpointError, ImageError, InternalError, JanusEdgeError,
                                       ManifestError, RequestError)
from png_files import huge_png_header, png_of


class Workspace:
    """Builds each case's bad input under `root` from the session's tiny checkpoint and export, linking the
    files a case leaves alone (symlinks; a changed file is unlinked and written anew, never written through)."""

    def __init__(self, root: Path, export: Path, checkpoint: Path, runtime):
        self.root, self.export_dir, self.checkpoint_dir, self.runtime = root, export, checkpoint, runtime
        self.out = root / "out"  # where commands that write are pointed; it must not appear

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    def linked_copy(self, source: Path, name: str) -> Path:
        copy = self.root / name
        shutil.copytree(source, copy, copy_function=os.symlink)
        return copy

    def export(self, edit_manifest: Callable[[dict], object] | None = None, files: dict | None = None) -> Path:
        """A linked copy of the export with `files` (name -> bytes) replaced and the manifest edited."""
        copy = self.linked_copy(self.export_dir, "export")
        for name, data in (files or {}).items():
            self.file(f"export/{name}", data)
        if edit_manifest:
            data = json.loads((copy / "janus_edge.json").read_text())
            edited = edit_manifest(data)
            self.file("export/janus_edge.json", edited if isinstance(edited, str) else json.dumps(data))
        return copy

    def checkpoint(self, remove: tuple = (), files: dict | None = None) -> Path:
        copy = self.linked_copy(self.checkpoint_dir, "checkpoint")
        for name in remove:
            (copy / name).unlink()
        for name, data in (files or {}).items():
            self.file(f"checkpoint/{name}", data)
        return copy

    def weights(self, change: Callable[[dict], None]) -> bytes:
        from safetensors.numpy import load_file, save

        tensors = load_file(self.checkpoint_dir / "model.safetensors")
        change(tensors)
        return save(tensors)

    def listing(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*")}


@dataclass(frozen=True)
class Case:
    id: str
    error: type  # the JanusEdgeError subclass
    words: str  # what the one line must say (a substring)
    cli: Callable[[Workspace], list] | None = None  # argv after `python -m janus_edge`
    api: Callable[[Workspace], object] | None = None


def _engine_manifest(data: dict) -> None:
    for graph in data["graphs"].values():
        graph["format"] = "engine"


def _drop_first_weight(tensors: dict) -> None:
    del tensors[sorted(tensors)[0]]


def _shrink_a_matrix(tensors: dict) -> None:
    name = next(n for n in sorted(tensors) if tensors[n].ndim == 2)
    tensors[name] = tensors[name][:-1]


def _truncated(path: Path) -> bytes:
    data = path.read_bytes()
    return data[:len(data) // 2]


def _export(checkpoint: Path, out: Path):
    from janus_edge.export.exporter import export  # what `janus-edge export` runs, without starting a process

    return export(checkpoint, out, log=lambda message: None)


def _understand(ws: Workspace, *options) -> list:
    return ["understand", ws.export_dir, "--question", "What is this?", "--max-new-tokens", "2", *options]


def _generate(ws: Workspace, *options) -> list:
    return ["generate", ws.export_dir, "--prompt", "a red fox", "-n", "1", "--out", ws.out, *options]


RNG_BYTES = np.random.default_rng(0).bytes(2048)
PHOTO = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8))

CASES = [
    # --- images -------------------------------------------------------------------------------------------------
    Case("image-random-bytes", ImageError, "is not an image PIL can read",
         cli=lambda ws: _understand(ws, "--image", ws.file("noise.jpg", RNG_BYTES))),
    Case("image-zero-byte-file", ImageError, "is not an image PIL can read",
         cli=lambda ws: _understand(ws, "--image", ws.file("empty.png", b""))),
    Case("image-truncated-png", ImageError, "truncated or corrupt",
         cli=lambda ws: _understand(ws, "--image", ws.file("cut.png", png_of(PHOTO)[:300]))),
    Case("image-decompression-bomb", ImageError, "decompression-bomb guard",
         cli=lambda ws: _understand(ws, "--image", ws.file("bomb.png", huge_png_header(20000, 20000)))),
    Case("image-over-the-pixel-limit", ImageError, "9000x9000 pixels, over the 64,000,000-pixel limit",
         cli=lambda ws: _understand(ws, "--image", ws.file("big.png", huge_png_header(9000, 9000)))),
    Case("image-path-missing", ImageError, "does not exist",
         cli=lambda ws: _understand(ws, "--image", ws.root / "nope.jpg")),
    Case("image-path-is-a-directory", ImageError, "is a directory",
         cli=lambda ws: _understand(ws, "--image", ws.root)),
    Case("image-array-zero-size", ImageError, "is empty (4x0 pixels)",
         api=lambda ws: ws.runtime.understand([np.zeros((0, 4, 3), np.uint8)], "What?", max_new_tokens=1)),
    Case("image-array-float-dtype", ImageError, "must be HxW, HxWx3 or HxWx4 uint8, got float32",
         api=lambda ws: ws.runtime.understand([np.full((8, 8, 3), np.nan, np.float32)], "What?")),
    Case("image-array-two-channels", ImageError, "got uint8 (8, 8, 2)",
         api=lambda ws: ws.runtime.understand([np.zeros((8, 8, 2), np.uint8)], "What?")),
    Case("image-float-mode-nan", ImageError, "float image holding NaN or infinity",
         api=lambda ws: ws.runtime.understand([Image.fromarray(np.full((8, 8), np.nan, np.float32))], "What?")),
    Case("image-unconvertible-mode", ImageError, "has mode La, which PIL cannot convert to RGB",
         api=lambda ws: ws.runtime.understand([Image.new("La", (8, 8))], "What?")),
    Case("image-of-a-wrong-type", ImageError, "an image is of type int",
         api=lambda ws: ws.runtime.understand([42], "What?")),
    # --- prompts and request options ----------------------------------------------------------------------------
    Case("question-empty-without-images", RequestError, "the question is empty",
         cli=lambda ws: ["understand", ws.export_dir, "--question", "  "]),
    Case("prompt-empty", RequestError, "the prompt is empty",
         cli=lambda ws: ["generate", ws.export_dir, "--prompt", "", "--out", ws.out]),
    Case("question-over-the-context", RequestError, "over the exported context of 4096",
         cli=lambda ws: ["understand", ws.export_dir, "--question", "word " * 5000]),
    Case("question-invalid-unicode", RequestError, "the question is not valid Unicode text",
         cli=lambda ws: ["understand", ws.export_dir, "--question", b"caf\xe9 au lait?"]),
    Case("prompt-not-text", RequestError, "the prompt is a NoneType, not text",
         api=lambda ws: ws.runtime.generate_images(None, n=1)),
    Case("question-writes-image-tokens", RequestError, "image tokens",
         cli=lambda ws: _understand(ws)[:3] + ["What is <image_placeholder>?"]),
    Case("max-new-tokens-negative", RequestError, "max_new_tokens is -3",
         cli=lambda ws: _understand(ws, "--max-new-tokens", "-3")),
    Case("max-new-tokens-over-the-context", RequestError, "max_new_tokens is 1000000",
         cli=lambda ws: _understand(ws, "--max-new-tokens", "1000000")),
    Case("max-new-tokens-not-an-integer", RequestError, "max_new_tokens is 2.5",
         api=lambda ws: ws.runtime.understand([], "Hi", max_new_tokens=2.5)),
    Case("temperature-negative", RequestError, "temperature is -1.0",
         cli=lambda ws: _understand(ws, "--temperature", "-1")),
    Case("temperature-nan", RequestError, "temperature is nan",
         cli=lambda ws: _generate(ws, "--temperature", "nan")),
    Case("temperature-infinite", RequestError, "temperature is inf",
         api=lambda ws: ws.runtime.understand([], "Hi", temperature=math.inf)),
    Case("temperature-subnormal", RequestError, "too small to sample with",
         cli=lambda ws: _understand(ws, "--temperature", "1e-300")),
    Case("top-p-over-one", RequestError, "top_p is 1.5",
         cli=lambda ws: _understand(ws, "--top-p", "1.5", "--temperature", "1")),
    Case("top-p-zero", RequestError, "top_p is 0.0",
         cli=lambda ws: _generate(ws, "--top-p", "0")),
    Case("top-p-nan", RequestError, "top_p is nan",
         api=lambda ws: ws.runtime.understand([], "Hi", temperature=1.0, top_p=math.nan)),
    Case("top-k-zero", RequestError, "top_k is 0",
         cli=lambda ws: _understand(ws, "--top-k", "0")),
    Case("cfg-weight-nan", RequestError, "cfg_weight is nan",
         cli=lambda ws: _generate(ws, "--cfg-weight", "nan")),
    Case("cfg-weight-huge", RequestError, "cfg_weight is 1000000000.0",
         cli=lambda ws: _generate(ws, "--cfg-weight", "1e9")),
    Case("cfg-weight-negative", RequestError, "cfg_weight is -1.0",
         api=lambda ws: ws.runtime.generate_images("a cat", n=1, cfg_weight=-1.0)),
    Case("seed-negative", RequestError, "seed is -1",
         cli=lambda ws: _generate(ws, "--seed", "-1")),
    Case("seed-not-an-integer", RequestError, "seed is 1.5",
         api=lambda ws: ws.runtime.understand([], "Hi", temperature=1.0, seed=1.5)),
    Case("images-zero", RequestError, "n=0 images need 0 rows",
         cli=lambda ws: ["generate", ws.export_dir, "--prompt", "a cat", "-n", "0", "--out", ws.out]),
    Case("images-not-an-integer", RequestError, "n is 2.5",
         api=lambda ws: ws.runtime.generate_images("a cat", n=2.5)),
    Case("conversations-over-the-max-batch", RequestError, "9 conversations in one batch, over the exported max",
         api=lambda ws: ws.runtime.understand_batch([[Turn("Hi")]] * 9, max_new_tokens=1)),
    # --- checkpoints (export) -----------------------------------------------------------------------------------
    Case("checkpoint-directory-missing", CheckpointError, "does not exist",
         cli=lambda ws: ["export", ws.root / "no-model", ws.out]),
    Case("checkpoint-config-missing", CheckpointError, "config.json is missing",
         cli=lambda ws: ["export", ws.checkpoint(remove=("config.json",)), ws.out]),
    Case("checkpoint-config-corrupt", CheckpointError, "config.json is not valid JSON",
         cli=lambda ws: ["export", ws.checkpoint(files={"config.json": "{\"model_type\": "}), ws.out]),
    Case("checkpoint-weights-missing", CheckpointError, "has no weight files",
         api=lambda ws: _export(ws.checkpoint(remove=("model.safetensors",)), ws.out)),
    Case("checkpoint-weights-truncated", CheckpointError, "cannot be read as safetensors",
         api=lambda ws: _export(ws.checkpoint(files={
             "model.safetensors": _truncated(ws.checkpoint_dir / "model.safetensors")}), ws.out)),
    Case("checkpoint-tensor-missing", CheckpointError, "1 missing weights",
         api=lambda ws: _export(ws.checkpoint(files={"model.safetensors": ws.weights(_drop_first_weight)}),
                                        ws.out)),
    Case("checkpoint-tensor-wrong-shape", CheckpointError, "1 tensors whose shape disagrees with config.json",
         api=lambda ws: _export(ws.checkpoint(files={"model.safetensors": ws.weights(_shrink_a_matrix)}),
                                        ws.out)),
    # --- exports and manifests ----------------------------------------------------------------------------------
    Case("export-directory-missing", ManifestError, "does not exist",
         cli=lambda ws: ["verify", ws.root / "no-export"]),
    Case("export-manifest-missing", ManifestError, "has no janus_edge.json",
         cli=lambda ws: ["verify", ws.file("not-an-export/readme.txt", "hello").parent]),
    Case("export-graph-truncated", ManifestError, "lm_head.onnx changed after export",
         cli=lambda ws: ["verify", ws.export(files={"lm_head.onnx": _truncated(ws.export_dir / "lm_head.onnx")})]),
    Case("export-sha-changed-in-manifest", ManifestError, "vq_decoder.onnx changed after export",
         cli=lambda ws: _understand(ws)[:1] + [ws.export(lambda m: m["files"].update(
             {"vq_decoder.onnx": "0" * 64}))] + _understand(ws)[2:]),
    Case("export-graph-not-onnx", BackendError, "lm_head.onnx cannot be loaded by ONNX Runtime",
         api=lambda ws: JanusRuntime.load(ws.export(files={"lm_head.onnx": RNG_BYTES}), verify=False).understand(
             [], "Hi", max_new_tokens=1)),
    Case("export-tokenizer-corrupt", ManifestError, "cannot be read as a tokenizer",
         cli=lambda ws: ["understand", ws.export(lambda m: m["files"].update(
             {"tokenizer.json": hashlib.sha256(b"{").hexdigest()}), files={"tokenizer.json": "{"}),
             "--question", "Hi"]),
    Case("manifest-newer-schema", ManifestError, "manifest schema version 4; this janus-edge reads versions 2, 3",
         cli=lambda ws: ["verify", ws.export(lambda m: m.update(schema_version=4))]),
    Case("manifest-version-1", ManifestError, "is a version-1 export",
         cli=lambda ws: ["verify", ws.export(lambda m: m.update(schema_version=1))]),
    Case("manifest-corrupt-json", ManifestError, "is not valid JSON",
         cli=lambda ws: ["understand", ws.export(lambda m: json.dumps(m)[:-20]), "--question", "Hi"]),
    Case("manifest-wrong-type", ManifestError, "limits.max_batch: expected int, got '8'",
         cli=lambda ws: _generate(ws)[:1] + [ws.export(lambda m: m["limits"].update(max_batch="8"))]
         + _generate(ws)[2:]),
    Case("manifest-graphs-not-an-object", ManifestError, "is missing or has malformed field",
         cli=lambda ws: ["verify", ws.export(lambda m: m.update(graphs=list(m["graphs"])))]),
    Case("manifest-field-missing", ManifestError, "is missing or has malformed field 'tokens'",
         cli=lambda ws: ["verify", ws.export(lambda m: m.pop("tokens"))]),
    # --- engines and backends -----------------------------------------------------------------------------------
    Case("engine-directory-without-tensorrt", BackendError, "TensorRT is not installed",
         cli=lambda ws: ["understand", ws.export(_engine_manifest), "--question", "Hi"]),
    Case("graph-formats-mixed", RequestError, "mixes graph formats ['engine', 'onnx']",
         cli=lambda ws: ["understand", ws.export(lambda m: m["graphs"]["lm_head"].update(format="engine")),
                         "--question", "Hi"]),
    Case("provider-not-available", BackendError, "ONNX Runtime provider NoSuchExecutionProvider is not available",
         cli=lambda ws: _understand(ws, "--provider", "NoSuchExecutionProvider")),
    # --- our CLI options ----------------------------------------------------------------------------------------
    Case("plan-precision-unknown", RequestError, "precision 'fp8' is not one janus-edge makes",
         cli=lambda ws: ["plan", "--model", "janus-pro-1b", "--target", "orin-nano-8gb", "--precision", "fp8"]),
    Case("calibrate-scheme-unknown", RequestError, "precision 'int3' is not one janus-edge makes",
         cli=lambda ws: ["calibrate", ws.export_dir, ws.out, "--scheme", "int3"]),
    Case("calibrate-schemes-conflict", RequestError, "exclude each other",
         cli=lambda ws: ["calibrate", ws.export_dir, ws.out, "--scheme", "w8,w4"]),
    Case("calibrate-images-missing", RequestError, "--images",
         cli=lambda ws: ["calibrate", ws.export_dir, ws.out, "--scheme", "int8", "--images", ws.root / "none"]),
    Case("calibrate-prompts-missing", RequestError, "--prompts",
         cli=lambda ws: ["calibrate", ws.export_dir, ws.out, "--scheme", "int8", "--prompts", ws.root / "no.txt"]),
    Case("plan-model-directory-missing", CheckpointError, "config.json is missing",
         cli=lambda ws: ["plan", "--model", ws.root / "no-model", "--target", "thor"]),
    Case("export-max-batch-zero", RequestError, "--max-batch 0",
         cli=lambda ws: ["export", ws.checkpoint_dir, ws.out, "--max-batch", "0"]),
    Case("export-over-an-unrelated-directory", RequestError, "already exists and is not an earlier janus-edge",
         cli=lambda ws: ["export", ws.checkpoint_dir, ws.file("mine/notes.txt", "keep me").parent]),
    Case("generate-out-is-a-file", RequestError, "is a file",
         cli=lambda ws: _generate(ws)[:-1] + [ws.file("taken.png", b"x")]),
    Case("generate-steps-on-janus-pro", RequestError, "apply to JanusFlow exports only",
         cli=lambda ws: _generate(ws, "--steps", "3")),
    Case("generate-initial-latents-missing", RequestError, "cannot be read as a .npy array",
         cli=lambda ws: _generate(ws, "--initial-latents", ws.root / "none.npy")),
    Case("tiny-family-and-config-conflict", RequestError, "is not a janusflow model",
         cli=lambda ws: ["tiny", ws.out, "--family", "janusflow", "--config", "janus-pro-1b"]),
    Case("bench-stage-unknown", RequestError, "unknown stages warp",
         cli=lambda ws: ["bench", ws.export_dir, "--stages", "decode,warp"]),
]


@pytest.fixture
def workspace(tmp_path, export_hf, tiny_hf, runtime) -> Workspace:
    return Workspace(tmp_path, export_hf, tiny_hf, runtime)


def run_cli(*args) -> subprocess.CompletedProcess:
    """`python -m janus_edge ARGS`; bytes arguments go through as raw bytes (invalid UTF-8 included)."""
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    return subprocess.run([sys.executable, "-m", "janus_edge", *argv], capture_output=True, timeout=600)


def test_the_table_counts_at_least_25_distinct_bad_inputs():
    assert len({case.id for case in CASES}) == len(CASES) >= 25
    assert all(case.cli or case.api for case in CASES)
    assert all(issubclass(case.error, JanusEdgeError) and not issubclass(case.error, InternalError)
               for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_typed_line(case: Case, workspace: Workspace):
    if case.api:
        with pytest.raises(JanusEdgeError) as info:
            case.api(workspace)
        assert type(info.value) is case.error and case.words in info.value.message and info.value.hint
    if case.cli:
        argv = case.cli(workspace)
        before = workspace.listing()
        result = run_cli(*argv)
        stderr = result.stderr.decode("utf-8", "replace")
        assert result.returncode == 2, stderr
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert case.words in stderr and "; fix: " in stderr, stderr
        assert workspace.listing() == before  # nothing written, nothing half-written, nothing deleted
    assert not workspace.out.exists() and not list(workspace.root.glob(".*partial*"))
