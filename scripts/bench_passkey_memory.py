"""
Peak memory and wall time of passkey.py against --len: memory must stay flat (the prompt is streamed through a
fixed-size state), and on a CPU a tiny checkpoint must finish --len 1048576 (start, middle, end) in <= 5 minutes.

    python scripts/bench_passkey_memory.py                                   # out-quickstart/ckpt.pt
    python scripts/bench_passkey_memory.py --ckpt out-tiny-infini/ckpt.pt --lens 8K,64K,1M --json bench_pk.json

Each length runs `python passkey.py --ckpt CKPT --len L` as its own process, and its peak resident set size is
read from the kernel (os.wait4's ru_maxrss for that child alone), so one length's peak cannot hide another's.
Without a checkpoint (none given and out-quickstart/ckpt.pt missing) a random-weights model of the same
shape is used: fine for memory and time, meaningless for accuracy.
"""

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
DEFAULT_CKPT = os.path.join(REPO, 'out-quickstart', 'ckpt.pt')
FLAT = 1.2        # peak RSS at the longest length over the shortest must stay within 20%
BUDGET_S = 300.0  # the 1M-token run on a CPU


def random_tiny_checkpoint(path):
    """train.py's default model shape (configs/tiny_synthetic.py) with random weights, byte tokenizer."""
    from dataclasses import asdict
    import torch
    from checkpoint import save_checkpoint
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=256, n_layer=4, n_head=4, n_embd=128, attn='infini', segment_len=128))
    save_checkpoint(path, {'model': model.state_dict(), 'model_args': asdict(model.config), 'tokenizer': 'byte',
                           'iter_num': 0})
    return path


def run_passkey(ckpt, length, extra, workdir):
    """One passkey.py process: (wall seconds, its own peak RSS in bytes, its JSON report, its output)."""
    report_path = os.path.join(workdir, f'passkey_{length}.json')
    out_path = os.path.join(workdir, f'passkey_{length}.txt')
    cmd = [sys.executable, os.path.join(REPO, 'passkey.py'), '--ckpt', ckpt, '--len', str(length),
           '--device', 'cpu', '--json', report_path, *extra]
    with open(out_path, 'w') as out:
        t0 = time.time()
        pid = os.posix_spawn(sys.executable, cmd, os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                                           (os.POSIX_SPAWN_DUP2, out.fileno(), 2)])
        _, status, usage = os.wait4(pid, 0)  # this child's own rusage
        wall = time.time() - t0
    with open(out_path) as f:
        output = f.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"error: passkey.py --len {length} failed (exit {code}): {output.strip().splitlines()[-1:]}")
    with open(report_path) as f:
        report = json.load(f)
    return wall, usage.ru_maxrss * 1024, report, output  # Linux: ru_maxrss in KiB


def main(argv=None):
    from sample import parse_size
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--ckpt', default=None, help=f'default: {os.path.relpath(DEFAULT_CKPT, REPO)}, else random weights')
    p.add_argument('--lens', default='8K,64K,1M', help='lengths, comma-separated')
    p.add_argument('--depth', default=None, help="passed to passkey.py (default: its own, start,middle,end)")
    p.add_argument('--trials', default=None, help='passed to passkey.py (default: its own, 1)')
    p.add_argument('--threads', default=None, help='passed to passkey.py (default: its own)')
    p.add_argument('--json', default=None, help='write the measurements here')
    args = p.parse_args(argv)
    lengths = [parse_size(s) for s in args.lens.split(',') if s.strip()]
    extra = [x for flag in ('depth', 'trials', 'threads') if getattr(args, flag) is not None
             for x in (f'--{flag}', str(getattr(args, flag)))]

    with tempfile.TemporaryDirectory() as workdir:
        ckpt, source = args.ckpt, 'given'
        if ckpt is None:
            if os.path.exists(DEFAULT_CKPT):
                ckpt, source = DEFAULT_CKPT, 'trained by train.py'
            else:
                ckpt, source = random_tiny_checkpoint(os.path.join(workdir, 'random.pt')), 'random weights'
        print(f"bench_passkey_memory: {ckpt} ({source}), passkey.py {' '.join(extra) or '(defaults)'}, "
              f"one process per length, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        print(f"{'len':>10} {'wall s':>9} {'tok/s':>9} {'peak RSS MiB':>13} {'exact':>6} {'token acc':>10}")
        rows = []
        for length in lengths:
            wall, rss, report, _ = run_passkey(ckpt, length, extra, workdir)
            results = report['results']
            row = dict(len=length, wall_s=wall, tokens_per_s=report['tokens_per_s'], peak_rss_bytes=rss,
                       exact=sum(r['exact'] for r in results) / len(results),
                       token_acc=sum(r['token_acc'] for r in results) / len(results),
                       depths=[r['depth'] for r in results], trials=report['trials'])
            rows.append(row)
            print(f"{length:>10,} {wall:>9.1f} {row['tokens_per_s']:>9,.0f} {rss / 2**20:>13,.0f} "
                  f"{100 * row['exact']:>5.0f}% {100 * row['token_acc']:>9.0f}%", flush=True)

    rss = [r['peak_rss_bytes'] for r in rows]
    ratio = max(rss) / min(rss)
    checks = [(f"peak RSS flat: max/min = {ratio:.3f} <= {FLAT}", ratio <= FLAT)]
    for r in rows:
        if r['len'] >= 1 << 20:
            checks.append((f"--len {r['len']:,}: wall time {r['wall_s']:.0f} s <= {BUDGET_S:.0f} s",
                           r['wall_s'] <= BUDGET_S))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(ckpt=ckpt, source=source, extra=extra, rows=rows, rss_ratio=ratio,
                           checks=[dict(check=t, ok=ok) for t, ok in checks]), f, indent=1)
        print(f"wrote {args.json}")
    return all(ok for _, ok in checks)


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
