"""INT8 with activations: explicit Q/DQ, symmetric (zero points 0), per-channel weights, for the vision encoder and
the VQ decoder. Only MatMul and Conv are quantised: TensorRT fuses Q/DQ around exactly those, and quantising
everything else costs accuracy for no speed (measured on SigLIP, shared/REFERENCE.md section 5)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from janus_edge.export.onnx_io import has_side_file, load_graph


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)

    def rewind(self):  # not needed for MinMax, part of the reader interface
        pass


def quantize_int8(source: Path, feeds: list[dict[str, np.ndarray]]):
    """Returns the Q/DQ model proto of `source` calibrated on `feeds` (MinMax ranges)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared, output = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        large = has_side_file(source)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True, save_as_external_data=large)
        quantize_static(str(prepared), str(output), _Reader(feeds), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Conv"], per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, use_external_data_format=large,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "QuantizeBias": False})  # TensorRT has no INT32 DequantizeLinear
        return load_graph(output)
