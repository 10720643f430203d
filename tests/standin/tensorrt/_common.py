"""Enums, Dims, Logger and nptype of the TensorRT stand-in (values as in TensorRT 10)."""

from __future__ import annotations

import os
import sys
from enum import IntEnum
from typing import Iterable

import numpy as np

VERSION = os.environ.get("JANUS_STANDIN_TRT_VERSION", "10.3.0.30")


class DataType(IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


class TensorIOMode(IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4
    TACTIC_SHARED_MEMORY = 5


class BuilderFlag(IntEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 4
    DISABLE_TIMING_CACHE = 5
    TF32 = 6
    SPARSE_WEIGHTS = 7
    WEIGHT_STREAMING = 21  # engines built with it are not capturable in a CUDA graph


class NetworkDefinitionCreationFlag(IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class IProgressMonitor:
    """Subclass it and override phase_start / step_complete / phase_finish (called by the builder)."""

    def __init__(self) -> None:
        pass


class Dims:
    """A shape; like TensorRT's, it converts from a tuple or list and indexes like one."""

    def __init__(self, shape: Iterable[int] = ()) -> None:
        self._shape = tuple(int(d) for d in shape)

    def __len__(self) -> int:
        return len(self._shape)

    def __getitem__(self, index: int) -> int:
        return self._shape[index]

    def __iter__(self):
        return iter(self._shape)

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, (Dims, tuple, list)) else NotImplemented

    def __repr__(self) -> str:
        return f"({', '.join(map(str, self._shape))})"


class ILogger:
    class Severity(IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity: "ILogger.Severity", msg: str) -> None:
        raise NotImplementedError


class Logger(ILogger):
    def __init__(self, min_severity: ILogger.Severity = ILogger.Severity.WARNING) -> None:
        ILogger.__init__(self)
        self.min_severity = min_severity
        self.messages: list[tuple[ILogger.Severity, str]] = []  # stand-in only: what TensorRT would have printed

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        self.messages.append((severity, msg))
        if severity <= self.min_severity:
            sys.stderr.write(f"[TRT stand-in] [{severity.name[0]}] {msg}\n")


_NPTYPES = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
            DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}
ONNX_TO_TRT = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 9: DataType.BOOL,
               2: DataType.UINT8, 7: DataType.INT64, 16: DataType.BF16}


def nptype(trt_type: DataType) -> type:
    if trt_type not in _NPTYPES:
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
    return _NPTYPES[trt_type]


class IStreamReader:
    """Subclass it, call `IStreamReader.__init__(self)` and implement `read(self, size: int) -> bytes`;
    `Runtime.deserialize_cuda_engine` then reads the plan through it in chunks (no second copy of the file)."""

    def __init__(self) -> None:
        pass
