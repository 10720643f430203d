"""Triton Inference Server Python-backend models over the runtime. The `model.py` files that `janus-edge
triton-repo` writes are one line each, `from janus_edge.serve.triton_models import X as TritonPythonModel`, so the
logic lives here, versioned with the runtime. Imports nothing of Triton at module level: `triton_python_backend_utils`
exists only inside the backend's stub process.

Tensors (all optional but the text): QUESTION / PROMPT BYTES [1]; IMAGES BYTES [-1] (encoded image files);
MAX_TOKENS INT32 [1]; N INT32 [1]; TEMPERATURE, TOP_P, CFG_WEIGHT FP32 [1]; SEED INT64 [1]; generation's
SPECULATIVE BYTES [1] (sjd, maximal or gumbel) and WINDOW INT32 [1].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from janus_edge.runtime.errors import JanusEdgeError


class _RuntimeModel:
    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        from janus_edge.runtime import JanusRuntime

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        export_dir = Path(params["export_dir"])
        if not export_dir.is_absolute():
            export_dir = Path(args["model_repository"]) / export_dir
        options = {"providers": params["providers"].split(",")} if params.get("providers") else {}
        self.runtime = JanusRuntime.load(export_dir, backend=params.get("backend", "onnxruntime"), **options)

    def _text(self, request, name: str) -> str:
        value = self._optional(request, name)
        return "" if value is None else _string(value.reshape(-1)[0])

    def _optional(self, request, name: str):
        tensor = self.pb.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    def _scalar(self, request, name: str, kind):
        value = self._optional(request, name)
        return None if value is None else kind(value.reshape(-1)[0])

    def _understanding_arguments(self, request) -> dict:
        images = self._optional(request, "IMAGES")
        temperature = self._scalar(request, "TEMPERATURE", float)
        return {"images": [bytes(image) for image in images.reshape(-1)] if images is not None else [],
                "question": self._text(request, "QUESTION"),
                "max_new_tokens": self._scalar(request, "MAX_TOKENS", int),
                "temperature": 0.0 if temperature is None else temperature,
                "top_p": self._scalar(request, "TOP_P", float), "seed": self._scalar(request, "SEED", int)}

    def _error(self, exc: Exception):
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(str(exc)))


class UnderstandingModel(_RuntimeModel):
    """Answers a question about images: TEXT BYTES [1], TOKEN_IDS INT64 [-1], FINISH_REASON BYTES [1]."""

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                answer = self.runtime.understand(**self._understanding_arguments(request))
            except JanusEdgeError as exc:
                responses.append(self._error(exc))
                continue
            responses.append(self.pb.InferenceResponse(output_tensors=[
                self.pb.Tensor("TEXT", np.array([answer.text.encode()], dtype=np.object_)),
                self.pb.Tensor("TOKEN_IDS", np.array(answer.token_ids, dtype=np.int64)),
                self.pb.Tensor("FINISH_REASON", np.array([answer.finish_reason.encode()], dtype=np.object_))]))
        return responses


class StreamingUnderstandingModel(_RuntimeModel):
    """Decoupled: one response per text piece (TEXT BYTES [1]), then an empty final flag. Stops when the client
    cancels the request."""

    def execute(self, requests):
        final = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            try:
                pieces = self.runtime.stream_understand(**self._understanding_arguments(request))
                try:
                    for piece in pieces:
                        if request.is_cancelled():
                            break
                        sender.send(self.pb.InferenceResponse(output_tensors=[
                            self.pb.Tensor("TEXT", np.array([piece.encode()], dtype=np.object_))]))
                finally:
                    pieces.close()
            except JanusEdgeError as exc:
                sender.send(self._error(exc), flags=final)
                continue
            sender.send(flags=final)
        return None


class GenerationModel(_RuntimeModel):
    """Text to images: IMAGES UINT8 [n, image_size, image_size, 3], TOKENS INT64 [n, num_image_tokens]."""

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                result = self.runtime.generate_images(
                    self._text(request, "PROMPT"), n=self._scalar(request, "N", int) or 1,
                    cfg_weight=self._scalar(request, "CFG_WEIGHT", float),
                    temperature=self._scalar(request, "TEMPERATURE", float), seed=self._scalar(request, "SEED", int),
                    speculative=self._text(request, "SPECULATIVE") or None, window=self._scalar(request, "WINDOW", int))
            except JanusEdgeError as exc:
                responses.append(self._error(exc))
                continue
            pixels = np.stack([np.asarray(image, dtype=np.uint8) for image in result.images])
            responses.append(self.pb.InferenceResponse(output_tensors=[
                self.pb.Tensor("IMAGES", pixels), self.pb.Tensor("TOKENS", result.tokens.astype(np.int64))]))
        return responses


def _string(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
