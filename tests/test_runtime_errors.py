"""Bad input gets one clear, typed error (exit code 2 from the CLI); odd but valid images are converted."""

from __future__ import annotations

import io
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from janus_edge.runtime import JanusRuntime
from janus_edge.runtime.errors import ImageError, ManifestError, RequestError
from janus_edge.runtime.images import load_image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: what a decompression bomb looks like before decoding."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8))


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is text, not a picture")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


def test_truncated_png(tmp_path, photo):
    path = tmp_path / "cut.png"
    data = _png(photo)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_huge_png_header(20000, 20000))
    with pytest.raises(ImageError, match="decompression-bomb guard"):
        load_image(path)
    path.write_bytes(_huge_png_header(9000, 9000))  # under PIL's own limit, over ours
    with pytest.raises(ImageError, match="9000x9000"):
        load_image(path)


def test_missing_image_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "CMYK", "I;16", "LA", "1"])
def test_image_modes_are_converted(photo, mode):
    if mode == "I;16":
        image = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    else:
        image = photo.convert(mode)
    rgb = load_image(_png(image) if mode != "CMYK" else image)
    assert rgb.mode == "RGB" and rgb.size == photo.size
    if mode == "I;16":  # 16-bit values are scaled to 8 bits, not clipped to white
        np.testing.assert_allclose(np.asarray(rgb)[..., 0], np.asarray(photo.convert("L")), atol=1)


def test_exif_orientation_is_honoured(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue()).size == (120, 200)


def test_prompt_over_the_context_says_by_how_much(runtime):
    with pytest.raises(RequestError, match=r"over the\s+exported context|over the exported context") as info:
        runtime.understand([], "word " * 5000, max_new_tokens=4)
    assert "tokens" in str(info.value)
    with pytest.raises(RequestError, match="over the exported context"):
        runtime.generate_images("word " * 4000, n=1)


def test_n_above_the_exported_max_batch(runtime):
    with pytest.raises(RequestError, match="n=5 images need 10 rows"):
        runtime.generate_images("a cat", n=5)


def test_tampered_and_missing_files(tmp_path, export_hf):
    tampered = shutil.copytree(export_hf, tmp_path / "tampered")
    with open(tampered / "lm_head.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match="changed after export"):
        JanusRuntime.load(tampered)
    missing = shutil.copytree(export_hf, tmp_path / "missing")
    (missing / "decoder.onnx").unlink()
    with pytest.raises(ManifestError, match="decoder.onnx is missing"):
        JanusRuntime.load(missing)
    with pytest.raises(ManifestError, match="not a janus-edge export"):
        JanusRuntime.load(tmp_path)


def test_cli_errors_exit_2_without_traceback(tmp_path, export_hf):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a-not-really")
    result = run_cli("understand", export_hf, "--image", bad, "--question", "hi")
    assert result.returncode == 2 and "not an image" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("generate", export_hf, "--prompt", "cat", "-n", "9", "--out", tmp_path / "o")
    assert result.returncode == 2 and "rows" in result.stderr and "Traceback" not in result.stderr


def test_request_mistakes_are_user_errors(runtime, photo):
    with pytest.raises(RequestError, match="max_new_tokens is 0"):
        runtime.understand([photo], "What is this?", max_new_tokens=0)
    with pytest.raises(RequestError, match="has no question"):
        runtime.understand_batch([[]])
    with pytest.raises(ImageError, match="empty"):
        load_image(np.zeros((0, 4, 3), dtype=np.uint8))
    assert load_image(np.zeros((4, 5, 1), dtype=np.uint8)).size == (5, 4)


def test_a_single_image_path_is_accepted(runtime, photo, tmp_path):
    path = tmp_path / "photo.png"
    photo.save(path)
    assert runtime.understand(path, "What is this?", max_new_tokens=3).token_ids == \
        runtime.understand([path], "What is this?", max_new_tokens=3).token_ids
