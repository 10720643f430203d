"""Export: a Janus checkpoint on disk -> ONNX graphs + one manifest (janus_edge.json)."""
