"""The parts of `janus-edge gpu-check` (janus_edge/gpu_check.py runs them in order):

    machine.py     the GPU, driver and library versions; every reason this machine cannot run engines; the target
    engines.py     each engine against ONNX Runtime on the CPU, per output
    forced.py      both pipelines teacher-forced against ONNX Runtime; CUDA-graph replay against plain decoding
    measure.py     prefill and decode-step time, device memory taken, and plan's prediction
    tolerances.py  the one table of how far each precision may be from the CPU
    report.py      the JSON report and its one-screen summary
"""
