"""
Type stubs for NVIDIA TensorRT Python API.
"""

from typing import Any

# Re-export all types from tensorrt
from tensorrt import *

# Re-export all types from tensorrt_bindings
from tensorrt_bindings import *

__version__ = "10.13.0.35.1"
