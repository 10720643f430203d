"""Chat sessions keep the KV cache between turns; streaming decodes text incrementally."""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage import data

from janus_edge.runtime import Turn
from janus_edge.runtime.tokenizer import IncrementalText


def _photo():
    return Image.fromarray(data.astronaut()).resize((200, 160))


def test_second_turn_prefills_only_its_new_tokens_and_matches_a_stateless_run(form_runtime):
    runtime = form_runtime
    photo = _photo()
    with runtime.chat(max_new_tokens=10) as chat:
        first = chat.ask("What is in this picture?", images=[photo])
        prompt_1 = runtime.prompts.understanding([Turn("What is in this picture?", [photo])])
        assert first.timings["prefill_tokens"] == len(prompt_1)
        second = chat.ask("And what colour is it?")
        cached_after_first = len(prompt_1) + len(first.token_ids) - 1  # the last token is never fed back

        history = [Turn("What is in this picture?", [photo], first.text)]
        prompt_2 = runtime.prompts.understanding([*history, Turn("And what colour is it?")])
        rendered = prompt_2[:cached_after_first]
        common = next((i for i, (a, b) in enumerate(zip(rendered, prompt_1 + first.token_ids)) if a != b),
                      cached_after_first)
        assert common >= len(prompt_1), "the first turn's prompt stays cached"
        assert second.timings["prefill_tokens"] == len(prompt_2) - common
        assert second.timings["prefill_tokens"] < len(prompt_2) - 576, "the image is not prefilled again"
        stateless = runtime.understand([], "And what colour is it?", history=history, max_new_tokens=10)
        assert second.token_ids == stateless.token_ids


def test_a_changed_image_in_history_is_prefilled_again(runtime):
    photo, other = _photo(), Image.fromarray(data.coffee()).resize((200, 160))
    with runtime.chat(max_new_tokens=4) as chat:
        chat.ask("Describe it.", images=[photo])
        chat.turns[0].images = [other]  # the caller edits the history: the cached image no longer holds
        answer = chat.ask("More?")
        stateless = runtime.understand([], "More?", history=chat.turns[:1], max_new_tokens=4)
        assert answer.timings["prefill_tokens"] > 576
        assert answer.token_ids == stateless.token_ids


def test_chat_stream_equals_ask(runtime):
    with runtime.chat(max_new_tokens=12) as a, runtime.chat(max_new_tokens=12) as b:
        for question in ("Hello there", "Tell me more"):
            assert "".join(a.stream(question)) == b.ask(question).text
        assert a.turns[0].answer == b.turns[0].answer


class _CountingTokenizer:
    """The real tokenizer, recording how many ids each decode call receives."""

    def __init__(self, tokenizer):
        self.tokenizer, self.sizes = tokenizer, []

    def decode(self, ids):
        self.sizes.append(len(ids))
        return self.tokenizer.decode(ids)


def test_streaming_decodes_a_window_and_holds_back_half_characters(runtime):
    text = "Snow 雪 and a fox 🦊 run, " * 6
    ids = runtime.tokenizer.encode(text)
    counting = _CountingTokenizer(runtime.tokenizer)
    stream = IncrementalText(counting)
    pieces = [stream.add(token) for token in ids]
    assert "".join(pieces) == runtime.tokenizer.decode(ids)
    assert not any("\ufffd" in p for p in pieces)
    assert max(counting.sizes) <= 8 < len(ids), "each token decodes a short window, not the whole answer"
    assert np.mean([p == "" for p in pieces]) < 0.9


def test_three_turns_each_equal_transformers_on_the_whole_conversation(form_runtime, reference, tiny_hf):
    """Every turn of a cached chat answers as transformers' generate() does on the whole conversation so far,
    written in DeepSeek's SFT format and tokenised by transformers' JanusProcessor (both KV cache forms: the
    ort_gqa form prefills later turns as several new positions over a cache)."""
    runtime = form_runtime
    from transformers import AutoProcessor

    processor, photo = AutoProcessor.from_pretrained(tiny_hf), _photo()
    eos, eos_text = runtime.manifest.tokens.eos, runtime.manifest.prompt.eos_text
    text = ""
    with runtime.chat(max_new_tokens=8) as chat:
        for i, question in enumerate(("What is in this picture?", "And what colour is it?", "Thanks, anything else?")):
            answer = chat.ask(question, images=[photo] if i == 0 else [])
            text += f"<|User|>: {'<image_placeholder>' + chr(10) if i == 0 else ''}{question}\n\n<|Assistant|>:"
            inputs = processor(text=text, images=photo, return_tensors="pt")
            output = reference.generate(**inputs, max_new_tokens=8, do_sample=False)
            generated = output[0, inputs["input_ids"].shape[1]:].tolist()
            assert answer.token_ids == (generated[:generated.index(eos) + 1] if eos in generated else generated), i
            assert i == 0 or answer.timings["prefill_tokens"] < 576, "later turns reuse the cached image"
            text += f" {answer.text.strip()}{eos_text}"
