"""TEST-ONLY STAND-IN for TensorRT's Python API (the subset janus-edge calls); see tests/standin/README.md.

Names and parameter names follow TensorRT 10 (checked against tensorrt-stubs by
tests/tensorrt/test_tensorrt_standin.py).
Building an "engine" validates the network and the profiles as TensorRT does and serialises the ONNX graph with
a header (TensorRT version, GPU, profiles, IO tensors); running it uses ONNX Runtime on the CPU.
"""

from __future__ import annotations

from ._build import Builder, IBuilderConfig, IHostMemory, INetworkDefinition, IOptimizationProfile, ITensor, \
    ITimingCache, OnnxParser, ParserError
from ._common import VERSION, BuilderFlag, DataType, Dims, ILogger, IProgressMonitor, IStreamReader, Logger, \
    MemoryPoolType, NetworkDefinitionCreationFlag, TensorIOMode, nptype
from ._engine import ExecutionContextAllocationStrategy, ICudaEngine, IExecutionContext, Runtime

__version__ = VERSION
STANDIN = True  # not in TensorRT: lets a test assert it is talking to the stand-in

__all__ = ["Builder", "BuilderFlag", "DataType", "Dims", "ExecutionContextAllocationStrategy", "IBuilderConfig",
           "ICudaEngine", "IExecutionContext", "IHostMemory", "ILogger", "INetworkDefinition", "IOptimizationProfile",
           "IProgressMonitor", "IStreamReader", "ITensor", "ITimingCache", "Logger", "MemoryPoolType",
           "NetworkDefinitionCreationFlag", "OnnxParser", "ParserError", "Runtime", "TensorIOMode", "nptype"]
