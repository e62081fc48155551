"""
GCA's chunk store while streaming: time per call split into attention, retrieval scoring and store upkeep as the
stream grows to 1M tokens, and the peak memory (RSS) of the batch, next to Infini-attention's of the same size.

    python scripts/bench_gca_store.py --json gca_store.json                   # batch 16 x 1M tokens, gca and infini
    python scripts/bench_gca_store.py --batch 4 --len 256K --json quick.json  # a quick look

Random-weights models of the recall size as it was before stage 1 (configs/recall_infini.py) took n_embd 96, with gca
as scripts/recall_cpu.py trains it: 2 layers, n_embd 64, 2 heads, byte tokens; gca: chunks of 16, a window of 32,
top-8, 1 lower layer; infini: segments of 32. Random tokens are streamed --call tokens per call (passkey.py's default
on a CPU), as sample.stream does: inference mode, no LM head until the end. Each model runs in its own process, so the
peak resident set size read from the kernel (os.wait4) is its own. The time split: attention = the sliding
window and cross-attention modules (infini: its attention); scoring = ChunkRetriever.retrieve (exact top-k
over every stored chunk: the one part allowed to grow with the stream); upkeep = grow_store; the rest (MLP,
embeddings, projections, gathering the neighbours) is the total less these.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
RECALL_SIZE = dict(vocab_size=256, n_layer=2, n_head=2, n_embd=64)
RUNS = [  # name, model overrides
    ('gca', dict(attn='gca', gca_chunk=16, gca_window=32, gca_topk=8, gca_lower_layers=1)),
    ('infini', dict(attn='infini', segment_len=32)),
]
MARKS = [18432, 147456, 1 << 20]  # stream lengths at which calls are timed: the recall stages' 18K, 147K and 1M
WINDOW = 8192                     # the calls ending in the last WINDOW tokens before a mark are averaged
SLOWDOWN = 2.0                    # a prompt of the last mark's length: tokens/s within 2x of the first's


def timed(fn, totals, key):
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        out = fn(*args, **kwargs)
        totals[key] += time.thread_time() - t0
        return out
    return wrapper


def time_modules(modules, totals, key):
    """Forward hooks adding the CPU seconds spent inside any of `modules` to totals[key] (they never nest)."""
    start = {}
    for m in modules:
        m.register_forward_pre_hook(lambda mod, args: start.__setitem__(id(mod), time.thread_time()))
        m.register_forward_hook(lambda mod, args, out: totals.__setitem__(
            key, totals[key] + time.thread_time() - start[id(mod)]))


def child(name, batch, length, call, out):
    """Stream `length` random tokens of `batch` rows through a random model; per call: (tokens so far, tokens of
    the call, its wall seconds, its CPU seconds, and those of attention, scoring, upkeep). Written to `out` as JSON.
    CPU seconds of this one thread: on a shared machine they do not count the time other processes held the core."""
    import torch
    import model as model_py
    from tqdm import tqdm
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = model_py.GPT(model_py.GPTConfig(**RECALL_SIZE, **dict(RUNS)[name])).eval()
    totals = dict(attention=0.0, scoring=0.0, upkeep=0.0)
    time_modules([b.attn for b in model.blocks] + [b.cross for b in model.blocks if hasattr(b, 'cross')],
                 totals, 'attention')
    if model.retriever is not None:
        model.retriever.retrieve = timed(model.retriever.retrieve, totals, 'scoring')
        model_py.grow_store = timed(model_py.grow_store, totals, 'upkeep')
    gen = torch.Generator().manual_seed(0)
    calls, state, allocations, pointer, t_start = [], None, 0, None, time.time()
    with torch.inference_mode(), tqdm(total=length * batch, unit='tok', unit_scale=True, desc=name,
                                                mininterval=5) as bar:
        for start in range(0, length, call):
            x = torch.randint(0, 256, (batch, min(call, length - start)), generator=gen)
            before = dict(totals)
            wall, cpu = time.perf_counter(), time.thread_time()
            _, _, state = model(x, state=state, last_logits=0)
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            calls.append([start + x.size(1), x.size(1), wall, cpu, *(totals[k] - before[k] for k in totals)])
            if model.retriever is not None:  # the store's buffers moved: allocated anew
                allocations += state[-1].buffers.k.data_ptr() != pointer
                pointer = state[-1].buffers.k.data_ptr()
            bar.update(x.numel())
    result = dict(name=name, batch=batch, len=length, call=call, seconds=time.time() - t_start, calls=calls,
                  threads=torch.get_num_threads())
    if model.retriever is not None:
        store = state[-1]
        result.update(store_bytes=store.nbytes(), store_chunks=store.n, store_allocations=allocations,
                      store_capacity_bytes=sum(t.numel() * t.element_size() for t in store.buffers.tensors()))
    with open(out, 'w') as f:
        json.dump(result, f)


def run_child(name, args, workdir):
    """One model in its own process: (its result, its own peak RSS in bytes)."""
    out = os.path.join(workdir, f'{name}.json')
    cmd = [sys.executable, os.path.abspath(__file__), '--child', name, '--batch', str(args.batch), '--len',
           str(args.len), '--call', str(args.call), '--json', out]
    proc = subprocess.Popen(cmd, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: the {name} run failed (exit {os.waitstatus_to_exitcode(status)}); see above")
    with open(out) as f:
        return json.load(f), usage.ru_maxrss * 1024  # Linux: ru_maxrss in KiB


def at_marks(result, marks):
    """Per mark: CPU ms per call of each part and tokens/s, over the calls ending in the WINDOW tokens before it;
    and tokens/s of the whole stream up to the mark (what streaming a prompt of that length gets)."""
    rows, calls, B = [], result['calls'], result['batch']
    for mark in marks:
        window = [c for c in calls if mark - WINDOW < c[0] <= mark]
        so_far = [c for c in calls if c[0] <= mark]
        if not window:
            continue
        n, tokens = len(window), B * sum(c[1] for c in window)
        wall, cpu, attention, scoring, upkeep = (sum(c[i] for c in window) for i in range(2, 7))
        prompt = B * so_far[-1][0]
        rows.append(dict(len=mark, calls=n, cpu_ms_per_call=1e3 * cpu / n, attention_ms=1e3 * attention / n,
                         scoring_ms=1e3 * scoring / n, upkeep_ms=1e3 * upkeep / n,
                         other_ms=1e3 * (cpu - attention - scoring - upkeep) / n,
                         call_tokens_per_cpu_s=tokens / cpu, call_tokens_per_wall_s=tokens / wall,
                         prompt_tokens_per_cpu_s=prompt / sum(c[3] for c in so_far),
                         prompt_tokens_per_wall_s=prompt / sum(c[2] for c in so_far)))
    return rows


def print_table(runs):
    print(f"\n{'':17} {'CPU ms per call of ' + str(runs[0]['batch']) + ' x ' + str(runs[0]['call']) + ' tokens':^44} "
          f"{'tok/s, this call':^19} {'tok/s, whole prompt':^19}")
    print(f"{'kind':>6} {'stream':>10} {'total':>8} {'attention':>9} {'scoring':>8} {'upkeep':>7} {'other':>7} "
          f"{'CPU':>9} {'wall':>9} {'CPU':>9} {'wall':>9}")
    for r in runs:
        for m in r['marks']:
            print(f"{r['name']:>6} {m['len']:>10,} {m['cpu_ms_per_call']:>8.1f} {m['attention_ms']:>9.1f} "
                  f"{m['scoring_ms']:>8.1f} {m['upkeep_ms']:>7.2f} {m['other_ms']:>7.1f} "
                  f"{m['call_tokens_per_cpu_s']:>9,.0f} {m['call_tokens_per_wall_s']:>9,.0f} "
                  f"{m['prompt_tokens_per_cpu_s']:>9,.0f} {m['prompt_tokens_per_wall_s']:>9,.0f}")
    for r in runs:
        store = (f"; store {r['store_bytes'] / 2**30:.2f} GiB ({r['store_chunks']:,} chunks per prompt), its buffers "
                 f"allocated {r['store_allocations']} times" if 'store_bytes' in r else '')
        print(f"{r['name']:>6}: {r['seconds']:.0f} s, peak RSS {r['peak_rss_bytes'] / 2**20:,.0f} MiB{store}")


def main(argv=None):
    from sample import parse_size
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--batch', type=int, default=16, help='prompts streamed side by side')
    p.add_argument('--len', type=parse_size, default=1 << 20, help='tokens per prompt, e.g. 1M or 256K')
    p.add_argument('--call', type=int, default=256, help="tokens per call (passkey.py's default on a CPU)")
    p.add_argument('--json', required=True, help='write the measurements here')
    p.add_argument('--force', action='store_true', help='overwrite --json if it exists')
    p.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.batch, args.len, args.call, args.json)
        return True
    if os.path.exists(args.json) and not args.force:
        raise SystemExit(f"error: {args.json} exists; pass --force to overwrite it or choose another --json")

    import torch
    load = os.getloadavg()
    print(f"bench_gca_store: batch {args.batch} x {args.len:,} tokens, {args.call} per call, one thread, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, _ in RUNS:
            result, rss = run_child(name, args, workdir)
            marks = [m for m in MARKS if m < args.len] + [args.len]
            result.update(peak_rss_bytes=rss, marks=at_marks(result, marks))
            del result['calls']  # thousands; the marks summarise them
            runs.append(result)

    print_table(runs)
    gca = next(r for r in runs if r['name'] == 'gca')['marks']
    slowdown = gca[0]['prompt_tokens_per_cpu_s'] / gca[-1]['prompt_tokens_per_cpu_s']
    per_call = gca[0]['call_tokens_per_cpu_s'] / gca[-1]['call_tokens_per_cpu_s']
    ok = slowdown <= SLOWDOWN
    print(f"{'PASS' if ok else 'FAIL'}  gca: a {gca[-1]['len']:,}-token prompt streams {slowdown:.2f}x slower per "
          f"token than a {gca[0]['len']:,}-token one (<= {SLOWDOWN}); its last calls {per_call:.2f}x slower than "
          f"those at {gca[0]['len']:,} (exact scoring over every stored chunk)")
    after = os.getloadavg()
    report = dict(command=' '.join(['python', 'scripts/bench_gca_store.py'] + (argv or sys.argv[1:])),
                  torch=torch.__version__, cpus=os.cpu_count(), threads=1, load_before=load, load_after=after,
                  batch=args.batch, len=args.len, call=args.call, model=RECALL_SIZE, runs_config=dict(RUNS),
                  runs=runs, prompt_slowdown=slowdown, call_slowdown=per_call, ok=ok)
    with open(args.json, 'w') as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.json} (load after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f})")
    return ok


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
