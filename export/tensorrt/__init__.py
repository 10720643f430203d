"""The TensorRT stage: an export -> engines for one target.

    targets.py        the deployment targets (memory, bandwidth, TensorRT version, workspace, context)
    profiles.py       optimisation profiles per graph (runtime/profiles.py's shapes) for a target and request size
    sampler_graph.py  the two small device-side sampler graphs built beside the exported ones
    check.py          `check-trt`: static check of every node against NVIDIA's parser tables (data/)
    build.py          `build`: one strongly typed engine per graph, and the engine directory's manifests

Everything here imports without TensorRT (it is imported lazily where an engine is built); the runtime side of
TensorRT lives in janus_edge.runtime.backends.
"""
