"""TEST-ONLY STAND-IN for cuda-python (never installed with janus-edge): see tests/standin/README.md."""
