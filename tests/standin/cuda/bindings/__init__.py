"""TEST-ONLY STAND-IN for `cuda.bindings` (cuda-python >= 12.6 layout): only `runtime` exists here."""
