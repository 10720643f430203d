"""The precision schemes the session's `calibrated` fixture (tests/conftest.py) makes one export each of."""

SCHEMES = ["int8", "w8", "w4", "fp16", "int8,w4", "fp16,w4"]
