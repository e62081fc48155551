import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from data.prepare_common import write_meta, write_split  # noqa: E402
from data.synthetic.prepare import ensure_synthetic, generate_corpus  # noqa: E402
from dataset import TokenData  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402

BOOKS = {
    "train": ["Call me Ishmael. Some years ago—never mind how long precisely—", "It is a truth universally acknowledged.\n",
              "Happy families are all alike; «chacune» 東京 🙂\n\n"],
    "validation": ["The sky above the port.", "Once upon a time\nthere was a king.\n", "$x^2 + y^2 = z^2$ \\qed"],
    "test": ["All this happened, more or less.", "Dies irae, dies illa.", "The end <|endoftext|> is not the end."],
}


def write_books(root, suffix=".txt"):
    """3 good books per split, plus in train an empty book and a non-UTF-8 one (both must be skipped)."""
    for split, texts in BOOKS.items():
        os.makedirs(root / split)
        for i, text in enumerate(texts):
            (root / split / f"{i}{suffix}").write_text(text, encoding="utf-8")
    (root / "train" / "3_empty.txt").write_text("  \n")
    (root / "train" / "4_latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (root / "train" / "notes.md").write_text("not a book")


def check_books(out):
    tok = get_tokenizer("gpt2")
    for split, texts in BOOKS.items():
        data = TokenData(str(out), split)
        assert data.num_books == len(texts) == data.meta["splits"][split]["books"]
        assert len(data) == data.book_offsets[-1] == data.meta["splits"][split]["tokens"]
        for i, text in enumerate(texts):
            book = data.book(i)
            assert book[-1] == tok.eot and tok.eot not in book[:-1]
            assert tok.decode(book[:-1]) == text
    assert data.meta["tokenizer"] == "gpt2" and data.meta["vocab_size"] == 50257 and data.meta["eot"] == 50256


def test_pg19_prepare_from_a_local_folder_writes_books_and_skips_bad_files(tmp_path):
    write_books(tmp_path / "in")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "data/pg19/prepare.py", "--input", str(tmp_path / "in"), "--out", str(out),
                        "--workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "skipped 2 documents (1 empty, 1 not UTF-8)" in r.stdout
    assert "train/3_empty.txt" in r.stderr and "train/4_latin1.txt" in r.stderr
    check_books(out)
    assert TokenData(str(out), "train").meta["splits"]["train"]["skipped"] == {"empty": 1, "not UTF-8": 1}


def test_arxiv_math_prepare_reads_tex_files_with_the_same_writer(tmp_path, capsys):
    from data.arxiv_math.prepare import main
    write_books(tmp_path / "in", suffix=".tex")
    main(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert "skipped 2 documents" in capsys.readouterr().out
    check_books(tmp_path / "out")


def test_arxiv_math_keeps_only_arxiv_rows_of_proof_pile(tmp_path):
    import gzip
    import json
    from data.arxiv_math.prepare import arxiv_docs
    rows = [{"text": "\\section{A}", "meta": {"config": "arxiv", "file": "1812.02537/v5 arxiv/a.tex"}},
            {"text": "theorem foo", "meta": {"config": "formal"}},
            {"text": "\\section{B}", "meta": json.dumps({"config": "arxiv"})}]
    path = tmp_path / "shard.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    assert list(arxiv_docs([str(path)])) == [("1812.02537/v5 arxiv/a.tex", "\\section{A}"),
                                             ("shard.jsonl.gz:2", "\\section{B}")]


# ----------------------------------------------------------------------------- synthetic corpus
SMALL = dict(doc_len=512, train_docs=20, val_docs=4, test_docs=4)


def test_synthetic_corpus_is_deterministic_from_its_seed():
    a, b, c = generate_corpus(seed=1, **SMALL), generate_corpus(seed=1, **SMALL), generate_corpus(seed=2, **SMALL)
    for split in a:
        assert all(np.array_equal(x, y) for x, y in zip(a[split], b[split]))
    assert not np.array_equal(a["train"][0], c["train"][0])


@pytest.mark.parametrize("name", ["byte", "gpt2"])
def test_synthetic_queries_restate_facts_stated_earlier_in_the_same_document(name):
    tok = get_tokenizer(name)
    n_facts, gap = 4, 128
    for doc in generate_corpus(seed=3, tokenizer=name, n_facts=n_facts, n_queries=8, gap=gap, **SMALL)["train"]:
        assert len(doc) == SMALL["doc_len"] + 1 and doc[-1] == tok.eot and tok.eot not in doc[:-1]
        text = tok.decode(doc[:-1])
        lines = [(m.start(), m.group(1), m.group(2)) for m in re.finditer(r"key (\w{3}) = (\d{4})\.\n", text)]
        facts, queries = lines[:n_facts], lines[n_facts:]
        assert [pos for pos, _, _ in facts] == [16 * i for i in range(n_facts)]  # the facts open the document
        assert len({k for _, k, _ in facts}) == n_facts and len(queries) == 8  # all queries complete, none cut off
        values = {k: v for _, k, v in facts}
        fact_end = len(tok.encode(text[:facts[-1][0] + 16]))
        for pos, key, value in queries:
            assert values[key] == value
            assert len(tok.encode(text[:pos])) >= fact_end + gap  # asked many segments later
        assert text.count("key") == n_facts + 8


def test_ensure_synthetic_generates_once_and_again_when_params_change(tmp_path):
    out = str(tmp_path / "synthetic")
    assert ensure_synthetic(out, **SMALL) == out
    mtime = os.path.getmtime(os.path.join(out, "train.bin"))
    ensure_synthetic(out, **SMALL)
    assert os.path.getmtime(os.path.join(out, "train.bin")) == mtime
    ensure_synthetic(out, **{**SMALL, "doc_len": 256, "n_queries": 4})
    data = TokenData(out, "validation")
    assert data.meta["tokenizer"] == "byte" and data.num_books == 4 and len(data) == 4 * 257
    x, y = data.sample_batch(8, 256, torch.Generator().manual_seed(0))  # doc_len == seq_len: one window per doc
    assert all(row[:4].tolist() == list(b"key ") for row in x)


def test_synthetic_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown synthetic corpus option"):
        generate_corpus(doclen=5)
    with pytest.raises(ValueError, match="doc_len=64 is too short"):
        generate_corpus(doc_len=64, train_docs=1)


# ----------------------------------------------------------------------------- TokenData
def token_corpus(tmp_path, lengths, name="corpus"):
    """A split whose token at stream position p is p (so a window tells where it came from)."""
    out = tmp_path / name
    os.makedirs(out)
    off = np.concatenate([[0], np.cumsum(lengths)])
    docs = ((str(i), np.arange(off[i], off[i + 1], dtype=np.uint16), None) for i in range(len(lengths)))
    write_meta(str(out), "gpt2", "test", {"train": write_split(str(out), "train", docs)})
    return TokenData(str(out), "train")


def test_windows_stay_inside_books_long_enough_to_hold_them(tmp_path):
    T = 64
    data = token_corpus(tmp_path, [65, 100, 300, 65, 200])
    x, y = data.sample_batch(2000, T, torch.Generator().manual_seed(0))
    starts = x[:, 0].numpy()
    book = np.searchsorted(data.book_offsets, starts, side="right") - 1
    assert (starts + T + 1 <= data.book_offsets[book + 1]).all()  # the window and its last target fit in the book
    assert set(book) == set(range(5))
    assert np.isin(starts, data.book_offsets[[0, 3]]).sum() > 0  # a 65-token book has exactly one window: itself


def test_short_books_are_read_as_one_stream(tmp_path):
    T = 64
    data = token_corpus(tmp_path, [10, 30, 20, 40, 100])
    starts = data.sample_batch(2000, T, torch.Generator().manual_seed(0))[0][:, 0].numpy()
    n = len(data)
    assert starts.min() == 0 and (starts + T + 1 <= n).all()
    assert (starts < data.book_offsets[4]).any()  # windows starting in a short book run on into the next books
    long_book = starts >= data.book_offsets[4]
    assert (starts[long_book] <= n - T - 1).all()


def test_y_is_x_shifted_by_one(tmp_path):
    data = token_corpus(tmp_path, [50, 300, 70])
    x, y = data.sample_batch(16, 32, torch.Generator().manual_seed(1))
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (16, 32)
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y, x + 1)  # token p is p


def test_same_generator_state_gives_the_same_batch(tmp_path):
    data = token_corpus(tmp_path, [500, 700])
    g = torch.Generator().manual_seed(123)
    state = g.get_state()
    a = data.sample_batch(8, 100, g)
    b = data.sample_batch(8, 100, g)
    g.set_state(state)
    again = pickle.loads(pickle.dumps(data)).sample_batch(8, 100, g)
    assert torch.equal(a[0], again[0]) and torch.equal(a[1], again[1]) and not torch.equal(a[0], b[0])


def test_seq_len_longer_than_the_split_is_a_clear_error(tmp_path):
    data = token_corpus(tmp_path, [20, 30])
    with pytest.raises(ValueError, match="smaller seq_len"):
        data.sample_batch(2, 50, torch.Generator())


def test_missing_data_names_the_prepare_command(tmp_path):
    with pytest.raises(SystemExit, match=r"python data/pg19/prepare\.py --out .*pg19"):
        TokenData(str(tmp_path / "pg19"), "train")
    with pytest.raises(SystemExit, match=r"python data/synthetic/prepare\.py`"):
        TokenData(os.path.join(REPO, "data", "synthetic"), "no_such_split")
    # the byte-token folder of configs/tiny_pg19_*.py
    with pytest.raises(SystemExit, match=r"`python data/pg19/prepare\.py --tokenizer byte --out .*pg19_byte`"):
        TokenData(str(tmp_path / "pg19_byte"), "train")


def test_a_synthetic_corpus_for_another_seq_len_goes_beside_the_one_there(tmp_path, monkeypatch):
    # A checkpoint trained on data/synthetic must still be scored on the same data after a run with another seq_len.
    import dataset
    monkeypatch.setattr(dataset, "REPO_ROOT", str(tmp_path))
    root = tmp_path / "data" / "synthetic"
    root.mkdir(parents=True)
    ensure_synthetic(str(root), **{**SMALL, "doc_len": 256, "n_queries": 4, "train_docs": 3})
    before = (root / "train.bin").read_bytes()
    assert dataset.synthetic_data_dir(str(root), 256, make=True) == str(root)
    other = dataset.synthetic_data_dir(str(root), 320, make=True)
    assert other == os.path.join(str(root), "len320") and (root / "train.bin").read_bytes() == before
    assert TokenData(other, "train").meta["params"]["doc_len"] == 320
    assert TokenData(other, "train").meta["params"]["train_docs"] == 3  # the other options it was made with
    assert dataset.synthetic_data_dir(str(root), 320, make=False) == other
    elsewhere = tmp_path / "mine"
    assert dataset.synthetic_data_dir(str(elsewhere), 320, make=True) == str(elsewhere)  # only data/synthetic
    assert not elsewhere.exists()
