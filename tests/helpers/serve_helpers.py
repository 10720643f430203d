"""A live `janus-edge serve` subprocess on a free 127.0.0.1 port, and small HTTP helpers with timeouts."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message

import numpy as np
from PIL import Image

from triton_server import free_port

KEY = "test-key"


@contextlib.contextmanager
def serve(export_dir, *options: str, startup_s: float = 90.0):
    """Yields the base URL (http://127.0.0.1:PORT) once /health answers; stops the server afterwards."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "janus_edge", "serve", str(export_dir), "--port", str(port),
                               "--api-key", KEY, "--log-level", "warning", *map(str, options)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while request("GET", f"{base}/health")[0] != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"the server did not start:\n{server.communicate(timeout=10)[0]}")
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
    assert server.returncode in (0, -15), server.stdout.read()


def request(method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None,
            key: str | None = KEY, timeout: float = 60.0) -> tuple[int, dict | bytes, Message | dict]:
    """(status, parsed JSON or raw bytes, headers (case-insensitive)); never raises for HTTP errors, 0 when nothing answers."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    all_headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {}),
                   **(headers or {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, all_headers, method=method),
                                    timeout=timeout) as response:
            status, raw, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), error.headers
    except OSError:
        return 0, b"", {}
    try:
        return status, json.loads(raw), got
    except ValueError:
        return status, raw, got


def png_bytes(seed: int, size=(48, 64)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def metric(base: str, name: str) -> float:
    """The value of one unlabelled sample on /metrics."""
    status, text, _ = request("GET", f"{base}/metrics")
    assert status == 200
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not on /metrics")
