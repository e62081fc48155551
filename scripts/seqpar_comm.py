"""
Bytes one rank sends per layer under sequence parallelism (parallel.py), for LongNet's dilated pattern
(w = 2048..32768, r = 1, 2, 4, 6, 12; arXiv:2307.02486) with 8 heads x 128 in bf16, and for Infini-attention's
memory hand-over. Counted as a ring all-gather / reduce-scatter sends: (G-1) x the chunk each of G ranks holds.

    python scripts/seqpar_comm.py                 # the tables, from parallel.communication_per_layer
    python scripts/seqpar_comm.py --measure       # also a CPU gloo run at 1/64 scale (8 processes): the bytes
                                                  # actually handed to the collectives, against the formula

--measure keeps every ratio of the full-scale case (w/N, N/P, r) and shrinks w, N by 64 and the head size to 16,
so each pattern spans the same number of ranks; the bytes then differ from full scale only by those factors.
"""

import argparse
import datetime
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
from model import ATTENTION, GPTConfig  # noqa: E402
from parallel import communication_per_layer  # noqa: E402

PAPER = dict(vocab_size=64, n_layer=1, n_head=8, n_embd=1024, attn='dilated',
             dilated_segments=(2048, 4096, 8192, 16384, 32768), dilated_rates=(1, 2, 4, 6, 12))
SIZES = (2**15, 2**17, 2**20)  # 32K, 128K, 1M tokens
MB = 2**20


def name(n):
    return f"{n // 2**20}M" if n >= 2**20 else f"{n // 2**10}K"


def full_kv_bytes(cfg, n, p, element_size=2):
    """For comparison: a ring all-gather of the whole K and V (no sparsification): grows with N."""
    return (p - 1) * (n // p) * cfg.n_head * cfg.head_size * 2 * element_size


def dilated_table(cfg, rows, title):
    print(f"\n{title}\n")
    head = ' '.join(f"w={w} r={r}".rjust(15) for w, r in zip(cfg.dilated_segments, cfg.dilated_rates))
    print(f"| {'N':>5} | {'P':>4} | {'N/P':>7} | {head} | {'forward':>9} | {'backward':>9} | {'full K/V':>10} |")
    for n, p in rows:
        c = communication_per_layer(cfg, n, p)
        cells = ' '.join((f"{b / MB:.2f} MiB G={g}" if g > 1 else 'local').rjust(15) for _, _, g, b in c['patterns'])
        print(f"| {name(n):>5} | {p:>4} | {n // p:>7} | {cells} | {c['forward'] / MB:>5.2f} MiB | "
              f"{c['backward'] / MB:>5.2f} MiB | {full_kv_bytes(cfg, n, p) / MB:>6.0f} MiB |")


def tables(ranks):
    cfg = GPTConfig(**PAPER)
    dilated_table(cfg, [(n, ranks) for n in SIZES],
                  f"Dilated, paper pattern, {ranks} ranks, 8 heads x 128, bf16, batch 1: MiB one rank sends per layer "
                  f"(rank 0; G = ranks sharing the segment)")
    dilated_table(cfg, [(n, n // 4096) for n in SIZES],
                  "Dilated, paper pattern, 4096 tokens per rank (ranks added with N, LongNet's setting): constant")
    print()
    for n in SIZES:  # LongNet's scaling schedule: w doubles up to N with r, so w/r = 2048 rows per head and pattern
        k = (n // 2048).bit_length()
        grown = GPTConfig(**{**PAPER, 'dilated_segments': tuple(2048 << i for i in range(k)),
                             'dilated_rates': tuple(1 << i for i in range(k))})
        c = communication_per_layer(grown, n, ranks)
        print(f"Dilated, w = 2048·2^i up to N with r = 2^i, {ranks} ranks, N={name(n)}: {k} patterns, forward "
              f"{c['forward'] / MB:.2f} MiB per layer (only patterns with N/P < w <= N communicate, at most "
              f"log2(P) of them; once r > H = 8 every residue still has a head (model.head_offsets), so such a "
              f"pattern sends about all N/P rows of K and V instead of H/r of them)")
    linear = communication_per_layer(GPTConfig(**{**PAPER, 'attn': 'infini'}), 2**20, ranks)
    delta = communication_per_layer(GPTConfig(**{**PAPER, 'attn': 'infini', 'mem_update': 'delta'}), 2**20, ranks)
    print(f"\nInfini, {ranks} ranks, any N, per layer: linear {linear['forward'] / MB:.2f} MiB forward and backward "
          f"(D×(D+1) float32 per head, all-gathered); delta {delta['forward'] / MB:.2f} MiB to the next rank "
          f"(and as much back in the backward)")


def measure_worker(rank, world, init_file, queue):
    import torch.distributed as dist
    from parallel import count_communication, make_sequence_parallel, sent_bytes
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    small = tuple(w // 64 for w in PAPER['dilated_segments'])
    cfg = GPTConfig(**{**PAPER, 'n_embd': 8 * 16, 'dilated_segments': small})
    torch.manual_seed(0)
    layer = make_sequence_parallel(ATTENTION['dilated'](cfg).to(torch.bfloat16))
    for n in (s // 64 for s in SIZES):
        x = torch.randn(1, n // world, cfg.n_embd, dtype=torch.bfloat16, requires_grad=True)
        with count_communication() as fwd:
            y, _ = layer(x)
        with count_communication() as bwd:
            y.float().sum().backward()
        expect = communication_per_layer(cfg, n, world, rank)
        queue.put((rank, n, sum(sent_bytes(fwd).values()), sum(sent_bytes(bwd).values()),
                   expect['forward'], expect['backward']))
    dist.destroy_process_group()


def measure(ranks):
    import torch.multiprocessing as mp
    ctx = mp.get_context('spawn')
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(measure_worker, args=(ranks, os.path.join(tmp, 'init'), queue), nprocs=ranks,
                           start_method='spawn')
    rows = sorted(queue.get() for _ in range(ranks * len(SIZES)))
    print(f"\nMeasured at 1/64 scale (w = 32..512, 8 heads x 16, bf16, {ranks} gloo processes on CPU): bytes each rank "
          f"handed to the collectives (as ring-sent bytes) vs parallel.communication_per_layer\n")
    print("| rank | N | forward measured | forward formula | backward measured | backward formula |")
    ok = True
    for rank, n, f, b, ef, eb in rows:
        ok &= (f, b) == (ef, eb)
        print(f"| {rank} | {n} | {f} | {ef} | {b} | {eb} |")
    print("all equal" if ok else "MISMATCH")
    return ok


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--ranks', type=int, default=8)
    parser.add_argument('--measure', action='store_true', help='also measure in a CPU gloo run at 1/64 scale')
    args = parser.parse_args()
    tables(args.ranks)
    if args.measure and not measure(args.ranks):
        raise SystemExit("error: measured bytes differ from the formula")
