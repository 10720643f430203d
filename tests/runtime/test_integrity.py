"""Loading re-hashes only files that changed since the last check, and a changed file is still refused."""

from __future__ import annotations

import os
import shutil

import pytest

from janus_edge.runtime.errors import ManifestError
from janus_edge.runtime.integrity import verify_files
from janus_edge.runtime.manifest import MANIFEST_NAME, load_manifest

from cli_helpers import run_cli


@pytest.fixture
def export_copy(export_hf, tmp_path, monkeypatch):
    monkeypatch.setenv("JANUS_EDGE_CACHE_DIR", str(tmp_path / "cache"))
    return shutil.copytree(export_hf, tmp_path / "export")


def _check(directory, full=False):
    return verify_files(directory, load_manifest(directory, verify=False).files, MANIFEST_NAME, full=full)


def test_second_load_hashes_nothing_and_a_full_check_hashes_everything(export_copy):
    files = len(load_manifest(export_copy, verify=False).files)
    assert _check(export_copy) == files
    assert _check(export_copy) == 0
    assert _check(export_copy, full=True) == files


def test_a_file_changed_after_the_check_is_refused(export_copy):
    _check(export_copy)
    target = export_copy / "lm_head.onnx"
    with open(target, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="lm_head.onnx changed after export"):
        _check(export_copy)


def test_an_edit_that_keeps_size_and_mtime_is_still_found(export_copy):
    _check(export_copy)
    target = export_copy / "lm_head.onnx"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `touch -r` would; ctime still moves
    with pytest.raises(ManifestError, match="changed after export"):
        _check(export_copy)


def test_a_truncated_file_is_refused_after_a_good_check(export_copy):
    _check(export_copy)
    target = export_copy / "vq_decoder.onnx"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(ManifestError, match="vq_decoder.onnx changed"):
        load_manifest(export_copy)


def test_verify_command(export_copy, monkeypatch):
    ok = run_cli("verify", export_copy, check_code=0)
    assert "files match" in ok.stdout
    (export_copy / "text_embedding.onnx").write_bytes(b"not a graph")
    bad = run_cli("verify", export_copy, check_code=2)
    assert bad.stderr.count("\n") == 1 and "text_embedding.onnx changed after export" in bad.stderr
