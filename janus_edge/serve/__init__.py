"""Serving: an OpenAI-compatible HTTP server (`janus-edge serve`) and a Triton Inference Server model repository
(`janus-edge triton-repo`), both over the light runtime. FastAPI and uvicorn come with the `serve` extra.

One worker thread owns the model (`scheduler.py`); HTTP handlers only validate, queue and wait.
"""
