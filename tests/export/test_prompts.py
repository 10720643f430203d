"""The Janus-1.3B prompt family: DeepSeek's SFT format with plain "User"/"Assistant" roles (Janus-Pro writes
"<|User|>"/"<|Assistant|>"), from a tiny checkpoint exported with family janus, against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from janus_edge.runtime import JanusRuntime, Turn


@pytest.fixture(scope="module")
def janus_13b(tmp_path_factory, tiny_hf):
    from janus_edge.export.exporter import export

    out = tmp_path_factory.mktemp("export") / "janus-1.3b"
    export(tiny_hf, out, family="janus", log=lambda message: None)
    return JanusRuntime.load(out)


def test_understanding_prompt_and_greedy_answer_equal_transformers(janus_13b, reference, tiny_hf):
    from transformers import AutoProcessor

    photo = Image.fromarray(data.chelsea()).resize((240, 180))
    question = "What is in this picture?"
    ids = janus_13b.prompts.understanding([Turn(question, [photo])])
    # DeepSeek's "deepseek" SFT template for Janus-1.3B: "User: {content}\n\nAssistant:" after the system prompt
    expected = AutoProcessor.from_pretrained(tiny_hf)(text=f"User: <image_placeholder>\n{question}\n\nAssistant:",
                                                      images=photo, return_tensors="pt")
    assert ids == expected["input_ids"][0].tolist()
    pro_roles = {janus_13b.tokenizer.encode(role)[0] for role in ("<|User|>", "<|Assistant|>")}
    assert not pro_roles & set(ids), "no Janus-Pro role token in a Janus-1.3B prompt"

    answer = janus_13b.understand([photo], question, max_new_tokens=16)
    generated = reference.generate(**expected, max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()
    eos = janus_13b.manifest.tokens.eos
    assert answer.token_ids == (generated[:generated.index(eos) + 1] if eos in generated else generated)
    assert len(set(answer.token_ids)) >= 3, "varied tokens, or equality proves little"


def test_multi_turn_prompt_follows_the_deepseek_template(janus_13b, tiny_hf):
    from transformers import AutoTokenizer

    history = [Turn("Hello there", [], "Hi, how can I help?")]
    ids = janus_13b.prompts.understanding([*history, Turn("Describe a fox.")])
    eos_text, system = janus_13b.manifest.prompt.eos_text, janus_13b.manifest.prompt.system_prompt
    text = (f"{system}\n\nUser: Hello there\n\nAssistant: Hi, how can I help?{eos_text}"
            "User: Describe a fox.\n\nAssistant:")
    assert ids == AutoTokenizer.from_pretrained(tiny_hf)(text)["input_ids"]


def test_argmax_generation_prompt_and_tokens_equal_transformers(janus_13b, reference, tiny_hf):
    from transformers import AutoTokenizer

    prompt = "A red rocket on the launch pad."
    ids = janus_13b.prompts.generation(prompt)
    assert ids == AutoTokenizer.from_pretrained(tiny_hf)(f"User: {prompt}\n\nAssistant:<begin_of_image>")["input_ids"]
    result = janus_13b.generate_images(prompt, n=1, temperature=0)
    rows = torch.tensor([ids])
    expected = reference.generate(input_ids=rows, attention_mask=torch.ones_like(rows), generation_mode="image",
                                  do_sample=False)
    np.testing.assert_array_equal(result.tokens, expected.numpy())
