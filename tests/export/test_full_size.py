"""Full-size Janus-Pro-1B config with random weights: checkpoint, export, compare, w4 calibration.

Slow (about 6 minutes and 16 GB of RAM on 2 cores) and kept out of CI: run with `make test-slow`.
"""

from __future__ import annotations

import pytest

from cli_helpers import run_cli

pytestmark = pytest.mark.slow


def test_janus_pro_1b_exports_and_matches_pytorch(tmp_path):
    model, export, w4 = tmp_path / "janus-pro-1b", tmp_path / "export", tmp_path / "w4"
    run_cli("tiny", model, "--config", "janus-pro-1b", check_code=0)
    run_cli("export", model, export, check_code=0)
    assert (export / "decoder.onnx.data").stat().st_size > 4e9  # weights past 2 GB live in external data
    result = run_cli("compare", model, export, check_code=0)
    assert "0 failed" in result.stdout
    run_cli("calibrate", export, w4, "--scheme", "w4", check_code=0)
    assert sum(p.stat().st_size for p in w4.glob("decoder.onnx*")) < 0.2 * (export / "decoder.onnx.data").stat().st_size
