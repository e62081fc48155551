"""
Speed and memory of the attention kinds and of the models built from them (nanoGPT's bench.py, grown up).

    python bench.py                                             # one GPU, bf16 autocast: the target sizes
    python bench.py --sizes small --device cpu --quick          # the same sections at small CPU sizes, float32
    python bench.py --only cpu_table --device cpu --threads 1   # the CPU table of docs/performance.md

Sections (--only; default layer,model,passkey), each a table of runs measured in one loop:
  layer      one attention layer of each kind, fwd+bwd and fwd only at several N: time, TFLOP/s, peak memory,
             and their ratios to `local` at the same N
  model      a training step of each configs/pg19_*.py model: tokens/s, MFU (against a bf16 matmul measured here)
  passkey    the pg19_infini model streamed over 1M tokens by sample.stream: seconds, peak memory / one 32K call's
  cpu_table  fwd+bwd of a tiny model of each kind at T = 4K and 16K, repeats interleaved across kinds so that the
             ratios hold on a shared, noisy CPU: the markdown table of docs/performance.md
Then the targets of docs/performance.md are checked at the largest N (PASS/FAIL; at small sizes for information
only). How time, memory, FLOPs and MFU are measured: docs/performance.md.
"""

import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import fields, replace

import torch

from checkpoint import first_line
from model import ATTENTION, GPT, GPTConfig
from passkey import size_name
from sample import autocast_for, parse_size, pick_device, stream

REPO = os.path.dirname(os.path.abspath(__file__))
K, M = 1024, 1024 * 1024

# The attention kinds measured (scripts/gpu_check.py checks the same); 'local' first: every ratio is against it.
LAYER_KINDS = {
    'local': dict(attn='local'),
    'infini': dict(attn='infini', mem_update='linear'),
    'infini_delta': dict(attn='infini', mem_update='delta'),
    'dilated': dict(attn='dilated'),
    'full': dict(attn='full'),
}
# The model of each kind: configs/pg19_<kind>.py, or the target shape below where that file is missing.
PG19_CONFIGS = tuple(f'pg19_{kind}' for kind in LAYER_KINDS)
PG19_FALLBACK = dict(n_layer=12, n_head=8, n_embd=1024, seq_len=32 * K, batch_size=1, segment_len=2048,
                     gate_lr=0.01, learning_rate=6e-4, weight_decay=0.1, beta1=0.9, beta2=0.95)

SIZES = {
    'full': dict(
        layer=dict(n_embd=1024, n_head=8, segment_len=2048,
                   dilated_segments=(2048, 4096, 8192, 16384, 32768), dilated_rates=(1, 2, 4, 6, 12)),
        fwdbwd=(8 * K, 32 * K, 128 * K), fwd=(8 * K, 32 * K, 128 * K, 512 * K, M),
        model_shape=None,  # the config files as they are
        passkey=dict(tokens=M, chunk=32 * K), matmul_n=8192, vocab_size=50304),
    'small': dict(
        layer=dict(n_embd=128, n_head=2, segment_len=256, dilated_segments=(64, 128, 256), dilated_rates=(1, 2, 4)),
        fwdbwd=(1 * K, 2 * K, 4 * K), fwd=(1 * K, 4 * K, 16 * K),
        model_shape=dict(n_layer=2, n_head=2, n_embd=128, seq_len=1 * K, batch_size=1, segment_len=256,
                         dilated_segments=(64, 128, 256), dilated_rates=(1, 2, 4)),
        passkey=dict(tokens=32 * K, chunk=1 * K), matmul_n=1024, vocab_size=512),
}
QUICK = dict(fwdbwd=(1 * K, 2 * K), fwd=(1 * K, 4 * K), passkey=dict(tokens=8 * K, chunk=1 * K))

# The tiny model of the CPU table (docs/performance.md): byte-level vocabulary, 4 layers of 128, segments of 512.
CPU_TABLE_MODEL = dict(vocab_size=256, n_layer=4, n_head=4, n_embd=128, segment_len=512,
                       dilated_segments=(512, 1024, 2048, 4096), dilated_rates=(1, 2, 4, 8))
CPU_TABLE_KINDS = {'full': 'full', 'local': 'local', 'infini': 'infini (linear)', 'infini_delta': 'infini (delta)',
                   'dilated': 'dilated'}  # the table's rows in order, and their labels


# ----- Measuring: one timer, one peak-memory probe, and the row of a measurement that may fail
def timed(fn, device):
    """(wall-clock, process CPU) milliseconds of one fn(), the GPU's queued work included."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync()
    return 1e3 * (time.perf_counter() - t0), 1e3 * (time.process_time() - c0)


def peak_bytes(fn, device):
    """Peak memory of one fn(): on a GPU all live tensors (weights and inputs included); on a CPU the growth of the
    resident set size over the call, from the kernel's own high-water mark (Linux)."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        timed(fn, device)
        return torch.cuda.max_memory_allocated(device)

    def kib(field):  # VmRSS: the resident set size now; VmHWM: its peak since the last reset
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ':'))
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL('libc.so.6').malloc_trim(0)  # hand cached free heap back, so that its reuse shows as growth
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # resets VmHWM to the current RSS
    base = kib('VmRSS')
    fn()
    return (kib('VmHWM') - base) * 1024


def measure(fn, device, budget_s, warmup=None, max_repeats=20, statistic=statistics.median):
    """ms: the median (or `statistic`) of fn()'s wall-clock times after warm-up; peak_bytes: of one more call. The
    last warm-up call (on a GPU the 2nd: past compiling, autotuning) sets how many repeats (>= 3) fit in budget_s."""
    for _ in range(warmup or (2 if device.type == 'cuda' else 1)):
        last_ms, _ = timed(fn, device)
    repeats = max(3, min(max_repeats, int(1e3 * budget_s / max(last_ms, 1e-3))))
    ms = statistic([timed(fn, device)[0] for _ in range(repeats)])
    return dict(ms=ms, peak_bytes=peak_bytes(fn, device))


def measured(row, bench, device):
    """row with bench()'s measurements, or, if it raised, the status 'OOM' (a measurement: the kind does not fit)
    or 'error: ...' (a bug to look at). Either way a long GPU run goes on to the next row."""
    try:
        row.update(bench())
    except Exception as e:
        is_oom = isinstance(e, MemoryError) or 'out of memory' in str(e) or "can't allocate memory" in str(e)
        row['status'] = 'OOM' if is_oom else f"error: {type(e).__name__}: {first_line(e)}"[:300]
    gc.collect()  # out here, where a failed attempt's traceback (and its tensors) are gone
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    return row


def ratios_to_local(row, local):
    """row's time and peak memory over those of `local` (the same N or config, in this run), where both ran."""
    if row['status'] == 'ok' and local['status'] == 'ok':
        row['ms_x_local'] = row['ms'] / local['ms']
        row['mem_x_local'] = row['peak_bytes'] / max(local['peak_bytes'], 1)


def fmt(value, spec, scale=1):
    return '-' if value is None else format(value * scale, spec)


def matmul_tflops(n, device):
    """The MFU denominator: the rate of an n^3 matmul in bf16 on a GPU (float32 on a CPU), at its fastest repeat:
    what the hardware does when nothing else runs (on a shared CPU the median would move with the other jobs)."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16 if device.type == 'cuda' else None) for _ in range(2))
    ms = measure(lambda: a @ b, device, budget_s=1.0, warmup=10, max_repeats=200, statistic=min)['ms']
    return dict(n=n, dtype=str(a.dtype).removeprefix('torch.'), ms=ms, tflops=2 * n ** 3 / ms / 1e9)


# ----- Models: configs/<name>.py over train.py's defaults, parsed (never executed)
def read_run_config(name):
    """(config dict, source) of configs/<name>.py as train.py would run it, or the target shape if the file
    is missing. Model fields are GPTConfig's; seq_len, batch_size and the AdamW settings are train.py's keys."""
    from configurator import read_config_file
    from train import DEFAULTS
    path = os.path.join(REPO, 'configs', name + '.py')
    if not os.path.isfile(path):
        kind = LAYER_KINDS.get(name.removeprefix('pg19_'), {})
        return {**DEFAULTS, **PG19_FALLBACK, **kind}, f"configs/{name}.py missing: the target shape"
    return {**DEFAULTS, **read_config_file(path)}, f"configs/{name}.py"


def model_config(run, vocab_size, shape=None):
    """GPTConfig from a run config, with `shape` (the small sizes) overriding its dimensions."""
    run = {**run, **(shape or {})}
    names = {f.name for f in fields(GPTConfig)} - {'vocab_size'}
    return GPTConfig(vocab_size=vocab_size, **{k: v for k, v in run.items() if k in names}), run


def new_model(cfg, device):
    torch.manual_seed(0)  # the same weights in every run
    return GPT(cfg).to(device)


def layer_flops(cfg, N):
    """Forward FLOPs of one attention layer on N tokens (fwd+bwd: 3x): the Q/K/V/output projections (8 C² per
    token), the model's own count of its attention (GPT.attention_flops_per_token: scores and weighted sums counted
    causally, Infini's memory read and update) and the delta rule's extra memory read σ(K) M."""
    with torch.device('meta'):  # shapes only
        attention = GPT(replace(cfg, n_layer=1)).attention_flops_per_token(N)
    delta_read = 2 * cfg.n_embd * cfg.head_size if cfg.attn == 'infini' and cfg.mem_update == 'delta' else 0
    return N * (2 * 4 * cfg.n_embd * cfg.n_embd + attention + delta_read)


# ----- Section layer: one attention layer of each kind at each N, forward+backward and forward only
def bench_layer(cfg, N, mode, device, args):
    torch.manual_seed(0)
    layer = ATTENTION[cfg.attn](cfg).to(device)
    backward = mode == 'fwd+bwd'
    # bf16 input on a GPU, as the targets' reference timings were taken (local's 12.1 GiB peak at 1M is a bf16 x
    # plus q/k/v and rotated q/k); float32 on a CPU. No dy is held in forward mode: the peak is the layer's own.
    dtype = torch.bfloat16 if device.type == 'cuda' else torch.float32
    x = torch.randn(1, N, cfg.n_embd, device=device, dtype=dtype, requires_grad=backward)
    dy = torch.randn_like(x) if backward else None
    autocast, _ = autocast_for(str(device), 'auto')  # bf16 autocast on a GPU, as train.py runs; float32 on a CPU

    def call_once():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with torch.set_grad_enabled(backward), autocast:
            y, _ = layer(x)
        if backward:
            y.backward(dy.to(y.dtype))

    row = measure(call_once, device, args.budget)
    flops = layer_flops(cfg, N) * (3 if backward else 1)
    return dict(row, tokens_per_s=N / row['ms'] * 1e3, tflops=flops / row['ms'] / 1e9, flops=flops)


def run_layers(args, sizes, device, report):
    base = sizes['layer']
    print(f"\n== layer: {base}, batch 1, {'bf16 autocast' if device.type == 'cuda' else 'float32'}")
    print(f"{'kind':<13}{'mode':<9}{'N':>8}{'ms':>11}{'tok/s':>11}{'TFLOP/s':>9}{'peak MiB':>11}"
          f"{'x local':>9}{'mem x local':>12}  status")
    rows, local = report.setdefault('layer', []), None
    runs = [(mode, N, kind) for mode, key in (('fwd+bwd', 'fwdbwd'), ('fwd', 'fwd')) for N in sizes[key]
            for kind in LAYER_KINDS]
    for mode, N, kind in runs:
        cfg = GPTConfig(vocab_size=256, n_layer=1, **base, **LAYER_KINDS[kind])
        row = measured(dict(kind=kind, mode=mode, N=N, status='ok'), lambda: bench_layer(cfg, N, mode, device, args),
                       device)
        local = row if kind == 'local' else local  # measured first at each N
        rows.append(row)
        ratios_to_local(row, local)
        print(f"{kind:<13}{mode:<9}{size_name(N):>8}{fmt(row.get('ms'), '11.2f'):>11}"
              f"{fmt(row.get('tokens_per_s'), '11.3g'):>11}{fmt(row.get('tflops'), '9.3g'):>9}"
              f"{fmt(row.get('peak_bytes'), '11.0f', 1 / M):>11}{fmt(row.get('ms_x_local'), '9.2f'):>9}"
              f"{fmt(row.get('mem_x_local'), '12.2f'):>12}  {row['status']}", flush=True)


# ----- Section model: a training step of each pg19 config, tokens/s and MFU
def bench_train_step(name, sizes, device, args):
    run, source = read_run_config(name)
    cfg, run = model_config(run, sizes['vocab_size'], sizes['model_shape'])
    model = new_model(cfg, device)
    optimizer = model.configure_optimizers(run['weight_decay'], run['learning_rate'], run['gate_lr'],
                                           (run['beta1'], run['beta2']), device.type)
    B, T = run['batch_size'], run['seq_len']
    x, y = (torch.randint(cfg.vocab_size, (B, T), device=device) for _ in range(2))
    autocast, _ = autocast_for(str(device), 'auto')
    # --compile, as the pg19 configs train: from a clean slate, so that earlier configs' graphs do not count against
    # the recompile limit (8) of the attention forward the kinds share (past it, torch runs eager without a word)
    if args.compile:
        torch._dynamo.reset()
    step_model = torch.compile(model) if args.compile else model

    def step():
        with autocast:
            _, loss, _ = step_model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    row = dict(source=source, attn=cfg.attn + ('/' + cfg.mem_update if cfg.attn == 'infini' else ''),
               n_layer=cfg.n_layer, n_embd=cfg.n_embd, seq_len=T, batch_size=B, **measure(step, device, args.budget))
    return dict(row, tokens_per_s=B * T / row['ms'] * 1e3, flops_per_token=model.flops_per_token(T),
                params=model.num_params())


def run_models(args, sizes, device, report):
    n = sizes['matmul_n'] if device.type == 'cuda' else min(sizes['matmul_n'], 2048)  # a CPU: seconds, not minutes
    mm = report['matmul'] = matmul_tflops(n, device)
    print(f"\n== model: training step (fwd, bwd, AdamW){', compiled' if args.compile else ''}, MFU against a "
          f"{n}^3 {mm['dtype']} matmul measured here: {mm['ms']:.3f} ms = {mm['tflops']:.3g} TFLOP/s")
    print(f"{'config':<19}{'attn':<14}{'layers':>7}{'width':>7}{'B x T':>12}{'ms/step':>10}{'tok/s':>11}"
          f"{'MFU':>7}{'peak MiB':>10}{'x local':>9}  status (source)")
    rows = report.setdefault('model', [])
    for name in PG19_CONFIGS:  # pg19_local first: the others' ratios are to it
        row = measured(dict(config=name, status='ok'), lambda: bench_train_step(name, sizes, device, args), device)
        if row['status'] == 'ok':
            row['mfu'] = row['flops_per_token'] * row['tokens_per_s'] / (mm['tflops'] * 1e12)
        rows.append(row)
        ratios_to_local(row, rows[0])
        bt = f"{row['batch_size']}x{size_name(row['seq_len'])}" if 'seq_len' in row else '-'
        print(f"{name:<19}{row.get('attn', '-'):<14}{row.get('n_layer', '-'):>7}{row.get('n_embd', '-'):>7}{bt:>12}"
              f"{fmt(row.get('ms'), '10.1f'):>10}{fmt(row.get('tokens_per_s'), '11.3g'):>11}"
              f"{fmt(row.get('mfu'), '7.1%'):>7}{fmt(row.get('peak_bytes'), '10.0f', 1 / M):>10}"
              f"{fmt(row.get('ms_x_local'), '9.2f'):>9}  {row['status']} ({row.get('source', '?')})", flush=True)


# ----- Section passkey: the pg19_infini model streamed over 1M tokens as passkey.py does, the state carried
def run_passkey(args, sizes, device, report):
    tokens, chunk = sizes['passkey']['tokens'], sizes['passkey']['chunk']
    run, source = read_run_config('pg19_infini')
    cfg, _ = model_config(run, sizes['vocab_size'], sizes['model_shape'])
    print(f"\n== passkey: {source} ({cfg.n_layer} layers x {cfg.n_embd}, random weights) streamed over "
          f"{size_name(tokens)} tokens by sample.stream, {size_name(chunk)} per call, the state carried")

    def bench_stream():
        model = new_model(cfg, device).eval()
        idx = torch.randint(cfg.vocab_size, (1, tokens), device=device)
        autocast, _ = autocast_for(str(device), 'auto')
        row = measure(lambda: stream(model, idx, chunk, autocast=autocast), device, args.budget, warmup=1)
        one_chunk = peak_bytes(lambda: stream(model, idx[:, :chunk], chunk, autocast=autocast), device)  # warm too
        return dict(row, seconds=row['ms'] / 1e3, tokens_per_s=tokens / row['ms'] * 1e3,
                    peak_bytes_one_chunk=one_chunk, peak_x_one_chunk=row['peak_bytes'] / max(one_chunk, 1))

    row = report['passkey'] = dict(config='pg19_infini', source=source, tokens=tokens, chunk=chunk, status='ok')
    measured(row, bench_stream, device)
    print(f"{size_name(tokens)} tokens: {fmt(row.get('seconds'), '.3f')} s, peak memory "
          f"{fmt(row.get('peak_x_one_chunk'), '.2f')}x that of one {size_name(chunk)} call  {row['status']}")


# ----- Section cpu_table: the table of docs/performance.md (tiny model of each kind, fwd+bwd, ratios to local)
def run_cpu_table(args, sizes, device, report):
    Ts, repeats = ((1 * K, 2 * K), 2) if args.quick else ((4 * K, 16 * K), 5)
    print(f"\n== cpu_table: {CPU_TABLE_MODEL}, batch 1, fwd+bwd, float32, {repeats} repeats interleaved across "
          f"kinds after one warm-up, {torch.get_num_threads()} threads")
    rows = report.setdefault('cpu_table', [])
    for T in Ts:
        models = {kind: new_model(GPTConfig(**CPU_TABLE_MODEL, **LAYER_KINDS[kind]), device)
                  for kind in CPU_TABLE_KINDS}
        x, y = (torch.randint(CPU_TABLE_MODEL['vocab_size'], (1, T), device=device) for _ in range(2))
        times = {kind: [] for kind in models}  # (wall ms, process CPU ms) of each repeat
        for rep in range(1 + repeats):  # round-robin, so that a burst of load from elsewhere hits every kind alike
            for kind, model in models.items():
                wall_and_cpu = timed(lambda: model(x, y)[1].backward(), device)  # [1]: the loss
                if rep > 0:  # the first round is the warm-up
                    times[kind].append(wall_and_cpu)
                model.zero_grad(set_to_none=True)
        # Medians; process CPU time is the steadier where other jobs share the cores (waiting is not counted).
        local_ms, local_cpu_ms = (statistics.median(clock) for clock in zip(*times['local']))
        for kind, kind_times in times.items():
            wall, cpu = zip(*kind_times)
            ms, cpu_ms = statistics.median(wall), statistics.median(cpu)
            rows.append(dict(kind=kind, T=T, ms=ms, cpu_ms=cpu_ms, ms_x_local=ms / local_ms,
                             cpu_ms_x_local=cpu_ms / local_cpu_ms, wall_ms=wall, process_cpu_ms=cpu))
        print(f"T={size_name(T)}: done", flush=True)
    columns = [f"T = {size_name(T)}: {clock} ms (x local)" for T in Ts for clock in ('CPU', 'wall')]
    print('| kind | ' + ' | '.join(columns) + ' |\n' + '|---' * (len(columns) + 1) + '|')
    for kind, label in CPU_TABLE_KINDS.items():
        cells = [f"{r['cpu_ms']:.0f} ({r['cpu_ms_x_local']:.2f}x) | {r['ms']:.0f} ({r['ms_x_local']:.2f}x)"
                 for r in rows if r['kind'] == kind]
        print(f"| {label} | " + ' | '.join(cells) + ' |')


# ----- The targets of docs/performance.md, checked on this run's sizes
def check_targets(report, sizes):
    """PASS or FAIL per target; MISSING where it was not measured in this run, or its row failed (OOM, error)."""
    fb, f = max(sizes['fwdbwd']), max(sizes['fwd'])  # the largest N: 128K and 1M at full size
    tokens, chunk = size_name(sizes['passkey']['tokens']), size_name(sizes['passkey']['chunk'])
    infini = next((r for r in report.get('model', []) if r['config'] == 'pg19_infini'), {})
    pk = report.get('passkey', {})
    layers = {(r['kind'], r['mode'], r['N']): r for r in report.get('layer', [])}

    def layer(kind, mode, N, key='ms_x_local'):
        return layers.get((kind, mode, N), {}).get(key)

    checks = [  # (what, measured, limit, True if the value must be at least the limit)
        (f"infini fwd+bwd at {size_name(fb)} <= 1.3x local", layer('infini', 'fwd+bwd', fb), 1.3, False),
        (f"infini fwd at {size_name(f)} <= 1.3x local", layer('infini', 'fwd', f), 1.3, False),
        (f"dilated fwd+bwd at {size_name(fb)} <= 2.5x local", layer('dilated', 'fwd+bwd', fb), 2.5, False),
        (f"dilated fwd at {size_name(f)} <= 3x local", layer('dilated', 'fwd', f), 3.0, False),
        (f"dilated fwd at {size_name(f)}: peak memory <= 1.3x local's", layer('dilated', 'fwd', f, 'mem_x_local'),
         1.3, False),
        ("pg19_infini training MFU >= 55%", infini.get('mfu'), 0.55, True),
        ("pg19_infini step <= 1.1x pg19_local's", infini.get('ms_x_local'), 1.1, False),
        (f"passkey at {tokens} <= 2 s", pk.get('seconds'), 2.0, False),
        (f"passkey at {tokens}: peak memory <= 1.1x one {chunk} call", pk.get('peak_x_one_chunk'), 1.1, False),
    ]
    return [dict(target=what, value=value, limit=limit, verdict='MISSING' if value is None else
                 'PASS' if (value >= limit if at_least else value <= limit) else 'FAIL')
            for what, value, limit, at_least in checks]


# ----- Command line
SECTIONS = {'layer': run_layers, 'model': run_models, 'passkey': run_passkey, 'cpu_table': run_cpu_table}


def parse_sizes(text):
    """'8K,128K,1M' -> (8192, 131072, 1048576)."""
    return tuple(parse_size(part) for part in text.split(','))


def parse_sections(text):
    names = [t.strip() for t in text.split(',') if t.strip()]
    unknown = [t for t in names if t not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return names


def get_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='auto', help="'auto' (cuda if available), 'cuda', 'cuda:1', 'cpu'")
    p.add_argument('--sizes', choices=('full', 'small'), default=None,
                   help="full: the target sizes (GPU); small: CPU-sized. Default: full on cuda, small on cpu")
    p.add_argument('--quick', action='store_true', help='fewer, smaller sizes (the smoke test)')
    p.add_argument('--only', type=parse_sections, default=['layer', 'model', 'passkey'], help='comma-separated')
    p.add_argument('--fwdbwd-sizes', type=parse_sizes, default=None, help='layer N for fwd+bwd, e.g. 8K,32K,128K')
    p.add_argument('--fwd-sizes', type=parse_sizes, default=None, help='layer N for forward only, e.g. 128K,1M')
    p.add_argument('--compile', action='store_true', help='torch.compile the models, as the pg19 configs train')
    p.add_argument('--threads', type=int, default=None, help='CPU threads for torch; 1 on a shared machine')
    p.add_argument('--json', default=None, help='write the results here (rewritten after every section)')
    args = p.parse_args(argv)
    args.budget = 0.2 if args.quick else 1.0  # seconds of timed repeats per measurement
    return args


def write_json(args, report):
    if args.json:  # rewritten after every section, so that a run cut short keeps what it measured
        with open(args.json + '.tmp', 'w') as f:
            json.dump(report, f, indent=1)
        os.replace(args.json + '.tmp', args.json)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = get_args(argv)
    device = torch.device(pick_device(args.device))
    cuda = device.type == 'cuda'
    args.sizes = args.sizes or ('full' if cuda else 'small')
    sizes = {**SIZES[args.sizes], **(QUICK if args.quick else {})}
    sizes['fwdbwd'], sizes['fwd'] = args.fwdbwd_sizes or sizes['fwdbwd'], args.fwd_sizes or sizes['fwd']
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.set_float32_matmul_precision('high')  # TF32 for float32 matmuls, as train.py sets
    meta = dict(command=' '.join(['python', 'bench.py', *argv]), date=time.strftime('%Y-%m-%d'),
                torch=torch.__version__, device=torch.cuda.get_device_name(device) if cuda else str(device),
                dtype='bf16 autocast' if cuda else 'float32', threads=torch.get_num_threads(), sizes=args.sizes,
                quick=args.quick, compile=args.compile)
    report = dict(meta=meta)
    print(f"bench: {meta['device']}, torch {meta['torch']}, {meta['dtype']}, sizes={args.sizes}"
          f"{' (quick)' if args.quick else ''}, {meta['threads']} threads, {meta['date']}")
    for name, run_section in SECTIONS.items():
        if name in args.only:
            run_section(args, sizes, device, report)
            write_json(args, report)
    if set(args.only) & {'layer', 'model', 'passkey'}:
        report['targets'] = check_targets(report, sizes)
        print(f"\n== targets{'' if args.sizes == 'full' else ' (small sizes: for information only)'}")
        for t in report['targets']:
            print(f"{t['verdict']:<8}{t['target']:<62} measured {fmt(t['value'], '.3g')}")
    write_json(args, report)
    rows = report.get('layer', []) + report.get('model', []) + [report.get('passkey', {'status': 'ok'})]
    if any(r['status'].startswith('error') for r in rows):  # OOM is a measurement; an exception is a bug
        raise SystemExit("error: a measurement raised an exception; see the 'error:' rows above")


if __name__ == '__main__':
    main()
