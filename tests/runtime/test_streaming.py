"""Streaming and stopping: pieces are whole characters that join into the answer's text, and every answer says why
it stopped (EOS, max_new_tokens or the exported context), the same way in understand, stream and chat."""

from __future__ import annotations

import pytest
from edited_exports import eos_first_export, short_context_export

from janus_edge.runtime import JanusRuntime, Turn
from janus_edge.runtime.tokenizer import IncrementalText

TEXT = "Snow 雪, a fox 🦊 and café ñ: ok. Ünïcödé ✓ 𝄞 done"


def test_the_tiny_tokenizer_splits_characters_across_tokens(runtime):
    """The case the holdback exists for: byte-level BPE tokens that end inside a UTF-8 character."""
    ids = runtime.tokenizer.encode(TEXT)
    partial = [k for k in range(1, len(ids)) if runtime.tokenizer.decode(ids[:k]).endswith("\ufffd")]
    assert len(partial) >= 6, "3- and 4-byte characters should be split into several byte tokens"


def test_each_piece_is_whole_characters_emitted_as_soon_as_complete(runtime):
    ids = runtime.tokenizer.encode(TEXT)
    stream, emitted = IncrementalText(runtime.tokenizer), ""
    for k, token in enumerate(ids, start=1):
        piece = stream.add(token)
        assert "\ufffd" not in piece
        emitted += piece
        # everything decodable so far is out, and nothing that is still half a character
        assert emitted == runtime.tokenizer.decode(ids[:k]).rstrip("\ufffd")
    assert stream.flush() == "" and emitted == TEXT


def test_flush_gives_a_trailing_half_character_as_decode_does(runtime):
    ids = runtime.tokenizer.encode("fox 🦊")
    cut = next(k for k in range(len(ids), 0, -1) if runtime.tokenizer.decode(ids[:k]).endswith("\ufffd"))
    stream = IncrementalText(runtime.tokenizer)
    pieces = [stream.add(token) for token in ids[:cut]]
    assert "".join(pieces) + stream.flush() == runtime.tokenizer.decode(ids[:cut])


def _ends_mid_character(runtime):
    """A seeded sampled answer that the length limit cuts inside a character (searched, bounded)."""
    for seed in range(60):
        answer = runtime.understand([], "Hello", max_new_tokens=12, temperature=3.0, seed=seed)
        if answer.finish_reason == "length" and answer.text.endswith("\ufffd"):
            return seed, answer
    pytest.fail("no sampled answer ended inside a character in 60 seeds")


def test_a_stream_cut_inside_a_character_joins_into_the_answer_text(runtime):
    seed, answer = _ends_mid_character(runtime)
    streamed = "".join(runtime.stream_understand([], "Hello", max_new_tokens=12, temperature=3.0, seed=seed))
    assert streamed == answer.text
    with runtime.chat(max_new_tokens=12) as chat:
        assert "".join(chat.stream("Hello", temperature=3.0, seed=seed)) == answer.text


@pytest.fixture(scope="module")
def eos_first(tmp_path_factory, export_hf):
    return JanusRuntime.load(eos_first_export(export_hf, tmp_path_factory.mktemp("edited") / "eos"))


def test_finish_reason_eos(eos_first):
    eos = eos_first.manifest.tokens.eos
    answer = eos_first.understand([], "Hello", max_new_tokens=5)
    assert (answer.token_ids, answer.text, answer.finish_reason) == ([eos], "", "eos")
    assert list(eos_first.stream_understand([], "Hello", max_new_tokens=5)) == []
    with eos_first.chat(max_new_tokens=5) as chat:
        asked = chat.ask("Hello")
        assert (asked.token_ids, asked.finish_reason) == ([eos], "eos")
        assert "".join(chat.stream("Again")) == "" and chat.turns[-1].answer == ""


def test_finish_reason_length(runtime):
    answer = runtime.understand([], "Hello there", max_new_tokens=5)
    assert len(answer.token_ids) == 5 and runtime.manifest.tokens.eos not in answer.token_ids
    assert answer.finish_reason == "length"
    assert not answer.text.endswith("\ufffd"), "a question whose answer is not cut inside a character (see above)"
    assert "".join(runtime.stream_understand([], "Hello there", max_new_tokens=5)) == answer.text
    with runtime.chat(max_new_tokens=5) as chat:
        asked = chat.ask("Hello there")
    assert (asked.token_ids, asked.finish_reason) == (answer.token_ids, "length")


def test_finish_reason_in_a_batch(runtime, eos_first):
    """Each row of a left-padded batch reports its own stop, as its single-conversation call does."""
    conversations = [[Turn("Hello")], [Turn("Describe a fox in the snow, please.")]]
    for rt, expected in ((runtime, ("length", 4)), (eos_first, ("eos", 1))):
        answers = rt.understand_batch(conversations, max_new_tokens=4)
        assert [(a.finish_reason, len(a.token_ids)) for a in answers] == [expected, expected]
        assert [a.token_ids for a in answers] == [rt.understand([], c[0].question, max_new_tokens=4).token_ids
                                                  for c in conversations]


def test_finish_reason_context(tmp_path, export_hf, runtime):
    question = "Describe a fox."
    prompt = len(runtime.prompts.understanding([Turn(question)]))
    short = JanusRuntime.load(short_context_export(export_hf, tmp_path / "short", prompt + 2))
    answer = short.understand([], question, max_new_tokens=10)
    # the context holds prompt + 2 positions; the last token is never fed back, so 3 tokens fit
    assert (len(answer.token_ids), answer.finish_reason) == (3, "context")
    assert answer.token_ids == runtime.understand([], question, max_new_tokens=3).token_ids
    assert not answer.text.endswith("\ufffd")
    assert "".join(short.stream_understand([], question, max_new_tokens=10)) == answer.text
    with short.chat(max_new_tokens=10) as chat:
        asked = chat.ask(question)
    assert (asked.token_ids, asked.finish_reason) == (answer.token_ids, "context")
