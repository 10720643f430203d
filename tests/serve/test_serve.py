"""`janus-edge serve` for real: the official openai client against a live server on 127.0.0.1, results compared
with the Python API, bad requests, a bounded load test, and a client that disconnects mid-stream."""

from __future__ import annotations

import base64
import gc
import http.client
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from janus_edge.serve.chat import FINISH
from PIL import Image

from serve_helpers import KEY, data_url, metric, png_bytes, request, serve

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("allowed")
    (folder / "photo.png").write_bytes(png_bytes(7))
    return folder


@pytest.fixture(scope="module")
def server(export_hf, allowed):
    with serve(export_hf, "--max-queue", 128, "--allow-local-files", allowed, "--max-body-mb", 1) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(api_key=KEY, base_url=f"{server}/v1", max_retries=0, timeout=120)


def image_message(question: str, image: bytes) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                         {"type": "text", "text": question}]}]


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_chat_with_an_image_matches_the_python_api(client, runtime, export_hf):
    from janus_edge.runtime import Turn

    image = png_bytes(1)
    reply = client.chat.completions.create(model=export_hf.name, messages=image_message("What is this?", image),
                                           max_tokens=12)
    expected = runtime.understand([image], "What is this?", max_new_tokens=12)
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == {"eos": "stop", "length": "length"}[expected.finish_reason]
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.prompt_tokens == len(runtime.prompts.understanding([Turn("What is this?", [image])]))


def test_multi_turn_sampling_with_a_seed_matches_the_python_api(client, runtime, export_hf, allowed):
    from janus_edge.runtime import Turn

    image = png_bytes(2)
    messages = [*image_message("Describe it.", image), {"role": "assistant", "content": "A square."},
                {"role": "user", "content": [
                    {"type": "text", "text": "And the local one?"},
                    {"type": "image_url", "image_url": {"url": f"file://{allowed}/photo.png"}}]}]
    options = {"model": export_hf.name, "messages": messages, "max_tokens": 10, "temperature": 0.9, "top_p": 0.95,
               "seed": 11}
    first = client.chat.completions.create(**options)
    again = client.chat.completions.create(**options)
    expected = runtime.understand([str(allowed / "photo.png")], "And the local one?",
                                  history=[Turn("Describe it.", [image], "A square.")], max_new_tokens=10,
                                  temperature=0.9, top_p=0.95, seed=11)
    assert first.choices[0].message.content == again.choices[0].message.content == expected.text


def test_streaming_gives_the_same_text_as_the_python_api(client, runtime, export_hf):
    image = png_bytes(3)
    chunks = list(client.chat.completions.create(model=export_hf.name, messages=image_message("Stream it.", image),
                                                 max_tokens=16, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = runtime.understand([image], "Stream it.", max_new_tokens=16)
    assert text == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == FINISH[expected.finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_image_generation_in_base64_matches_the_python_api(client, runtime, export_hf):
    reply = client.images.generate(model=export_hf.name, prompt="a red fox", n=2, size="384x384",
                                   response_format="b64_json",
                                   extra_body={"seed": 3, "cfg_weight": 4.0, "temperature": 0.8})
    expected = runtime.generate_images("a red fox", n=2, cfg_weight=4.0, temperature=0.8, seed=3)
    assert len(reply.data) == 2
    for item, image in zip(reply.data, expected.images):
        assert np.array_equal(decode_png(item.b64_json), np.asarray(image))


def test_models_health_and_metrics(client, server, export_hf):
    assert [m.id for m in client.models.list()] == [export_hf.name]
    status, body, _ = request("GET", f"{server}/health", key=None)
    assert status == 200 and body["status"] == "ok"
    status, text, headers = request("GET", f"{server}/metrics", key=None)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in ("janus_edge_queue_depth", "janus_edge_request_latency_seconds histogram",
                 "janus_edge_tokens_per_second", "janus_edge_images_per_second"):
        assert name in text.decode()


def bad_requests(allowed, outside):
    """(what, method, path, body, headers, key, expected status)."""
    chat = "/v1/chat/completions"
    text_only = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    not_an_image = data_url(b"this is not a picture at all")
    return [
        ("malformed JSON", chat, b'{"messages": [', None, KEY, 400),
        ("missing messages", chat, {"max_tokens": 2}, None, KEY, 400),
        ("missing prompt", "/v1/images/generations", {"n": 1}, None, KEY, 400),
        ("huge body", chat, {"messages": [{"role": "user", "content": "x" * (2 << 20)}]}, None, KEY, 413),
        ("data URL that is not an image", chat, {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": not_an_image}}]}]}, None, KEY, 400),
        ("unsupported size", "/v1/images/generations", {"prompt": "a fox", "size": "512x512"}, None, KEY, 400),
        ("n over the limit", "/v1/images/generations", {"prompt": "a fox", "n": 99}, None, KEY, 400),
        ("wrong key", chat, text_only, None, "wrong-key", 401),
        ("no key", chat, text_only, None, None, 401),
        ("path outside the allowed folder", chat, {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"file://{outside}"}}]}]}, None, KEY, 403),
        ("path escaping the folder with ..", chat, {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"{allowed}/../outside.png"}}]}]}, None, KEY, 403),
        ("network URL", chat, {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}]}]}, None, KEY, 400),
        ("unknown model", chat, {**text_only, "model": "gpt-4"}, None, KEY, 404),
        ("temperature below 0", chat, {**text_only, "temperature": -1}, None, KEY, 400),
        ("unknown field", chat, {**text_only, "logit_bias": {"1": 5}}, None, KEY, 400),
        ("system message", chat, {"messages": [{"role": "system", "content": "be nice"},
                                               {"role": "user", "content": "hi"}]}, None, KEY, 400),
        ("response_format url", "/v1/images/generations", {"prompt": "a fox", "response_format": "url"}, None,
         KEY, 400),
        ("unknown route", "/v1/embeddings", {"input": "x"}, None, KEY, 404),
    ]


def test_bad_requests_get_openai_errors_and_the_server_keeps_answering(server, allowed, tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes(9))
    for what, path, body, headers, key, expected in bad_requests(allowed, outside):
        status, reply, _ = request("POST", f"{server}{path}", body, headers, key=key)
        assert status == expected, (what, status, reply)
        assert isinstance(reply, dict) and set(reply["error"]) >= {"message", "type", "param", "code"}, what
        assert reply["error"]["message"], what
        assert request("GET", f"{server}/health")[0] == 200, f"the server stopped answering after: {what}"
    status, reply, _ = request("POST", f"{server}/v1/chat/completions",
                               {"messages": [{"role": "user", "content": "still there?"}], "max_tokens": 2})
    assert status == 200 and reply["choices"][0]["message"]["content"] is not None


def test_32_concurrent_clients_get_exactly_their_serial_results(server, runtime, export_hf):
    """32 clients x 3 mixed requests at once: every client sends a chat and a streaming chat; every fourth client's
    third request is a one-image generation (8 in all: an image takes ~1 s of the tiny model, 32 would make the test
    long), the others' a second streaming chat. Every request is answered, each equal to the Python API run alone with the same
    inputs and seed, and concurrent greedy chats were batched."""
    images = [png_bytes(20 + i) for i in range(4)]
    questions = ["What is it?", "Describe the colours.", "Count the shapes.", "Is it a cat?"]
    chats = {i: runtime.understand([images[i]], questions[i], max_new_tokens=8).text for i in range(4)}
    pictures = {i: np.asarray(runtime.generate_images("a lighthouse", n=1, seed=i).images[0]) for i in range(2)}
    batches_before = metric(server, "janus_edge_understanding_batch_size_count")
    rows_before = metric(server, "janus_edge_understanding_batch_size_sum")
    images_before = metric(server, "janus_edge_generated_images_total")
    client = openai.OpenAI(api_key=KEY, base_url=f"{server}/v1", max_retries=0, timeout=300)

    def one(client_id: int, kind: int):
        case = client_id % 4
        if kind == 0:
            reply = client.chat.completions.create(model=export_hf.name, max_tokens=8,
                                                   messages=image_message(questions[case], images[case]))
            return reply.choices[0].message.content == chats[case]
        if kind == 1 or (kind == 2 and client_id % 4):
            stream = client.chat.completions.create(model=export_hf.name, max_tokens=8, stream=True,
                                                    messages=image_message(questions[case], images[case]))
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == chats[case]
        reply = client.images.generate(model=export_hf.name, prompt="a lighthouse", n=1,
                                       extra_body={"seed": case % 2})
        return np.array_equal(decode_png(reply.data[0].b64_json), pictures[case % 2])

    def session(client_id: int):
        return [one(client_id, (client_id + step) % 3) for step in range(3)]

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(session, range(32), timeout=300))
    assert len(results) == 32 and all(len(r) == 3 for r in results)
    assert all(all(r) for r in results), results
    batches = metric(server, "janus_edge_understanding_batch_size_count") - batches_before
    rows = metric(server, "janus_edge_understanding_batch_size_sum") - rows_before
    assert rows == 32 and batches < 32, (rows, batches)  # non-streaming chats only; some shared a batch
    assert metric(server, "janus_edge_generated_images_total") - images_before == 8
    assert metric(server, "janus_edge_queue_depth") == 0


def test_a_client_that_disconnects_mid_stream_frees_its_slot(export_hf):
    with serve(export_hf, "--max-queue", 1) as base:
        port = int(base.rsplit(":", 1)[1])
        body = json.dumps({"messages": [{"role": "user", "content": "Tell me a very long story."}],
                           "max_tokens": 3000, "stream": True})
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/v1/chat/completions", body,
                           {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.readline().startswith(b"data: ")  # the stream runs: the only slot is taken
        status, reply, headers = request("POST", f"{base}/v1/chat/completions",
                                         {"messages": [{"role": "user", "content": "me too"}], "max_tokens": 2})
        assert status == 429 and reply["error"]["code"] == "queue_full" and headers["Retry-After"] == "1"
        connection.close()  # mid-stream: 3000 tokens are far from done
        deadline = time.monotonic() + 30
        while request("GET", f"{base}/health")[1]["load"] != 0:
            assert time.monotonic() < deadline, "the disconnected stream still holds its slot"
            time.sleep(0.1)
        assert metric(base, "janus_edge_cancelled_total") == 1
        status, reply, _ = request("POST", f"{base}/v1/chat/completions",
                                   {"messages": [{"role": "user", "content": "me too"}], "max_tokens": 2})
        assert status == 200, reply


def test_cancelling_a_generation_or_a_stream_frees_the_kv_cache(runtime):
    """What the server's cancellation relies on: a progress callback that raises, and closing the answer stream,
    leave no decoder (and so no KV cache) alive in the runtime."""
    from janus_edge.runtime.backends.base import KVDecoder
    from janus_edge.serve.jobs import Cancelled

    def stop_at_ten(step, total):
        if step == 10:
            raise Cancelled("test")

    with pytest.raises(Cancelled):
        runtime.generate_images("a fox", n=1, seed=0, progress=stop_at_ten)
    pieces = runtime.stream_understand([], "Tell me a story.", max_new_tokens=500)
    next(pieces)
    pieces.close()
    gc.collect()
    assert not [o for o in gc.get_objects() if issubclass(type(o), KVDecoder)]
