"""`janus-edge triton-repo` for real: a stock tritonserver 2.51 loads the written repository and answers through
tritonclient (HTTP and gRPC) with the Python API's results."""

from __future__ import annotations

import queue

import numpy as np
import pytest

import triton_server
from cli_helpers import run_cli
from serve_helpers import png_bytes

pytestmark = pytest.mark.skipif(triton_server.missing() is not None, reason=str(triton_server.missing()))


@pytest.fixture(scope="module")
def repository(export_hf, tmp_path_factory):
    out = tmp_path_factory.mktemp("triton") / "repo"
    result = run_cli("triton-repo", export_hf, out, check_code=0)
    assert "janus_generation" in result.stdout
    return out


@pytest.fixture(scope="module")
def triton(repository, tmp_path_factory):
    with triton_server.tritonserver(repository, tmp_path_factory.mktemp("triton-run")) as urls:
        yield urls


def inputs(module, **values):
    """tritonclient InferInputs from numpy arrays (BYTES for object arrays)."""
    tensors = []
    for name, array in values.items():
        kind = "BYTES" if array.dtype == object else {"int32": "INT32", "int64": "INT64", "float32": "FP32"}[
            str(array.dtype)]
        tensor = module.InferInput(name, list(array.shape), kind)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def question(image: bytes, text: str, max_tokens: int, **extra) -> dict:
    return {"QUESTION": np.array([text.encode()], dtype=object), "IMAGES": np.array([image], dtype=object),
            "MAX_TOKENS": np.array([max_tokens], dtype=np.int32), **extra}


def test_repository_refuses_a_non_empty_directory(export_hf, repository):
    result = run_cli("triton-repo", export_hf, repository, check_code=2)
    assert "not empty" in result.stderr and "Traceback" not in result.stderr


def test_understanding_over_http_matches_the_python_api(triton, runtime):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(triton[0], network_timeout=120)
    image = png_bytes(31)
    reply = client.infer("janus_understanding", inputs(httpclient, **question(
        image, "What is this?", 12, TEMPERATURE=np.array([0.7], dtype=np.float32),
        SEED=np.array([4], dtype=np.int64))))
    expected = runtime.understand([image], "What is this?", max_new_tokens=12, temperature=0.7, seed=4)
    assert reply.as_numpy("TEXT")[0].decode() == expected.text
    assert reply.as_numpy("TOKEN_IDS").tolist() == expected.token_ids
    assert reply.as_numpy("FINISH_REASON")[0].decode() == expected.finish_reason


def test_generation_over_grpc_matches_the_python_api(triton, runtime):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton[1])
    reply = client.infer("janus_generation", inputs(grpcclient, PROMPT=np.array([b"a lighthouse"], dtype=object),
                                                    N=np.array([2], dtype=np.int32),
                                                    SEED=np.array([5], dtype=np.int64)), client_timeout=120)
    expected = runtime.generate_images("a lighthouse", n=2, seed=5)
    assert np.array_equal(reply.as_numpy("TOKENS"), expected.tokens)
    assert np.array_equal(reply.as_numpy("IMAGES"), np.stack([np.asarray(i) for i in expected.images]))


def test_decoupled_streaming_over_grpc_and_a_bad_image(triton, runtime):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    image = png_bytes(32)
    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(triton[1])
    client.start_stream(callback=lambda result, error: responses.put((result, error)), stream_timeout=120)
    try:
        client.async_stream_infer("janus_understanding_stream", inputs(grpcclient, **question(image, "Stream.", 16)),
                                  enable_empty_final_response=True)
        pieces = []
        for _ in range(64):  # at most one response per token, plus the final flag
            result, error = responses.get(timeout=60)
            assert error is None, error
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
            pieces.append(result.as_numpy("TEXT")[0].decode())
        assert "".join(pieces) == runtime.understand([image], "Stream.", max_new_tokens=16).text
    finally:
        client.stop_stream()
    again = grpcclient.InferenceServerClient(triton[1])
    with pytest.raises(InferenceServerException, match="not an image"):
        again.infer("janus_understanding", inputs(grpcclient, **question(b"not a picture", "What?", 4)),
                   client_timeout=60)
    assert again.is_server_live()
