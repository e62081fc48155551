"""
TokenData: one split of a corpus written by data/<name>/prepare.py, read through numpy memmaps.

    data = TokenData("data/pg19", "train")
    x, y = data.sample_batch(batch_size, seq_len, generator)   # int64 (B, T); y is x shifted by one

Windows are book-aware: a window lies inside one book when the book has at least seq_len+1 tokens (long-context
training should not glue the end of one book to the start of another); shorter books are sampled as windows of
the concatenated stream, where an EOT token separates the books. Every start position allowed by these rules is
equally likely. All randomness comes from the torch.Generator passed in, so saving generator.get_state() in a
checkpoint makes resumed training draw exactly the batches it would have drawn.

Also here, for train.py and eval_ppl.py: where a data_dir is found (resolve_data_dir), data/synthetic made on first
use for the run's seq_len (synthetic_data_dir), and the prepare command an error names (prepare_command).
"""
import json
import os

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
CORPORA = ("pg19", "arxiv_math", "synthetic")


def prepare_command(data_dir):
    """The command that writes data_dir, for error messages. A folder named <corpus>_byte (data/pg19_byte, as in
    configs/tiny_pg19_*.py) holds that corpus in byte tokens."""
    name = os.path.basename(os.path.normpath(data_dir))
    byte = name.endswith("_byte")
    corpus = name[:-len("_byte")] if byte else name
    script = f"data/{corpus}/prepare.py" if corpus in CORPORA else "data/<pg19|arxiv_math|synthetic>/prepare.py"
    options = " --tokenizer byte" if byte else ""
    if os.path.realpath(data_dir) == os.path.realpath(os.path.join(REPO_ROOT, "data", corpus)):
        return f"python {script}{options}"
    return f"python {script}{options} --out {data_dir}"


def resolve_data_dir(data_dir):
    """Relative to the current directory, else to the repository (so `data/synthetic` works from anywhere)."""
    if os.path.isabs(data_dir) or os.path.exists(data_dir):
        return data_dir
    in_repo = os.path.join(REPO_ROOT, data_dir)
    return in_repo if os.path.exists(in_repo) else data_dir


def synthetic_data_dir(data_dir, seq_len, make):
    """data/synthetic is small and made on first use, so that `python train.py` works in a fresh clone. Its
    documents are seq_len tokens long (one document per window, facts first). A corpus already there for another
    seq_len is never replaced (a checkpoint trained on it would then be scored on other data): the corpus for this
    seq_len goes to data/synthetic/len<seq_len>, with the other options it was made with. Returns the folder to
    read; make=False (the other DDP processes) only names it."""
    synthetic = os.path.join(REPO_ROOT, "data", "synthetic")
    if os.path.realpath(data_dir) != os.path.realpath(synthetic):
        return data_dir
    try:
        with open(os.path.join(synthetic, "meta.json")) as f:
            params = json.load(f).get("params", {})
    except (OSError, ValueError):
        params = None  # nothing made yet: the corpus goes to data/synthetic itself
    if params is not None and params.get("doc_len") != seq_len:
        data_dir = os.path.join(data_dir, f"len{seq_len}")
    if make:
        from data.synthetic.prepare import ensure_synthetic  # the data part's generator
        ensure_synthetic(data_dir, **{**(params or {}), "doc_len": seq_len})  # ValueError: a seq_len too short
    return data_dir


class TokenData:
    def __init__(self, data_dir, split):
        self.data_dir, self.split = data_dir, split
        self.bin_path = os.path.join(data_dir, f"{split}.bin")
        books_path = os.path.join(data_dir, f"{split}_books.npy")
        meta_path = os.path.join(data_dir, "meta.json")
        for path in (meta_path, self.bin_path, books_path):
            if not os.path.exists(path):
                raise SystemExit(f"error: {path} not found; make it with `{prepare_command(data_dir)}`")
        with open(meta_path) as f:
            self.meta = json.load(f)
        self.book_offsets = np.load(books_path).astype(np.int64)
        self.num_tokens = os.path.getsize(self.bin_path) // 2  # uint16
        if self.num_tokens == 0 or self.book_offsets[-1] != self.num_tokens:
            raise SystemExit(f"error: {self.bin_path} is empty or does not match {books_path} "
                             f"({self.num_tokens} tokens vs {self.book_offsets[-1]}); rerun `{prepare_command(data_dir)}`")
        self.num_books = len(self.book_offsets) - 1
        self._windows = {}  # seq_len -> (first start in each book, number of starts in each book, their cumsum)

    @property
    def tokens(self):
        # a fresh memmap per use, as nanoGPT does: pages read through one long-lived memmap stay mapped, and on a
        # large corpus the process seems to grow without bound; reopening is cheap and keeps the object picklable
        return np.memmap(self.bin_path, dtype=np.uint16, mode="r")

    def __len__(self):
        return self.num_tokens

    def book(self, i):
        if not 0 <= i < self.num_books:
            raise IndexError(f"book {i} out of range: {self.split} has {self.num_books} books")
        return np.array(self.tokens[self.book_offsets[i]:self.book_offsets[i + 1]])

    def _window_starts(self, seq_len):
        # A window reads seq_len+1 tokens from its start s. Book i (offsets o_i..o_{i+1}, length L_i) contributes
        #   long book (L_i >= seq_len+1): s in [o_i, o_{i+1} - seq_len - 1]       -> L_i - seq_len starts
        #   short book:                   s in [o_i, o_{i+1}) while s + seq_len + 1 <= N  (may run into later books)
        if seq_len not in self._windows:
            off, n = self.book_offsets, self.num_tokens
            lengths = np.diff(off)
            counts = np.where(lengths >= seq_len + 1, lengths - seq_len,
                              np.clip(np.minimum(lengths, n - seq_len - off[:-1]), 0, None))
            self._windows[seq_len] = (off[:-1], counts, np.cumsum(counts))
        return self._windows[seq_len]

    def sample_batch(self, batch_size, seq_len, generator):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size={batch_size} and seq_len={seq_len} must both be at least 1")
        first, counts, cum = self._window_starts(seq_len)
        total = int(cum[-1])
        if total == 0:
            raise ValueError(f"{self.bin_path} has {self.num_tokens} tokens, fewer than seq_len+1={seq_len + 1}; "
                             f"use a smaller seq_len")
        # draw u uniformly among all allowed starts, then find its book: the first book whose cumsum exceeds u
        u = torch.randint(total, (batch_size,), generator=generator).numpy()
        b = np.searchsorted(cum, u, side="right")
        starts = first[b] + (u - (cum[b] - counts[b]))
        tokens = self.tokens
        w = torch.from_numpy(np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(np.int64))
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()
