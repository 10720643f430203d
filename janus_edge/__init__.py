"""janus-edge: Janus-Pro from a checkpoint to ONNX graphs, TensorRT engines and a light runtime."""

__version__ = "0.1.0"
