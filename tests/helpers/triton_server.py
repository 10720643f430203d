"""Starts a stock `tritonserver` (the 2.51 binary and Python backend bundled in the nvidia-pytriton wheel) on
127.0.0.1 for the tests, with the backend's Python taken from the venv `make triton-env` builds from the system's
/usr/bin/python3.11 (the bundled backend stub links that interpreter's libpython3.11)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKEND_VENV = ROOT / ".venv" / "triton-backend"
SITE = BACKEND_VENV / "lib" / "python3.11" / "site-packages"
BUNDLE = SITE / "pytriton" / "tritonserver"


def missing() -> str | None:
    """Why the live Triton test cannot run here, or None."""
    if not (BUNDLE / "bin" / "tritonserver").is_file():
        return f"no tritonserver at {BUNDLE} (run `make triton-env`; it needs /usr/bin/python3.11)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def tritonserver(repository: Path, workdir: Path, startup_s: float = 120.0):
    """Yields (http_url, grpc_url) once every model is ready; kills the server afterwards."""
    backends = workdir / "backends" / "python"  # the backend directory with the stub for this Python version
    backends.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (backends / name).symlink_to(BUNDLE / "backends" / "python" / name)
    shutil.copy(BUNDLE / "python_backend_stubs" / "3.11" / "triton_python_backend_stub", backends)
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = {**os.environ, "PATH": f"{BACKEND_VENV / 'bin'}:{os.environ['PATH']}",
           "LD_LIBRARY_PATH": str(SITE / "nvidia_pytriton.libs")}
    log = open(workdir / "tritonserver.log", "w")
    server = subprocess.Popen(
        [str(BUNDLE / "bin" / "tritonserver"), f"--model-repository={repository}",
         f"--backend-directory={workdir / 'backends'}", "--http-address=127.0.0.1", f"--http-port={http}",
         "--grpc-address=127.0.0.1", f"--grpc-port={grpc}", "--metrics-address=127.0.0.1",
         f"--metrics-port={metrics}", "--exit-timeout-secs=5"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_s
        while not _ready(http):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tritonserver did not become ready:\n{(workdir / 'tritonserver.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(5)
        log.close()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
