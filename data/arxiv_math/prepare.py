"""
Arxiv-math: the arXiv subset of proof-pile (Hugging Face dataset hoskinson-center/proof-pile), the public
stand-in for the arXiv mathematics corpus of long-context perplexity evaluations (Memorizing Transformers,
arXiv:2203.08913, and the papers that compare against it).

    python data/arxiv_math/prepare.py                           # download proof-pile's jsonl.gz shards (~13 GB)
    python data/arxiv_math/prepare.py --input path/to/math-mini --out data/arxiv_math   # offline: local .tex/.txt

proof-pile ships train/proofpile_train_{0..20}.jsonl.gz, dev/proofpile_dev.jsonl.gz, test/proofpile_test.jsonl.gz;
each line is {"text": ..., "meta": {"config": "arxiv" | "books" | "formal" | ..., ...}} and one line is one
document (for arXiv, one .tex source file). Only config == "arxiv" is kept; dev becomes our "validation".
Downloads go to <out>/raw/ and are kept, so a rerun does not fetch them again.
"""
import gzip
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))  # repo root
from data.prepare_common import common_args, local_docs, prepare  # noqa: E402

# pinned so that the corpus does not change under us; the shard list follows the dataset's proof-pile.py loader
REVISION = "490b980249446f2f3bd2df3a8cf085d0f2de240a"
URL = "https://huggingface.co/datasets/hoskinson-center/proof-pile/resolve/" + REVISION + "/{path}"
SHARDS = {
    "train": [f"train/proofpile_train_{i}.jsonl.gz" for i in range(21)],
    "validation": ["dev/proofpile_dev.jsonl.gz"],
    "test": ["test/proofpile_test.jsonl.gz"],
}


def download_file(url, path):
    import requests
    from tqdm import tqdm
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with requests.get(url, stream=True, timeout=60) as r:
            r.raise_for_status()
            bar = tqdm(total=int(r.headers.get("content-length", 0)), unit="B", unit_scale=True,
                       desc=os.path.basename(path))
            with open(path + ".tmp", "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
            bar.close()
    except requests.RequestException as e:
        raise SystemExit(f"error: could not download {url} ({e}); offline, tokenize local files with --input DIR")
    os.replace(path + ".tmp", path)
    return path


def arxiv_docs(paths):
    """Yield (name, text) of the arXiv documents in proof-pile jsonl.gz shards."""
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                row = json.loads(line)
                meta = row.get("meta") or {}
                if isinstance(meta, str):  # the HF loader script stores meta as a JSON string
                    meta = json.loads(meta)
                if meta.get("config") == "arxiv":
                    yield meta.get("file") or f"{os.path.basename(path)}:{i}", row["text"]


def main(argv=None):
    p = common_args(__doc__.strip().splitlines()[0], default_out=os.path.dirname(os.path.abspath(__file__)))
    p.add_argument("--max_shards", type=int, default=None, help="download only the first N of the 21 train shards")
    args = p.parse_args(argv)
    if args.input is not None:
        docs = local_docs(args.input, (".tex", ".txt"), args.max_books)
        source = f"arxiv_math ({os.path.abspath(args.input)})"
    else:
        raw = os.path.join(args.out, "raw")
        docs = {}
        for split, shards in SHARDS.items():
            shards = shards[:args.max_shards] if split == "train" else shards
            paths = [download_file(URL.format(path=s), os.path.join(raw, s)) for s in shards]
            docs[split] = (itertools.islice(arxiv_docs(paths), args.max_books), None)
        source = f"proof-pile arxiv subset (hoskinson-center/proof-pile@{REVISION[:8]})"
    return prepare(docs, args.out, args.tokenizer, source=source, workers=args.workers)


if __name__ == "__main__":
    main()
