"""
Streaming perplexity, per book, on a split of a prepared corpus: how the PG19 / Arxiv-math numbers of
"Leave No Context Behind: Efficient Infinite Context Transformers with Infini-attention" (Munkhdalai et al.,
arXiv:2404.07143, Table 2) are produced here.

    python eval_ppl.py --ckpt out-pg19-infini/ckpt.pt --data_dir data/pg19 --split test --len 32768
    python eval_ppl.py --ckpt out-pg19-infini/ckpt.pt --data_dir data/pg19 --len 100K --json ppl.json
    python eval_ppl.py --ckpt out-tiny-synthetic/ckpt.pt --data_dir data/synthetic --len 0   # whole books
    python eval_ppl.py --ckpt out-tiny-pg19-infini/ckpt.pt --data_dir data/pg19_byte --max_windows 4   # minutes

Each book is cut into consecutive windows of --len tokens (--len 0: the whole book is one window; a book's
tail shorter than --len is left out, and books shorter than --len are skipped, so that every scored token has
the same kind of context; --max_windows N scores only the first N windows of each book, a sample of every book
in a fraction of the time). A window is streamed through the model --chunk tokens per call from an empty
state, carrying memory/caches, and every token's loss is the cross-entropy of predicting it from all tokens
before it in its window (the first token of a window is context only). Reported:
- overall loss and perplexity, token-weighted over every scored token;
- per book;
- loss by position in the window, in --buckets buckets: does later text get easier as the memory fills?

Cost: every position of a window is scored, so every position goes through the LM head; with GPT-2's 50,257
tokens and a small model that head and the cross-entropy are most of the time (docs/cpu.md measures it). Small
models meant for a CPU use byte tokens (configs/tiny_pg19_*.py).
"""

import argparse
import os
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from sample import (add_common_args, autocast_for, check_output, default_chunk, describe_device, load, parse_size,
                    peak_memory, pick_device, plan_chunk, pyplot, save_figure, save_report, set_threads, stream_unit)


def parse_buckets(spec):
    """--buckets: a count of equal-width buckets (e.g. 8), or explicit start positions ('0,2K,8K,32K')."""
    try:
        if ',' in spec:
            return sorted({parse_size(s) for s in spec.split(',') if s.strip()} | {0})
        if int(spec) >= 1:
            return int(spec)
    except (ValueError, argparse.ArgumentTypeError):
        pass
    raise SystemExit(f"error: --buckets {spec!r} must be a number of buckets (e.g. 8) or comma-separated start "
                     f"positions (e.g. 0,2048,8192,32768)")


def bucket_edges(buckets, max_len):
    """Bucket b holds positions edges[b] <= t < edges[b + 1]; the last one runs to the end of the window."""
    edges = buckets if isinstance(buckets, list) else sorted({round(i * max_len / buckets) for i in range(buckets)})
    return np.array(edges + [max(max_len, edges[-1] + 1)], dtype=np.int64)


@torch.inference_mode()
def window_losses(model, tokens, chunk, autocast=None):
    """Per-token losses (float64 numpy, len(tokens) - 1) of one window streamed from an empty state:
    loss[t] = -log p(tokens[t + 1] | tokens[:t + 1])."""
    device = next(model.parameters()).device
    x_all = torch.from_numpy(tokens[:-1].astype(np.int64))
    y_all = torch.from_numpy(tokens[1:].astype(np.int64))
    state, out = None, []
    for start in range(0, len(x_all), chunk):
        x = x_all[start:start + chunk].to(device)[None]
        y = y_all[start:start + chunk].to(device)
        with autocast or nullcontext():
            logits, _, state = model(x, state=state)
        out.append(F.cross_entropy(logits[0].float(), y, reduction='none').double().cpu())
    return torch.cat(out).numpy()


def windows_of(n_tokens, length):
    """(start, n) windows of a book of n_tokens: consecutive windows of length + 1 tokens overlapping by one
    (the last token of one is the first of the next), or the whole book for length 0."""
    if length == 0:
        return [(0, n_tokens)] if n_tokens >= 2 else []
    return [(s, length + 1) for s in range(0, n_tokens - length, length)]


def evaluate(model, data, books, length, chunk, edges, autocast=None, log=print, max_windows=0):
    """Stream every window (the first max_windows, if > 0) of the given books; returns (per-book rows, loss sum
    and token count per bucket)."""
    n_buckets = len(edges) - 1
    sums, counts = np.zeros(n_buckets), np.zeros(n_buckets, dtype=np.int64)
    rows = []
    for i in books:
        tokens = data.book(i)
        book_sum, book_n = 0.0, 0
        windows = windows_of(len(tokens), length)
        for start, n in windows[:max_windows] if max_windows else windows:
            losses = window_losses(model, tokens[start:start + n], chunk, autocast)
            bucket = np.searchsorted(edges, np.arange(len(losses)), side='right') - 1
            sums += np.bincount(bucket, weights=losses, minlength=n_buckets)
            counts += np.bincount(bucket, minlength=n_buckets)
            book_sum, book_n = book_sum + losses.sum(), book_n + len(losses)
        row = dict(book=int(i), book_tokens=len(tokens), tokens=book_n, loss=book_sum / book_n,
                   ppl=float(np.exp(book_sum / book_n)))
        rows.append(row)
        log(f"book {i:>5}: {book_n:>10,} tokens  loss {row['loss']:.4f}  ppl {row['ppl']:10.3f}")
    return rows, sums, counts


def logits_chunk(config, device):
    """Default tokens per call: default_chunk, but every call's logits (chunk x vocab, fp32) within ~1 GiB, in
    whole segments: 4096 tokens for the GPT-2 vocabulary with 2048-token segments."""
    chunk, unit = default_chunk(config, device), stream_unit(config)
    limit = (1 << 30) // (4 * config.vocab_size)
    if chunk <= limit:
        return chunk
    return limit // unit * unit if unit <= limit else limit  # dilated: plan_chunk rounds up to its window again


def choose_books(data, length, max_books):
    """The first max_books books long enough for one window (all of them with --len 0)."""
    sizes = np.diff(data.book_offsets)
    long_enough = np.nonzero(sizes >= (length + 1 if length else 2))[0]
    if len(long_enough) == 0:
        raise SystemExit(f"error: no book of {data.split} in {data.data_dir} has more than {length:,} tokens "
                         f"(the longest has {int(sizes.max()):,}); use a smaller --len, or --len 0 for whole books")
    chosen = long_enough[:max_books] if max_books else long_enough
    return [int(i) for i in chosen], data.num_books - len(long_enough)


def plural(n):
    return '' if n == 1 else 's'


def plot_curve(buckets, path, title):
    plt = pyplot('plot')
    if plt is None:
        return None
    used = [b for b in buckets if b['tokens']]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([(b['start'] + b['end']) / 2 for b in used], [b['loss'] for b in used], 'o-')
    ax.set_xlabel('token position in the window')
    ax.set_ylabel('loss (nats/token)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(plt, fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description='Per-book streaming perplexity (PG19 / Arxiv-math).')
    add_common_args(p)
    p.add_argument('--data_dir', required=True, help='made by data/<name>/prepare.py, e.g. data/pg19')
    p.add_argument('--split', default='test', help='validation or test (or train)')
    p.add_argument('--len', type=parse_size, default=32768,
                   help='tokens per window (e.g. 32768, 100K); 0 = whole books')
    p.add_argument('--max_books', type=int, default=0, help='evaluate only the first N books (0: all)')
    p.add_argument('--max_windows', type=int, default=0,
                   help='score only the first N windows of each book (0: all); a quick sample of every book')
    p.add_argument('--buckets', default='8', help='loss-by-position buckets: a count, or start positions 0,2K,8K')
    p.add_argument('--json', default=None, help='write the summary, every book and every bucket here')
    p.add_argument('--plot', default=None, help='loss-by-position PNG (needs matplotlib)')
    args = p.parse_args(argv)
    if args.max_books < 0:
        raise SystemExit(f"error: --max_books {args.max_books} must be >= 0 (0: all books)")
    if args.max_windows < 0:
        raise SystemExit(f"error: --max_windows {args.max_windows} must be >= 0 (0: every window of each book)")
    buckets = parse_buckets(args.buckets)
    check_output(args.json, '--json')  # before the run: a path that cannot be written would lose its results
    check_output(args.plot, '--plot')

    from dataset import TokenData, resolve_data_dir
    data = TokenData(args.data_dir, args.split)
    device = pick_device(args.device)
    model, tokenizer, ckpt = load(args.ckpt, device)
    run = ckpt.get('config') or {}
    trained_on = run.get('data_dir') if run.get('dataset') == 'tokens' else None
    if trained_on and os.path.realpath(resolve_data_dir(trained_on)) != os.path.realpath(args.data_dir):
        print(f"note: the checkpoint was trained on {trained_on}, not on {args.data_dir}", file=sys.stderr)
    if data.meta.get('tokenizer') != tokenizer.name:
        raise SystemExit(f"error: {args.data_dir} is tokenized with {data.meta.get('tokenizer')!r} but the checkpoint "
                         f"uses the {tokenizer.name!r} tokenizer; prepare the data with the checkpoint's tokenizer")
    books, skipped = choose_books(data, args.len, args.max_books)
    longest = max(int(data.book_offsets[i + 1] - data.book_offsets[i]) for i in books) - 1
    window = args.len or longest
    edges = bucket_edges(buckets, window)
    config = model.config
    autocast, dtype_bytes = autocast_for(device, args.dtype)
    chunk = plan_chunk(config, window, args.chunk or logits_chunk(config, device), device, dtype_bytes)
    set_threads(args.threads, model, device, chunk)

    what = f"windows of {args.len:,} tokens" if args.len else "whole books"
    if args.max_windows:
        what += f" (the first {args.max_windows} of each book)"
    print(f"eval_ppl: {args.ckpt} (attn={config.attn}) on {args.data_dir} {args.split}, {what}, {len(books)} "
          f"book{plural(len(books))}{f' ({skipped} shorter book{plural(skipped)} skipped)' if skipped else ''}, "
          f"{chunk:,} tokens per call on "
          f"{describe_device(device)}")
    t0 = time.time()
    rows, sums, counts = evaluate(model, data, books, args.len, chunk, edges, autocast, max_windows=args.max_windows)
    elapsed = time.time() - t0
    total = int(counts.sum())
    loss = float(sums.sum() / total)
    buckets = [dict(start=int(edges[b]), end=int(min(edges[b + 1], window)), tokens=int(counts[b]),
                    loss=float(sums[b] / counts[b]) if counts[b] else None,
                    ppl=float(np.exp(sums[b] / counts[b])) if counts[b] else None) for b in range(len(counts))]

    print(f"\nloss by position in the window (does later text get easier as memory fills?):")
    print(f"{'positions':>22} {'tokens':>12} {'loss':>8} {'ppl':>10}")
    for b in buckets:
        if b['tokens']:
            print(f"{b['start']:>10,}-{b['end'] - 1:<11,} {b['tokens']:>12,} {b['loss']:8.4f} {b['ppl']:10.3f}")
    peak, kind = peak_memory(device)
    print(f"\noverall: loss {loss:.4f} nats/token, perplexity {np.exp(loss):.3f} over {total:,} tokens of "
          f"{len(books)} book{plural(len(books))} (token-weighted)")
    print(f"{total / max(elapsed, 1e-9):,.0f} tok/s, {elapsed:.1f} s; peak memory {peak / 2**20:,.0f} MiB ({kind})")
    report = dict(ckpt=args.ckpt, model_args=ckpt.get('model_args'), data_dir=args.data_dir, split=args.split,
                  len=args.len, max_windows=args.max_windows, chunk=chunk, device=device, books_skipped=skipped,
                  overall=dict(loss=loss, ppl=float(np.exp(loss)), tokens=total, books=len(books)),
                  books=rows, buckets=buckets, seconds=elapsed, tokens_per_s=total / max(elapsed, 1e-9),
                  peak_memory_bytes=peak, peak_memory_kind=kind)
    save_report(report, args.json, args.plot,
                lambda path: plot_curve(buckets, path, f"{config.attn}: loss by position, {args.data_dir} {args.split}"))
    return report


if __name__ == '__main__':
    main()
