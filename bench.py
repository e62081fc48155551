"""
Speed and memory of the attention kinds and of the models built from them (nanoGPT's bench.py, grown up).

    python bench.py --json bench.json             # the target sizes: one GPU (CUDA, bf16 autocast)
    python bench.py --sizes small --device cpu    # the same sections, CPU-sized (float32)
    python bench.py --only cpu_table              # tiny model of each kind at T = 4K and 16K (docs/performance.md)
    python bench.py --only model --compile --configs pg19_local,pg19_infini

Sections (--only, comma-separated; default layer,model,passkey):
  layer     one attention layer of each kind, forward+backward and forward-only at several N, `local` measured in
            the same run: ms, tokens/s, achieved TFLOP/s (causal-counted attention + projections), peak memory,
            ratios to local.
  model     training step (forward, backward, AdamW) of the models in configs/pg19_*.py, tokens/s and MFU against
            the bf16 matmul rate measured on the same card in this run (an 8192^3 matmul).
  passkey   the pg19_infini model (random weights) streamed over 1M tokens, many segments per call with the
            state carried: seconds and peak memory, against the peak memory of one 32K call.
  cpu_table fwd+bwd of a tiny model of each kind at T = 4K and 16K, repeats interleaved across kinds so that the
            ratios hold on a shared, noisy CPU; wall-clock and process CPU time (the steadier one there).
            On a shared machine pass --threads 1: a 2-thread OpenMP team on 2 busy cores runs up to 50x slower.
At --sizes full the targets (docs/performance.md) are checked and printed as PASS/FAIL (at small sizes: the same
checks on the scaled-down sizes, for information only). Timing: warm-up, then the median of repeats (CUDA events
on a GPU).
Peak memory: torch.cuda.max_memory_allocated on a GPU (everything live, inputs and weights included); on a CPU the
growth of the resident set size over one call, sampled every millisecond (inputs and weights not counted).
"""

import argparse
import contextlib
import ctypes
import datetime
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import fields, replace

import torch

from model import ATTENTION, GPT, GPTConfig

REPO = os.path.dirname(os.path.abspath(__file__))
K, M = 1024, 1024 * 1024

# The layer kinds measured; 'local' first, since every ratio is against it.
LAYER_KINDS = {
    'local': dict(attn='local'),
    'infini': dict(attn='infini', mem_update='linear'),
    'infini_delta': dict(attn='infini', mem_update='delta'),
    'dilated': dict(attn='dilated'),
    'full': dict(attn='full'),
}
PG19_CONFIGS = ('pg19_local', 'pg19_infini', 'pg19_infini_delta', 'pg19_dilated', 'pg19_full')
# What a pg19 config would hold if configs/<name>.py is not there (yet): the target shape.
PG19_FALLBACK = dict(n_layer=12, n_head=8, n_embd=1024, seq_len=32 * K, batch_size=1, segment_len=2048,
                     gate_lr=0.01, learning_rate=6e-4, weight_decay=0.1, beta1=0.9, beta2=0.95)
PG19_KIND = {'pg19_local': dict(attn='local'), 'pg19_infini': dict(attn='infini', mem_update='linear'),
             'pg19_infini_delta': dict(attn='infini', mem_update='delta'), 'pg19_dilated': dict(attn='dilated'),
             'pg19_full': dict(attn='full')}

SIZES = {
    'full': dict(
        layer=dict(n_embd=1024, n_head=8, segment_len=2048,
                   dilated_segments=(2048, 4096, 8192, 16384, 32768), dilated_rates=(1, 2, 4, 6, 12)),
        fwdbwd=(8 * K, 32 * K, 128 * K), fwd=(8 * K, 32 * K, 128 * K, 512 * K, M),
        full_cap=dict(fwdbwd=128 * K, fwd=512 * K),  # O(N^2): 1M forward alone takes ~5 s (see FACTS)
        model_shape=None,  # the config files as they are
        passkey=dict(tokens=M, chunk=32 * K),
        target_n=dict(fwdbwd=128 * K, fwd=M), matmul_n=8192, vocab_size=50304),
    'small': dict(
        layer=dict(n_embd=128, n_head=2, segment_len=256, dilated_segments=(64, 128, 256), dilated_rates=(1, 2, 4)),
        fwdbwd=(1 * K, 2 * K, 4 * K), fwd=(1 * K, 4 * K, 16 * K),
        full_cap=dict(fwdbwd=4 * K, fwd=16 * K),
        model_shape=dict(n_layer=2, n_head=2, n_embd=128, seq_len=1 * K, batch_size=1, segment_len=256,
                         dilated_segments=(64, 128, 256), dilated_rates=(1, 2, 4)),
        passkey=dict(tokens=32 * K, chunk=1 * K),
        target_n=dict(fwdbwd=4 * K, fwd=16 * K), matmul_n=1024, vocab_size=512),
}
QUICK = dict(fwdbwd=(1 * K, 2 * K), fwd=(1 * K, 4 * K), target_n=dict(fwdbwd=2 * K, fwd=4 * K),
             passkey=dict(tokens=8 * K, chunk=1 * K))

# The tiny model of the CPU table (docs/performance.md): byte-level vocabulary, 4 layers of 128, segments of 512.
CPU_TABLE_MODEL = dict(vocab_size=256, n_layer=4, n_head=4, n_embd=128, segment_len=512,
                       dilated_segments=(512, 1024, 2048, 4096), dilated_rates=(1, 2, 4, 8))
CPU_TABLE_KINDS = ('full', 'local', 'infini', 'infini_delta', 'dilated')


# ----------------------------------------------------------------------------------------------
# Timing and memory

def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure(fn, device, warmup=2, min_repeats=3, max_repeats=20, budget_s=1.0):
    """Median milliseconds of fn() after warm-up, and the first call's seconds (it includes any compilation).
    The number of repeats is chosen so that the timed part takes about budget_s."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    first_s = last_s = time.perf_counter() - t0
    for _ in range(warmup - 1):
        t0 = time.perf_counter()
        fn()
        sync(device)
        last_s = time.perf_counter() - t0  # past compilation and autotuning: what a repeat will cost
    repeats = max(min_repeats, min(max_repeats, int(budget_s / max(last_s, 1e-6))))
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':  # events time the GPU work, not the Python that queues it
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), first_s


def rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class PeakMemory:
    """Peak memory over a `with` block, in bytes (.peak). CUDA: max_memory_allocated, everything live included.
    CPU: growth of the resident set size over the block, sampled every millisecond by a thread (approximate:
    glibc may reuse freed heap pages without growing the RSS; malloc_trim first makes that rarer)."""

    method = {'cuda': 'torch.cuda.max_memory_allocated (all live tensors, inputs and weights included)',
              'cpu': 'peak RSS growth over the call, sampled every 1 ms from /proc/self/statm (inputs not counted)'}

    def __init__(self, device):
        self.device, self.peak = device, None

    def __enter__(self):
        gc.collect()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL('libc.so.6').malloc_trim(0)  # hand cached free heap back, so growth shows in the RSS
        self.base = self.high = rss_bytes()
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self):
        while self.running:
            self.high = max(self.high, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return False
        self.running = False
        self.thread.join()
        self.peak = max(self.high, rss_bytes()) - self.base
        return False


def free_memory(device):
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def is_oom(e):
    oom = getattr(torch, 'OutOfMemoryError', torch.cuda.OutOfMemoryError)  # torch.OutOfMemoryError: torch >= 2.5
    return isinstance(e, (oom, MemoryError)) or "can't allocate memory" in str(e)


def compiled(module, args):
    """torch.compile(module) for --compile, from a clean slate: every kind and size is its own graph, and all
    the kinds share AttentionBase.forward, whose recompile limit (8) would otherwise silently fall back to eager."""
    if not args.compile:
        return module
    torch._dynamo.reset()
    for name in ('recompile_limit', 'cache_size_limit'):  # the newer name, and the older one
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    return torch.compile(module)


def first_line(e):
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]


def autocast_for(device):
    """bf16 autocast on a GPU (as train.py runs), plain float32 on a CPU."""
    if device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return contextlib.nullcontext()


def matmul_tflops(n, device):
    """Measured matmul rate: n^3 in bf16 on a GPU (the MFU denominator), float32 on a CPU."""
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    ms, _ = measure(lambda: torch.mm(a, b, out=c), device, warmup=10, max_repeats=200, budget_s=1.0)
    return dict(n=n, dtype=str(dtype).removeprefix('torch.'), ms=ms, tflops=2 * n ** 3 / ms / 1e9)


# ----------------------------------------------------------------------------------------------
# FLOP counts (forward; training and fwd+bwd count 3x, the backward doing two matmuls per forward one)

def layer_flops(cfg, N):
    """Forward FLOPs of one attention layer on N tokens: the Q/K/V/output projections (8 C² per token), the model's
    own count of its attention (GPT.attention_flops_per_token: scores and weighted sums counted causally, Infini's
    memory read and update) and the delta rule's extra memory read σ(K) M."""
    with torch.device('meta'):  # shapes only
        attention = GPT(replace(cfg, n_layer=1)).attention_flops_per_token(N)
    delta_read = 2 * cfg.n_embd * cfg.head_size if cfg.attn == 'infini' and cfg.mem_update == 'delta' else 0
    return N * (2 * 4 * cfg.n_embd * cfg.n_embd + attention + delta_read)


# ----------------------------------------------------------------------------------------------
# Config files: train.py's defaults, then configs/<name>.py parsed (never executed)

def read_run_config(name):
    """(config dict, source) of configs/<name>.py as train.py would run it, or the target shape if the file
    is missing. Model fields are GPTConfig's; seq_len, batch_size and the AdamW settings are train.py's keys."""
    from configurator import read_config_file
    from train import DEFAULTS
    path = os.path.join(REPO, 'configs', name + '.py')
    if not os.path.isfile(path):
        return {**DEFAULTS, **PG19_FALLBACK, **PG19_KIND.get(name, {})}, f"configs/{name}.py missing: the target shape"
    return {**DEFAULTS, **read_config_file(path)}, f"configs/{name}.py"


def model_config(run, vocab_size, shape=None):
    """GPTConfig from a run config, with `shape` (the small sizes) overriding its dimensions."""
    run = {**run, **(shape or {})}
    names = {f.name for f in fields(GPTConfig)} - {'vocab_size'}
    return GPTConfig(vocab_size=vocab_size, **{k: v for k, v in run.items() if k in names}), run


# ----------------------------------------------------------------------------------------------
# Section: one attention layer of each kind

def bench_layer(cfg, N, mode, device, args):
    """One measurement; returns a row dict (status 'ok', 'OOM' or 'error: ...')."""
    torch.manual_seed(0)
    layer = ATTENTION[cfg.attn](cfg).to(device)
    # bf16 input on a GPU, as FACTS.md's reference timings (their 12.1 GiB peak for local at 1M is a bf16 x plus
    # q/k/v and rotated q/k); float32 on a CPU.
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    x = torch.randn(1, N, cfg.n_embd, device=device, dtype=dtype, requires_grad=(mode == 'fwd+bwd'))
    dy = torch.randn_like(x) if mode == 'fwd+bwd' else None
    call = compiled(layer, args)
    autocast = autocast_for(device)

    def fwd_bwd():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with autocast:
            y, _ = call(x)
        y.backward(dy.to(y.dtype))

    def fwd():
        with torch.no_grad(), autocast:
            call(x)

    fn = fwd_bwd if mode == 'fwd+bwd' else fwd
    if device.type == 'cuda':
        with PeakMemory(device) as mem:
            ms, first_s = measure(fn, device, budget_s=args.budget)
    else:  # the sampling thread would disturb the timing: one extra call for the memory
        ms, first_s = measure(fn, device, warmup=1, budget_s=args.budget)
        with PeakMemory(device) as mem:
            fn()
    flops = layer_flops(cfg, N) * (3 if mode == 'fwd+bwd' else 1)
    return dict(ms=ms, first_s=first_s, tokens_per_s=N / ms * 1e3, tflops=flops / ms / 1e9, flops=flops,
                peak_bytes=mem.peak)


def run_layers(args, sizes, device, report):
    base = sizes['layer']
    kinds = [k for k in LAYER_KINDS if k in args.kinds]
    if 'local' not in kinds:
        kinds.insert(0, 'local')  # every ratio is against it
    print(f"\n== layer: d={base['n_embd']}, {base['n_head']} heads x {base['n_embd'] // base['n_head']}, batch 1, "
          f"segment {base['segment_len']}, dilated w={base['dilated_segments']} r={base['dilated_rates']}, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'float32'}{', compiled' if args.compile else ''}")
    print(f"{'kind':<13}{'mode':<9}{'N':>8}{'ms':>11}{'tok/s':>11}{'TFLOP/s':>9}{'peak MiB':>11}"
          f"{'x local':>9}{'mem x local':>12}  status")
    rows = report.setdefault('layer', [])
    too_slow = set()  # (kind, mode) whose last call took longer than --max-call-s: larger N are skipped
    for mode, Ns in (('fwd+bwd', sizes['fwdbwd']), ('fwd', sizes['fwd'])):
        cap = sizes['full_cap']['fwdbwd' if mode == 'fwd+bwd' else 'fwd']
        for N in Ns:
            local = None
            for kind in kinds:
                cfg = GPTConfig(vocab_size=256, n_layer=1, **base, **LAYER_KINDS[kind])
                row = dict(kind=kind, mode=mode, N=N, status='ok')
                if kind == 'full' and N > cap:
                    row['status'] = f'skipped: full attention capped at N={cap} (O(N^2))'
                elif (kind, mode) in too_slow:
                    row['status'] = f'skipped: a smaller N took more than {args.max_call_s} s'
                else:
                    try:
                        row.update(bench_layer(cfg, N, mode, device, args))
                    except Exception as e:  # one failure must not end a long GPU run
                        row['status'] = 'OOM' if is_oom(e) else f'error: {first_line(e)}'
                    free_memory(device)
                    if row.get('first_s', 0) > args.max_call_s:
                        too_slow.add((kind, mode))
                if kind == 'local':
                    local = row if row['status'] == 'ok' else None
                if row['status'] == 'ok' and local is not None:
                    row['ms_x_local'] = row['ms'] / local['ms']
                    row['mem_x_local'] = row['peak_bytes'] / max(local['peak_bytes'], 1)
                rows.append(row)
                print_layer_row(row)
                write_json(args, report)


def fmt(value, spec, missing='-'):
    return missing if value is None else format(value, spec)


def print_layer_row(r):
    ok = r['status'] == 'ok'
    print(f"{r['kind']:<13}{r['mode']:<9}{size_name(r['N']):>8}{fmt(r.get('ms'), '11.2f'):>11}"
          f"{fmt(r.get('tokens_per_s'), '11.3g'):>11}{fmt(r.get('tflops'), '9.3g'):>9}"
          f"{fmt(r['peak_bytes'] / M if ok else None, '11.0f'):>11}{fmt(r.get('ms_x_local'), '9.2f'):>9}"
          f"{fmt(r.get('mem_x_local'), '12.2f'):>12}  {r['status']}", flush=True)


def size_name(n):
    return f"{n // M}M" if n % M == 0 else f"{n // K}K" if n % K == 0 else str(n)


# ----------------------------------------------------------------------------------------------
# Section: full-model training throughput and MFU

def bench_train_step(cfg, run, device, args):
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    optimizer = model.configure_optimizers(run.get('weight_decay', 0.1), run.get('learning_rate', 6e-4),
                                           run.get('gate_lr', 0.01), (run.get('beta1', 0.9), run.get('beta2', 0.95)),
                                           device.type)
    B, T = run['batch_size'], run['seq_len']
    x = torch.randint(cfg.vocab_size, (B, T), device=device)
    y = torch.randint(cfg.vocab_size, (B, T), device=device)
    step_model = compiled(model, args)
    autocast = autocast_for(device)

    def step():
        with autocast:
            _, loss, _ = step_model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == 'cuda':
        with PeakMemory(device) as mem:
            ms, first_s = measure(step, device, budget_s=args.budget)
    else:
        ms, first_s = measure(step, device, warmup=1, budget_s=args.budget)
        with PeakMemory(device) as mem:
            step()
    return dict(ms=ms, first_s=first_s, tokens_per_s=B * T / ms * 1e3, flops_per_token=model.flops_per_token(T),
                params=model.num_params(), peak_bytes=mem.peak)


def run_models(args, sizes, device, report):
    peak = report['matmul']['tflops'] * 1e12
    print(f"\n== model: training step (fwd, bwd, AdamW), MFU against the measured matmul rate "
          f"{peak / 1e12:.1f} TFLOP/s{', compiled' if args.compile else ''}")
    print(f"{'config':<19}{'attn':<14}{'layers':>7}{'width':>7}{'B x T':>12}{'ms/step':>10}{'tok/s':>11}"
          f"{'MFU':>7}{'peak MiB':>10}{'x local':>9}  status (source)")
    rows = report.setdefault('model', [])
    local = None
    for name in ['pg19_local'] + [c for c in args.configs if c != 'pg19_local']:
        row = dict(config=name, status='ok')
        try:
            run, row['source'] = read_run_config(name)
            cfg, run = model_config(run, sizes['vocab_size'], sizes['model_shape'])
            row.update(attn=cfg.attn + ('/' + cfg.mem_update if cfg.attn == 'infini' else ''), n_layer=cfg.n_layer,
                       n_embd=cfg.n_embd, seq_len=run['seq_len'], batch_size=run['batch_size'])
            while True:  # a batch that does not fit is halved, down to 1 (the row says which batch ran)
                try:
                    row.update(bench_train_step(cfg, run, device, args))
                    break
                except Exception as e:
                    if not is_oom(e) or run['batch_size'] == 1:
                        raise
                free_memory(device)  # out here, where the failed attempt's traceback (and tensors) are gone
                run = {**run, 'batch_size': run['batch_size'] // 2}
                row['batch_size'] = run['batch_size']
            row['mfu'] = row['flops_per_token'] * row['tokens_per_s'] / peak
        except Exception as e:
            row['status'] = 'OOM' if is_oom(e) else f'error: {first_line(e)}'
        free_memory(device)
        if name == 'pg19_local':
            local = row if row['status'] == 'ok' else None
        if row['status'] == 'ok' and local is not None:
            row['ms_x_local'] = row['ms'] / local['ms']
        rows.append(row)
        ok = row['status'] == 'ok'
        bt = f"{row.get('batch_size', '?')}x{size_name(row['seq_len'])}" if 'seq_len' in row else '-'
        print(f"{name:<19}{row.get('attn', '-'):<14}{row.get('n_layer', '-'):>7}{row.get('n_embd', '-'):>7}{bt:>12}"
              f"{fmt(row.get('ms'), '10.1f'):>10}{fmt(row.get('tokens_per_s'), '11.3g'):>11}"
              f"{fmt(row.get('mfu'), '7.1%'):>7}{fmt(row['peak_bytes'] / M if ok else None, '10.0f'):>10}"
              f"{fmt(row.get('ms_x_local'), '9.2f'):>9}  {row['status']} ({row.get('source', '?')})", flush=True)
        write_json(args, report)


# ----------------------------------------------------------------------------------------------
# Section: passkey-style streaming over 1M tokens with the pg19_infini model

def run_passkey(args, sizes, device, report):
    tokens, chunk = args.passkey_tokens or sizes['passkey']['tokens'], args.passkey_chunk or sizes['passkey']['chunk']
    run, source = read_run_config('pg19_infini')
    cfg, run = model_config(run, sizes['vocab_size'], sizes['model_shape'])
    print(f"\n== passkey: {cfg.attn}/{cfg.mem_update} model ({cfg.n_layer} layers x {cfg.n_embd}, {source}, random "
          f"weights) streamed over {size_name(tokens)} tokens, {size_name(chunk)} per call "
          f"({chunk // cfg.segment_len} segments), state carried, last_logits=1")
    result = dict(config='pg19_infini', source=source, tokens=tokens, chunk=chunk, status='ok')
    try:
        torch.manual_seed(0)
        model = GPT(cfg).to(device).eval()
        idx = torch.randint(cfg.vocab_size, (1, tokens), device=device)
        autocast = autocast_for(device)

        def stream(n):
            state = None
            with torch.no_grad(), autocast:
                for start in range(0, n, chunk):
                    logits, _, state = model(idx[:, start:min(start + chunk, n)], state=state, last_logits=1)
            return logits

        with PeakMemory(device) as one_chunk:  # one call of `chunk` tokens: the memory to compare against
            stream(chunk)
        ms, first_s = measure(lambda: stream(tokens), device, warmup=1, budget_s=args.budget)
        with PeakMemory(device) as all_tokens:
            stream(tokens)
        result.update(seconds=ms / 1e3, tokens_per_s=tokens / ms * 1e3, peak_bytes=all_tokens.peak,
                      peak_bytes_one_chunk=one_chunk.peak, peak_x_one_chunk=all_tokens.peak / max(one_chunk.peak, 1))
        print(f"{size_name(tokens)} tokens: {ms / 1e3:.3f} s ({tokens / ms * 1e3:.3g} tok/s), peak "
              f"{all_tokens.peak / M:.0f} MiB; one {size_name(chunk)} call: peak {one_chunk.peak / M:.0f} MiB "
              f"(ratio {result['peak_x_one_chunk']:.2f})")
    except Exception as e:
        result['status'] = 'OOM' if is_oom(e) else f'error: {first_line(e)}'
        print(f"passkey: {result['status']}")
    free_memory(device)
    report['passkey'] = result
    write_json(args, report)


# ----------------------------------------------------------------------------------------------
# Section: the CPU table of docs/performance.md (tiny model of each kind, fwd+bwd, ratios to local)

def run_cpu_table(args, device, report):
    Ts = (1 * K, 2 * K) if args.quick else (4 * K, 16 * K)
    repeats = 2 if args.quick else args.cpu_repeats
    print(f"\n== cpu_table: tiny model {CPU_TABLE_MODEL}, batch 1, fwd+bwd (forward with loss, backward), "
          f"{repeats} repeats interleaved across kinds after one warm-up, {torch.get_num_threads()} threads")
    rows = report.setdefault('cpu_table', [])
    for T in Ts:
        models = {}
        for kind in CPU_TABLE_KINDS:
            torch.manual_seed(0)
            models[kind] = GPT(GPTConfig(**CPU_TABLE_MODEL, **LAYER_KINDS[kind])).to(device)
        x = torch.randint(CPU_TABLE_MODEL['vocab_size'], (1, T), device=device)
        y = torch.randint(CPU_TABLE_MODEL['vocab_size'], (1, T), device=device)
        wall, cpu = {kind: [] for kind in CPU_TABLE_KINDS}, {kind: [] for kind in CPU_TABLE_KINDS}
        autocast = autocast_for(device)
        for rep in range(1 + repeats):  # round-robin, so a burst of load from elsewhere hits every kind alike
            for kind in CPU_TABLE_KINDS:
                model = models[kind]
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                with autocast:
                    _, loss, _ = model(x, y)
                loss.backward()
                sync(device)
                if rep > 0:
                    wall[kind].append(1e3 * (time.perf_counter() - t0))
                    cpu[kind].append(1e3 * (time.process_time() - c0))
                model.zero_grad(set_to_none=True)
        for kind in CPU_TABLE_KINDS:
            ms, cpu_ms = statistics.median(wall[kind]), statistics.median(cpu[kind])
            rows.append(dict(kind=kind, T=T, ms=ms, cpu_ms=cpu_ms, ms_x_local=ms / statistics.median(wall['local']),
                             cpu_ms_x_local=cpu_ms / statistics.median(cpu['local']), wall_ms=wall[kind],
                             process_cpu_ms=cpu[kind]))
            print(f"T={size_name(T)} {kind:<13} wall {ms:9.0f} ms (x{rows[-1]['ms_x_local']:.2f})  process CPU "
                  f"{cpu_ms:9.0f} ms (x{rows[-1]['cpu_ms_x_local']:.2f})", flush=True)
        del models
        free_memory(device)
        write_json(args, report)
    print(cpu_table_markdown(rows))


def cpu_table_markdown(rows):
    """Medians; the process CPU time is the steadier of the two where other jobs share the cores."""
    Ts = sorted({r['T'] for r in rows})
    columns = [f"T = {size_name(T)}: {clock} ms (x local)" for T in Ts for clock in ('CPU', 'wall')]
    head = '| kind | ' + ' | '.join(columns) + ' |'
    lines = [head, '|---' * (2 * len(Ts) + 1) + '|']
    for kind in CPU_TABLE_KINDS:
        cells = []
        for T in Ts:
            r = next(r for r in rows if r['kind'] == kind and r['T'] == T)
            cells.append(f"{r['cpu_ms']:.0f} ({r['cpu_ms_x_local']:.2f}x) | {r['ms']:.0f} ({r['ms_x_local']:.2f}x)")
        label = {'infini': 'infini (linear)', 'infini_delta': 'infini (delta)'}.get(kind, kind)
        lines.append(f"| {label} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------
# The targets (docs/performance.md; checked on the GPU run; at small sizes on the scaled-down sizes, for information)

def layer_row(report, kind, mode, N):
    return next((r for r in report.get('layer', []) if (r['kind'], r['mode'], r['N']) == (kind, mode, N)), None)


def check_targets(report, sizes):
    big_fb, big_f = sizes['target_n']['fwdbwd'], sizes['target_n']['fwd']
    models = {r['config']: r for r in report.get('model', [])}
    pk = report.get('passkey') or {}

    def layer(kind, mode, N, key):
        r = layer_row(report, kind, mode, N)
        return r.get(key) if r else None

    def model(name, key):
        return models.get(name, {}).get(key)

    fb, f = size_name(big_fb), size_name(big_f)
    tokens, chunk = (size_name(pk.get(key, sizes['passkey'][key])) for key in ('tokens', 'chunk'))
    checks = [  # (what, value, limit, True if the value must be at least the limit)
        (f"infini fwd+bwd at {fb} <= 1.3x local", layer('infini', 'fwd+bwd', big_fb, 'ms_x_local'), 1.3, False),
        (f"infini fwd at {f} <= 1.3x local", layer('infini', 'fwd', big_f, 'ms_x_local'), 1.3, False),
        (f"dilated fwd+bwd at {fb} <= 2.5x local", layer('dilated', 'fwd+bwd', big_fb, 'ms_x_local'), 2.5, False),
        (f"dilated fwd at {f} <= 3x local", layer('dilated', 'fwd', big_f, 'ms_x_local'), 3.0, False),
        (f"dilated fwd at {f}: peak memory <= 1.3x local's", layer('dilated', 'fwd', big_f, 'mem_x_local'), 1.3, False),
        ("pg19_infini training MFU >= 55%", model('pg19_infini', 'mfu'), 0.55, True),
        ("pg19_infini step <= 1.1x pg19_local's", model('pg19_infini', 'ms_x_local'), 1.1, False),
        (f"passkey at {tokens} <= 2 s", pk.get('seconds'), 2.0, False),
        (f"passkey at {tokens}: peak memory <= 1.1x one {chunk} call", pk.get('peak_x_one_chunk'), 1.1, False),
    ]
    results = []
    for what, value, limit, at_least in checks:
        if value is None:
            verdict = 'MISSING'  # not measured in this run, or it failed (OOM, error): see its row
        else:
            verdict = 'PASS' if (value >= limit if at_least else value <= limit) else 'FAIL'
        results.append(dict(target=what, value=value, limit=limit, verdict=verdict))
    return results


def print_targets(targets, full):
    print(f"\n== targets{'' if full else ' (small sizes: for information only, the targets are for the GPU run)'}")
    for t in targets:
        print(f"{t['verdict']:<8}{t['target']:<62} measured {fmt(t['value'], '.3g')}")


# ----------------------------------------------------------------------------------------------

def write_json(args, report):
    if args.json:  # rewritten after every row, so a run cut short still leaves what it measured
        tmp = args.json + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, args.json)


def cpu_name():
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    return platform.processor() or platform.machine()


def parse_sizes(text):
    """'8K,128K,1M' -> (8192, 131072, 1048576)."""
    out = []
    for part in text.split(','):
        part = part.strip().upper()
        scale = {'K': K, 'M': M}.get(part[-1:], 1)
        try:
            out.append(int(part[:-1] if scale > 1 else part) * scale)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: write sizes like 8K,32K,128K,1M")
    return tuple(out)


def parse_list(choices):
    def parse(text):
        items = [t.strip() for t in text.split(',') if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {', '.join(choices)}")
        return items
    return parse


def get_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='auto', help="'auto' (cuda if available), 'cuda', 'cuda:1', 'cpu'")
    p.add_argument('--model', default=None,
                   help="benchmark this model.py instead of the repo's (e.g. a proposed change)")
    p.add_argument('--sizes', choices=('full', 'small'), default=None,
                   help="full: the target sizes (GPU); small: CPU-sized. Default: full on cuda, small on cpu")
    p.add_argument('--only', type=parse_list(('layer', 'model', 'passkey', 'cpu_table')),
                   default=['layer', 'model', 'passkey'], help='sections, comma-separated')
    p.add_argument('--json', default=None, help='write the results here (rewritten after every row)')
    p.add_argument('--compile', action='store_true', help='torch.compile the layers and models (recompiles per N)')
    p.add_argument('--quick', action='store_true', help='fewer, smaller sizes (the smoke test)')
    p.add_argument('--kinds', type=parse_list(tuple(LAYER_KINDS)), default=list(LAYER_KINDS),
                   help='layer kinds (local is always measured)')
    p.add_argument('--configs', type=parse_list(PG19_CONFIGS), default=list(PG19_CONFIGS),
                   help='model configs (pg19_local is always measured)')
    p.add_argument('--fwdbwd-sizes', type=parse_sizes, default=None, help='layer N for fwd+bwd, e.g. 8K,32K,128K')
    p.add_argument('--fwd-sizes', type=parse_sizes, default=None, help='layer N for forward only, e.g. 128K,1M')
    p.add_argument('--passkey-tokens', type=parse_sizes, default=None, help='e.g. 1M')
    p.add_argument('--passkey-chunk', type=parse_sizes, default=None, help='tokens per call, e.g. 32K')
    p.add_argument('--budget', type=float, default=None, help='seconds of timed repeats per measurement')
    p.add_argument('--max-call-s', type=float, default=30.0, help='skip larger N of a kind after a call this slow')
    p.add_argument('--cpu-repeats', type=int, default=5, help='cpu_table: timed repeats per kind and T')
    p.add_argument('--threads', type=int, default=None,
                   help="CPU threads (torch.set_num_threads); 1 on a shared machine: a busy core stalls every "
                        "thread of an OpenMP team, which makes 2 threads on 2 shared cores up to 50x slower")
    args = p.parse_args(argv)
    args.passkey_tokens = args.passkey_tokens[0] if args.passkey_tokens else None
    args.passkey_chunk = args.passkey_chunk[0] if args.passkey_chunk else None
    return args


def load_model_file(path):
    """--model: import another model.py (a proposed change, say) as `model`, leaving the repo's untouched; later
    imports of `model` (train.py's defaults, say) get the same module. Also used by scripts/gpu_check.py."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: --model {path}: no such file")
    spec = importlib.util.spec_from_file_location('model', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules['model'] = module
    spec.loader.exec_module(module)
    return module


def use_model_file(path):
    global ATTENTION, GPT, GPTConfig
    module = load_model_file(path)
    ATTENTION, GPT, GPTConfig = module.ATTENTION, module.GPT, module.GPTConfig


def main(argv=None):
    args = get_args(sys.argv[1:] if argv is None else argv)
    if args.model:
        use_model_file(args.model)
    device = torch.device(args.device if args.device != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device} but no CUDA GPU is available; use --device cpu")
    args.sizes = args.sizes or ('full' if device.type == 'cuda' else 'small')
    sizes = dict(SIZES[args.sizes])
    if args.quick:
        sizes.update(QUICK)
    sizes['fwdbwd'] = args.fwdbwd_sizes or sizes['fwdbwd']
    sizes['fwd'] = args.fwd_sizes or sizes['fwd']
    if args.budget is None:
        args.budget = 0.2 if args.quick else 1.0
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == 'cuda':
        torch.set_float32_matmul_precision('high')  # TF32 for float32 matmuls, as train.py sets

    command = ['bench.py'] + list(sys.argv[1:] if argv is None else argv)
    report = dict(meta=dict(
        command='python ' + ' '.join(command),
        date=datetime.date.today().isoformat(), torch=torch.__version__, python=platform.python_version(),
        model_file=os.path.abspath(args.model or os.path.join(REPO, 'model.py')),
        device=str(device), device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_name(),
        cuda=torch.version.cuda, threads=torch.get_num_threads(), sizes=args.sizes, quick=args.quick,
        compile=args.compile, dtype='bf16 autocast' if device.type == 'cuda' else 'float32',
        memory_method=PeakMemory.method[device.type]))
    meta = report['meta']
    print(f"bench: {meta['device_name']} ({device}), torch {meta['torch']}, {meta['dtype']}, sizes={args.sizes}"
          f"{' (quick)' if args.quick else ''}, {meta['threads']} threads, {meta['date']}")
    print(f"peak memory: {meta['memory_method']}; model: {meta['model_file']}")
    if set(args.only) & {'layer', 'model', 'passkey'}:
        n = sizes['matmul_n'] if device.type == 'cuda' else min(sizes['matmul_n'], 2048)
        report['matmul'] = matmul_tflops(n, device)
        mm = report['matmul']
        print(f"matmul {n}^3 {mm['dtype']}: {mm['ms']:.3f} ms = {mm['tflops']:.1f} TFLOP/s (the MFU denominator)")
        write_json(args, report)
    if 'layer' in args.only:
        run_layers(args, sizes, device, report)
    if 'model' in args.only:
        run_models(args, sizes, device, report)
    if 'passkey' in args.only:
        run_passkey(args, sizes, device, report)
    if 'cpu_table' in args.only:
        run_cpu_table(args, device, report)
    if set(args.only) & {'layer', 'model', 'passkey'}:
        report['targets'] = check_targets(report, sizes)
        print_targets(report['targets'], args.sizes == 'full')
    write_json(args, report)
    errors = [r for section in ('layer', 'model') for r in report.get(section, []) if r['status'].startswith('error')]
    errors += [report['passkey']] if report.get('passkey', {}).get('status', 'ok').startswith('error') else []
    if errors:  # OOM is a measurement (the kind does not fit); an exception is a bug to look at
        raise SystemExit(f"error: {len(errors)} measurement(s) raised an exception; see the 'error:' rows above")


if __name__ == '__main__':
    main()
