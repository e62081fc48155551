"""
What every data/<name>/prepare.py shares: tokenize documents in parallel and write the format dataset.py reads
(see TokenData there):
  <split>.bin        uint16 tokens, documents ("books") concatenated, each followed by one EOT token
  <split>_books.npy  int64 offsets, n_books+1 of them: book i = tokens[off[i]:off[i+1]], its EOT last
  meta.json          tokenizer, vocab_size, eot, source, and per split the number of books and tokens
"""
import argparse
import itertools
import json
import multiprocessing as mp
import os
import sys
from collections import Counter

import numpy as np
from tqdm import tqdm

from tokenizer import get_tokenizer

SPLITS = ("train", "validation", "test")


def common_args(description, default_out):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--input", help="tokenize a local folder INPUT/{train,validation,test}/ instead of downloading")
    p.add_argument("--out", default=default_out, help="output folder (default: %(default)s)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="tokenizer processes")
    p.add_argument("--max_books", type=int, default=None, help="at most this many documents per split (quick runs)")
    p.add_argument("--tokenizer", default="gpt2", choices=["gpt2", "byte"])
    return p


# ----------------------------------------------------------------------------- tokenizing
_tok = None


def _init_worker(tokenizer_name):
    global _tok
    _tok = get_tokenizer(tokenizer_name)


def _encode(doc):
    """(name, raw bytes or str) -> (name, uint16 tokens ending in EOT, None) or (name, None, why it was skipped)."""
    name, raw = doc
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return name, None, "not UTF-8"
    if not raw.strip():
        return name, None, "empty"
    ids = _tok.encode(raw)
    ids.append(_tok.eot)
    return name, np.array(ids, dtype=np.uint16), None


def tokenize(docs, pool=None):
    """Yield _encode(doc) for each (name, raw) in docs, in order, in the worker processes of `pool` if given."""
    if pool is None:
        yield from map(_encode, docs)
        return
    # feed the pool in batches: Pool.imap would read the whole input into memory ahead of the workers
    docs = iter(docs)
    while batch := list(itertools.islice(docs, 64)):
        yield from pool.imap(_encode, batch)


# ----------------------------------------------------------------------------- writing
def write_split(out_dir, split, results, total=None):
    """Stream tokenized documents into <split>.bin / <split>_books.npy. Returns {"books", "tokens", "skipped"}."""
    bin_path = os.path.join(out_dir, f"{split}.bin")
    offsets, skipped = [0], Counter()
    with open(bin_path + ".tmp", "wb") as f:
        for name, ids, why in tqdm(results, total=total, desc=split, unit="doc"):
            if ids is None:
                tqdm.write(f"warning: skipping {name} ({why})", file=sys.stderr)
                skipped[why] += 1
                continue
            f.write(ids.tobytes())
            offsets.append(offsets[-1] + len(ids))
    with open(os.path.join(out_dir, f"{split}_books.npy.tmp"), "wb") as f:
        np.save(f, np.array(offsets, dtype=np.int64))
    # rename only when complete, so an interrupted run never leaves a half-written split that looks finished
    os.replace(bin_path + ".tmp", bin_path)
    os.replace(os.path.join(out_dir, f"{split}_books.npy.tmp"), os.path.join(out_dir, f"{split}_books.npy"))
    return {"books": len(offsets) - 1, "tokens": offsets[-1], "skipped": dict(skipped)}


def write_meta(out_dir, tokenizer_name, source, splits, **extra):
    tok = get_tokenizer(tokenizer_name)
    meta = {"tokenizer": tok.name, "vocab_size": tok.vocab_size, "eot": tok.eot, "source": source,
            "splits": splits, **extra}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def prepare(split_docs, out_dir, tokenizer_name, source, workers, **extra):
    """split_docs: {split: (iterable of (name, raw bytes or str), count or None)}. Writes every split, then
    meta.json (last, so that its presence means the folder is complete). Prints a summary; returns meta."""
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, "meta.json")):
        os.remove(os.path.join(out_dir, "meta.json"))
    _init_worker(tokenizer_name)
    pool = mp.Pool(workers, _init_worker, (tokenizer_name,)) if workers > 1 else None
    try:
        splits = {split: write_split(out_dir, split, tokenize(docs, pool), total=count)
                  for split, (docs, count) in split_docs.items()}
    finally:
        if pool is not None:
            pool.terminate()
    meta = write_meta(out_dir, tokenizer_name, source, splits, **extra)
    for split, s in splits.items():
        print(f"{split}: {s['books']:,} books, {s['tokens']:,} tokens")
    skipped = sum((Counter(s["skipped"]) for s in splits.values()), Counter())
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
    print(f"skipped {sum(skipped.values())} documents" + (f" ({reasons})" if reasons else ""))
    print(f"wrote {out_dir}")
    return meta


def local_docs(input_dir, suffixes, max_books=None):
    """{split: (docs, count)} for a folder INPUT/{train,validation,test}/*<suffix>; files are read lazily."""
    if not os.path.isdir(input_dir):
        raise SystemExit(f"error: --input {input_dir} is not a folder")
    out = {}
    for split in SPLITS:
        d = os.path.join(input_dir, split)
        names = sorted(n for n in os.listdir(d) if n.endswith(suffixes)) if os.path.isdir(d) else []
        if not names:
            print(f"warning: no {'/'.join(suffixes)} files in {d}; split '{split}' not written")
            continue
        names = names[:max_books]
        out[split] = (_read_files(d, split, names), len(names))
    if not out:
        raise SystemExit(f"error: {input_dir} has none of the folders {', '.join(SPLITS)} with "
                         f"{'/'.join(suffixes)} files in them")
    return out


def _read_files(folder, split, names):
    # a generator function, not an inline generator expression: that one would see the loop's last `folder`
    for n in names:
        with open(os.path.join(folder, n), "rb") as f:
            yield f"{split}/{n}", f.read()
