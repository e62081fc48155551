"""
Synthetic long-range recall corpus: generated locally (no network), deterministic from --seed, a few MB in seconds.
The data of the tiny CPU configs (configs/tiny_*.py, the PG19 ones aside) and train.py's default data_dir for
dataset='tokens': a ~1M-parameter model trains on it in minutes.

A document states a few facts first, then runs on with filler sentences from a small fixed set, and restates facts
("queries") at least `gap` tokens later, i.e. several segments away:

    key xq7 = 4821.
    key bm2 = 0937.
    the river runs down to the sea.
    ...
    key xq7 = 4821.

The filler is nearly predictable and a query's key is one of the document's keys, but a query's value is
predictable only by remembering its fact: a model that sees only its own segment stays at chance on those digits
(ln 10 nats each), a model with memory (Infini-attention) or full attention can get them right (in the tiny
configs' 300 steps none does yet: the README's results).

    python data/synthetic/prepare.py                          # byte tokenizer (vocab 256), 1024-token documents
    python data/synthetic/prepare.py --doc_len 512 --tokenizer gpt2

doc_len counts a document's tokens without its EOT. With doc_len == seq_len every training window is exactly one
document, facts first (TokenData keeps a window inside a book that has seq_len+1 tokens). train.py makes
data/synthetic on first use, for its seq_len:
    from data.synthetic.prepare import ensure_synthetic
    data_dir = ensure_synthetic(doc_len=seq_len)    # generates data/synthetic/*.bin unless there with these params
"""
import argparse
import json
import os
import random
import sys

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))  # repo root
from data.prepare_common import SPLITS, write_meta, write_split  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULTS = dict(seed=1337, doc_len=1024, n_facts=4, n_queries=8, gap=None,  # gap None = doc_len // 4
                train_docs=4000, val_docs=200, test_docs=200, tokenizer="byte")
FILLER = [  # no "key" in any of them, so every "key ..." line is a fact or a query
    "the grass is green and the sky is blue.\n",
    "the sun is warm and the wind is soft.\n",
    "a bird sings in the old oak tree.\n",
    "the river runs down to the sea.\n",
    "we walk home along the quiet road.\n",
    "the lamp is lit and the tea is hot.\n",
    "snow falls on the roofs of the town.\n",
    "the dog sleeps by the open door.\n",
]
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def fact_line(key, value):
    return f"key {key} = {value}.\n"


def make_document(rng, tok, doc_len, n_facts, n_queries, gap):
    """Token ids (exactly doc_len, no EOT) of one document."""
    keys = []
    while len(keys) < n_facts:  # a list, not a set: set order would depend on PYTHONHASHSEED
        key = rng.choice(LETTERS) + rng.choice(LETTERS + "0123456789") + rng.choice(LETTERS + "0123456789")
        if key not in keys:
            keys.append(key)
    facts = [fact_line(k, f"{rng.randrange(10000):04d}") for k in keys]
    fact_len = [len(tok.encode(f)) for f in facts]
    filler_len = [len(tok.encode(s)) for s in FILLER]
    n = sum(fact_len)
    # queries start in [first, last]; `last` leaves room for them all before the document is cut at doc_len
    first, last = n + gap, doc_len - max(filler_len) - n_queries * max(fact_len)
    if last < first:
        raise ValueError(f"doc_len={doc_len} is too short for {n_facts} facts, gap={gap} and {n_queries} queries; "
                         f"use doc_len >= {doc_len + first - last} or a smaller gap")
    when = sorted(rng.randint(first, last) for _ in range(n_queries))
    pieces = list(facts)
    while n < doc_len:
        if when and n >= when[0]:
            when.pop(0)
            i = rng.randrange(n_facts)
            pieces.append(facts[i])
            n += fact_len[i]
        else:
            i = rng.randrange(len(FILLER))
            pieces.append(FILLER[i])
            n += filler_len[i]
    # pieces meet at "\n", where GPT-2's split pattern cuts anyway, so summed lengths are exact; cut the last filler
    return tok.encode("".join(pieces))[:doc_len]


def check_params(params):
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown synthetic corpus option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    for name in ("doc_len", "n_facts", "train_docs", "val_docs", "test_docs"):
        if p[name] < 1:
            raise ValueError(f"synthetic corpus: {name}={p[name]} must be at least 1")
    return p


def generate_corpus(**params):
    """{split: [uint16 array of one document, EOT last]} for train/validation/test."""
    p = check_params(params)
    tok = get_tokenizer(p["tokenizer"])
    gap = p["gap"] if p["gap"] is not None else p["doc_len"] // 4
    counts = dict(zip(SPLITS, (p["train_docs"], p["val_docs"], p["test_docs"])))
    corpus = {}
    for split, count in counts.items():
        rng = random.Random(f"{p['seed']}/{split}")  # a stream per split: validation does not move with train_docs
        corpus[split] = [np.array(make_document(rng, tok, p["doc_len"], p["n_facts"], p["n_queries"], gap) + [tok.eot],
                                  dtype=np.uint16) for _ in range(count)]
    return corpus


def write_corpus(out_dir=HERE, **params):
    """Generate the corpus and write it in the CONTRACTS format to out_dir; returns meta (its params included)."""
    p = check_params(params)
    corpus = generate_corpus(**p)
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, "meta.json")):
        os.remove(os.path.join(out_dir, "meta.json"))
    splits = {split: write_split(out_dir, split, ((f"{split}/{i}", ids, None) for i, ids in enumerate(docs)),
                                 total=len(docs))
              for split, docs in corpus.items()}
    return write_meta(out_dir, p["tokenizer"], "synthetic key-value recall", splits, params=p)


def ensure_synthetic(out_dir=HERE, **params):
    """out_dir, after generating the corpus there unless one with the same params is already there."""
    p = check_params(params)
    try:
        with open(os.path.join(out_dir, "meta.json")) as f:
            done = json.load(f).get("params") == p
    except (OSError, ValueError):
        done = False
    if not (done and all(os.path.exists(os.path.join(out_dir, f"{s}.bin")) for s in SPLITS)):
        print(f"generating the synthetic corpus in {out_dir}")
        write_corpus(out_dir, **p)
    return out_dir


def main(argv=None):
    ap = argparse.ArgumentParser(description="generate the synthetic key-value recall corpus")
    ap.add_argument("--out", default=HERE, help="output folder (default: %(default)s)")
    ap.add_argument("--tokenizer", default=DEFAULTS["tokenizer"], choices=["byte", "gpt2"])
    for name in ("seed", "doc_len", "n_facts", "n_queries", "gap", "train_docs", "val_docs", "test_docs"):
        ap.add_argument(f"--{name}", type=int, default=DEFAULTS[name])
    args = vars(ap.parse_args(argv))
    out = args.pop("out")
    meta = write_corpus(out, **args)
    for split, s in meta["splits"].items():
        print(f"{split}: {s['books']:,} documents, {s['tokens']:,} tokens")
    print(f"wrote {out}")
    return meta


if __name__ == "__main__":
    main()
