"""
PG19 (Rae et al. 2019, "Compressive Transformers for Long-Range Sequence Modelling", arXiv:1911.05507): 28,752
Project Gutenberg books published before 1919, one document per book, split by book into train/validation/test.

    python data/pg19/prepare.py                                # download from DeepMind's public GCS bucket (~11 GB)
    python data/pg19/prepare.py --input path/to/pg19-mini --out data/pg19_byte --tokenizer byte   # a local folder

Downloads go to <out>/raw/{train,validation,test}/<id>.txt (files already there are kept, so a rerun resumes),
then the books are tokenized (GPT-2 BPE, or UTF-8 bytes with --tokenizer byte: the tiny CPU configs use those)
into <out>/<split>.bin, <split>_books.npy and meta.json.
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))  # repo root
from data.prepare_common import SPLITS, common_args, local_docs, prepare  # noqa: E402

BUCKET = "deepmind-gutenberg"
LIST_URL = f"https://storage.googleapis.com/storage/v1/b/{BUCKET}/o"  # GCS JSON API, paged by nextPageToken
FILE_URL = f"https://storage.googleapis.com/{BUCKET}/" + "{name}"


def list_books(split, max_books=None):
    """[(object name, size)] of <split>/*.txt in the bucket."""
    import requests
    books, page = [], None
    while True:
        params = {"prefix": f"{split}/", "fields": "items(name,size),nextPageToken", "maxResults": 1000}
        if page:
            params["pageToken"] = page
        r = requests.get(LIST_URL, params=params, timeout=60)
        r.raise_for_status()
        listing = r.json()
        books += [(o["name"], int(o["size"])) for o in listing.get("items", []) if o["name"].endswith(".txt")]
        page = listing.get("nextPageToken")
        if not page or (max_books and len(books) >= max_books):
            return sorted(books)[:max_books]


def fetch(name, size, raw_dir):
    import requests
    path = os.path.join(raw_dir, name)
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    r = requests.get(FILE_URL.format(name=name), timeout=300)
    r.raise_for_status()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        f.write(r.content)
    os.replace(path + ".tmp", path)


def download(raw_dir, max_books=None, threads=16):
    import requests
    from tqdm import tqdm
    try:
        for split in SPLITS:
            books = list_books(split, max_books)
            with ThreadPoolExecutor(threads) as pool:
                jobs = [pool.submit(fetch, name, size, raw_dir) for name, size in books]
                for job in tqdm(jobs, desc=f"download {split}", unit="book"):
                    job.result()
    except requests.RequestException as e:
        raise SystemExit(f"error: could not download PG19 ({e}); offline, tokenize a local copy with --input DIR")


def main(argv=None):
    p = common_args(__doc__.strip().splitlines()[0], default_out=os.path.dirname(os.path.abspath(__file__)))
    p.add_argument("--download_threads", type=int, default=16)
    args = p.parse_args(argv)
    input_dir = args.input
    if input_dir is None:
        input_dir = os.path.join(args.out, "raw")
        download(input_dir, args.max_books, args.download_threads)
    docs = local_docs(input_dir, (".txt",), args.max_books)
    return prepare(docs, args.out, args.tokenizer, source=f"pg19 ({os.path.abspath(input_dir)})", workers=args.workers)


if __name__ == "__main__":
    main()
