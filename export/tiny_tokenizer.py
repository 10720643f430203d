"""A real byte-level BPE `tokenizer.json` for the tiny model, with Janus's special tokens spelled exactly as in
the released checkpoints (fullwidth bars and U+2581 in BOS/EOS/pad, ASCII bars in the role tokens).

Its ids are small (the tiny vocabulary is ~1000), so every consumer must read ids from the files, never assume
the real 100000+ ids.
"""

from __future__ import annotations

BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
PAD = "<\uff5c\u2581pad\u2581\uff5c>"
IMAGE_TOKEN = "<image_placeholder>"
IMAGE_START = "<begin_of_image>"
IMAGE_END = "<end_of_image>"
USER = "<|User|>"
ASSISTANT = "<|Assistant|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, USER, ASSISTANT, IMAGE_TOKEN, IMAGE_START, IMAGE_END,
                  "<patch_placeholder>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>"]

_CORPUS = """\
You are a helpful language and vision assistant. You are able to understand the visual content that the user
provides, and assist the user with a variety of tasks using natural language.
Describe this image in detail. What is in the picture? How many people are there? What colour is the cat?
A photo of an astronaut riding a horse on the moon. A cup of coffee on a wooden table in the morning light.
A red rocket on the launch pad under a blue sky. A portrait of a cat with green eyes, oil painting.
The quick brown fox jumps over the lazy dog. Janus-Pro unifies multimodal understanding and generation.
Convert the formula into latex code. Which city is shown here, and what is the weather like?
A watercolor landscape with mountains, a lake, pine trees and a small wooden cabin at sunset.
"""


def build_tokenizer(vocab_size: int = 1000):
    """Trains a deterministic byte-level BPE on a small built-in corpus and appends the special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    lines = _CORPUS.splitlines()
    tokenizer.train_from_iterator(lines * 4, trainer)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    bos = (BOS, tokenizer.token_to_id(BOS))  # like DeepSeek's tokenizer.json: BOS is added when encoding
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                             special_tokens=[bos])
    return tokenizer


def padded_vocab_size(tokenizer) -> int:
    """The tiny models' vocabulary: the tokenizer's, rounded up to a multiple of 64."""
    return -(-tokenizer.get_vocab_size() // 64) * 64
