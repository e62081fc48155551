"""
Train a long-context GPT (Infini-attention, LongNet dilated attention, or the local / full attention baselines).

    python train.py                                   # tiny Infini-attention model, synthetic corpus, CPU, minutes
    python train.py configs/tiny_local.py --max_iters=100
    python train.py configs/pg19_infini.py            # the paper's PG19 setup, one GPU
    torchrun --standalone --nproc_per_node=8 train.py configs/pg19_infini.py     # DDP, one node
    python train.py configs/pg19_infini.py --init_from=resume                     # continue where it stopped
    python train.py --threads=1                       # CPU threads (default 'auto': measured in the first seconds)

A training window is `seq_len` tokens drawn inside one book (dataset.TokenData.sample_batch); the model
processes it as seq_len/segment_len segments and the loss backpropagates through all of them.
Config: a file in configs/ (plain assignments) then --key=value overrides; `python train.py --help` lists keys.
--init_from=resume continues with the checkpoint's own training settings (max_iters, the lr schedule, batch, ...);
only --key=value overrides on the command line change them, and a line at the start names those that do.
Writes out_dir/ckpt.pt (atomically), out_dir/log.jsonl, out_dir/log.csv and out_dir/loss.png.
"""

import csv
import json
import math
import os
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import MISSING, asdict, fields

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import CheckpointError, build_model, load_checkpoint, load_state_dict, save_checkpoint
from configurator import ConfigError, command_line_keys, describe, get_config
from model import GPT, GPTConfig
from parallel import init_sequence_parallel, make_sequence_parallel, sequence_parallel_loss, shard_sequence

REPO = os.path.dirname(os.path.abspath(__file__))

# -----------------------------------------------------------------------------
# Defaults: the quick start (configs/quickstart.py holds the same values). A tiny Infini-attention model learns passkey
# retrieval from generated examples on a laptop CPU in a few minutes; the key sits 2-3 segments before the question,
# out of local attention's reach (docs/recall.md). Every key can be set by a config file or --key=value.
DEFAULTS = dict(
    # I/O
    out_dir='out-quickstart',
    eval_interval=250,           # estimate the val loss every this many steps (and at the end)
    eval_iters=4,                # batches per val-loss estimate; the same windows each time, so evals compare
    log_interval=1,              # write a log.jsonl / log.csv row every this many steps
    ckpt_interval=0,             # also save every this many steps (0: only at evals, the end and Ctrl-C)
    always_save_checkpoint=True,  # save at every eval; False: only when the val loss improved (end/Ctrl-C always save)
    init_from='scratch',         # 'scratch' | 'resume' (out_dir/ckpt.pt, exactly) | path/to/ckpt.pt (weights only)
    # data
    dataset='passkey',           # 'tokens': data_dir's files (dataset.TokenData) | 'passkey': generated passkey
                                 # examples (passkey.PasskeyData), data_dir unused
    tokenizer='byte',            # dataset='passkey' from scratch: 'byte' | 'gpt2' (a fine-tune keeps its checkpoint's)
    passkey_loss='all',          # dataset='passkey': 'answer' (the answer's tokens, as the paper's fine-tuning) |
                                 # 'all' (every token + the answer's mean); validation scores the answer alone
    data_dir='data/synthetic',   # dataset='tokens': made by data/<name>/prepare.py; data/synthetic is made on first use
    batch_size=16,               # windows per process and micro-step
    seq_len=288,                 # tokens per window: seq_len/segment_len segments, full backprop through all
    gradient_accumulation_steps=1,  # micro-steps per optimizer step, summed over all processes
    # model (model.GPTConfig; vocab_size comes from the data's tokenizer)
    n_layer=2,
    n_head=2,
    n_embd=64,
    dropout=0.0,
    bias=False,
    attn='infini',               # 'full' | 'local' | 'infini' | 'dilated'
    segment_len=32,
    mem_update='linear',         # infini: 'linear' | 'delta'
    gate_init=(3.0, -3.0),       # infini: β of each head at the start: one head on memory, one on local attention
    # AdamW
    learning_rate=1e-2,
    max_iters=1500,
    weight_decay=0.1,            # matrices only
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,               # clip the global gradient norm to this (0: off)
    gate_lr=1e-3,                # learning rate of the Infini gates β (no weight decay), see configure_optimizers
    # learning rate schedule: linear warmup, then cosine decay to min_lr
    decay_lr=True,
    warmup_iters=30,
    lr_decay_iters=0,            # 0: decay over the whole run (max_iters)
    min_lr=1e-3,
    # system
    device='auto',               # 'auto' (cuda if available, else cpu) | 'cpu' | 'cuda' | 'cuda:1' ...
    dtype='auto',                # 'auto' (bfloat16 autocast on cuda, float32 on cpu) | 'bfloat16' | 'float32'
    compile=False,               # torch.compile the model
    backend='auto',              # DDP backend: 'auto' (nccl with cuda, gloo on cpu) | 'nccl' | 'gloo'
    seq_parallel=1,              # ranks that split each window (parallel.py; torchrun --nproc_per_node a multiple of it)
    peak_flops=989e12,           # per-device peak for MFU; H100 SXM bf16 dense
    threads='auto',              # CPU threads for torch: 'auto' (or 0): timed on this machine at start-up | a number
    seed=1337,
)
# Any other GPTConfig field (e.g. dilated_segments, rope_base) is a config key too, with the model's default.
for _f in fields(GPTConfig):
    if _f.name not in DEFAULTS and _f.name != 'vocab_size' and _f.default is not MISSING:
        DEFAULTS[_f.name] = _f.default
MODEL_KEYS = [f.name for f in fields(GPTConfig) if f.name != 'vocab_size']
# Keys that describe this machine and this invocation, not the run: on resume they come from the command line and
# config file as given; every other key comes from the checkpoint unless overridden on the command line.
MACHINE_KEYS = ('init_from', 'out_dir', 'device', 'dtype', 'compile', 'backend', 'peak_flops')


# -----------------------------------------------------------------------------
# checks of the config as a whole (one line each, saying what to do)

def check_config(cfg):
    for key in ('batch_size', 'seq_len', 'gradient_accumulation_steps', 'eval_interval', 'eval_iters', 'log_interval',
                'seq_parallel'):
        if cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]} must be at least 1")
    for key in ('max_iters', 'ckpt_interval', 'warmup_iters', 'lr_decay_iters'):
        if cfg[key] < 0:
            raise ConfigError(f"{key}={cfg[key]} must be >= 0")
    if cfg['dtype'] not in ('auto', 'float32', 'bfloat16'):
        raise ConfigError(f"dtype={cfg['dtype']!r}: use 'auto', 'bfloat16' (GPUs from Ampere on) or 'float32'")
    if cfg['dataset'] not in ('tokens', 'passkey'):
        raise ConfigError(f"dataset={cfg['dataset']!r}: use 'tokens' (the files in data_dir) or 'passkey'")
    if cfg['tokenizer'] not in ('byte', 'gpt2'):
        raise ConfigError(f"tokenizer={cfg['tokenizer']!r}: use 'byte' or 'gpt2'")
    if cfg['passkey_loss'] not in ('answer', 'all'):
        raise ConfigError(f"passkey_loss={cfg['passkey_loss']!r}: use 'answer' or 'all'")
    if cfg['dataset'] == 'passkey' and cfg['passkey_loss'] == 'all' and cfg['seq_parallel'] > 1:
        raise ConfigError("passkey_loss='all' does not work with seq_parallel > 1; use passkey_loss='answer'")
    if cfg['seq_parallel'] > 1 and cfg['compile']:
        raise ConfigError(f"seq_parallel={cfg['seq_parallel']} does not work with compile=True; use --compile=False")
    if cfg['backend'] not in ('auto', 'nccl', 'gloo'):
        raise ConfigError(f"backend={cfg['backend']!r}: use 'auto', 'nccl' or 'gloo'")
    for key in ('learning_rate', 'gate_lr'):
        if not cfg[key] > 0:
            raise ConfigError(f"{key}={cfg[key]} must be positive")
    thread_count(cfg['threads'])
    try:  # the model's own checks (e.g. n_embd divisible by n_head), before any data is read or made
        GPTConfig(**{k: cfg[k] for k in MODEL_KEYS})
    except ValueError as e:
        raise ConfigError(str(e))
    S, T = cfg['segment_len'], cfg['seq_len']
    if cfg['attn'] in ('local', 'infini') and S >= 1 and T % S:
        # the model would pad a last partial segment; in training every window should be whole segments
        lower, upper = (T // S) * S, (T // S + 1) * S
        options = ' or '.join(str(v) for v in (lower, upper) if v > 0)
        raise ConfigError(f"seq_len={T} must be a multiple of segment_len={S} (attn={cfg['attn']!r} processes "
                          f"seq_len/segment_len segments); try seq_len={options}")


def resolve_data_dir(data_dir):
    """Relative to the current directory, else to the repository (so `data/synthetic` works from anywhere)."""
    if os.path.isabs(data_dir) or os.path.exists(data_dir):
        return data_dir
    in_repo = os.path.join(REPO, data_dir)
    return in_repo if os.path.exists(in_repo) else data_dir


def prepare_synthetic_if_needed(data_dir, seq_len, master, ddp):
    """data/synthetic is small and made on first use, so that `python train.py` works in a fresh clone. Its
    documents are seq_len tokens long (one document per window, facts first), so a corpus made for another
    seq_len is made again, keeping any other options it was made with."""
    synthetic = os.path.join(REPO, 'data', 'synthetic')
    if os.path.realpath(data_dir) != os.path.realpath(synthetic):
        return
    try:
        with open(os.path.join(synthetic, 'meta.json')) as f:
            params = json.load(f).get('params', {})
    except (OSError, ValueError):
        params = {}
    if params.get('doc_len') != seq_len and master:
        from data.synthetic.prepare import ensure_synthetic  # the data part's generator
        try:
            ensure_synthetic(synthetic, **{**params, 'doc_len': seq_len})
        except ValueError as e:  # e.g. a seq_len too short to hold the facts and queries
            raise ConfigError(f"cannot make the synthetic corpus for seq_len={seq_len}: {e}")
    if ddp:
        dist.barrier()  # the other processes wait until the files exist


def thread_count(value):
    """The `threads` key as a number: 0 for 'auto' (or 0), else the count asked for."""
    text = str(value).strip().lower()
    if text == 'auto' or (text.isdigit() and int(text) >= 0):
        return 0 if text == 'auto' else int(text)
    raise ConfigError(f"threads={value!r}: use 'auto' (or 0) to measure, or a number of CPU threads like 1 or 2")


def check_out_dir(out_dir):
    """Make out_dir if needed and check that it is writable. Returns the folders it made (deepest last), so that
    a run that fails before writing anything can remove them again (remove_if_empty)."""
    made, d = [], os.path.abspath(out_dir)
    while not os.path.exists(d) and os.path.dirname(d) != d:
        made.insert(0, d)
        d = os.path.dirname(d)
    try:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, '.write_test'), 'w') as f:
            f.write('ok')
        os.remove(os.path.join(out_dir, '.write_test'))
    except OSError as e:
        remove_if_empty(made)
        raise ConfigError(f"cannot write to out_dir={out_dir!r} ({e.strerror or e}); choose another with --out_dir=...")
    return made


def remove_if_empty(made):
    """Remove the folders check_out_dir made, deepest first, as long as they are still empty."""
    for d in reversed(made):
        try:
            os.rmdir(d)  # fails, and keeps the folder, unless it is empty
        except OSError:
            return


def resume_settings(cfg, ckpt, explicit, cmdline, ckpt_path):
    """--init_from=resume: the checkpoint's training settings (max_iters, the lr schedule, batch, ...) replace
    the defaults and the config file's, so that a resumed run continues the run that was stopped; --key=value on
    the command line still overrides. Returns one line naming what differs, or None. The architecture is the
    checkpoint's (init_model refuses a config that sets another); machine keys (device, compile, ...) are this
    invocation's. explicit: the keys a config file or the command line set; cmdline: those of the command line."""
    cfg.update({k: v for k, v in ckpt['model_args'].items() if k in MODEL_KEYS and k not in explicit})
    saved, changed, kept = ckpt.get('config') or {}, [], []
    for key, value in saved.items():
        if key not in cfg or key in MODEL_KEYS or key in MACHINE_KEYS or cfg[key] == value:
            continue
        if key == 'threads' and key not in cmdline and thread_count(cfg[key]) == 0:
            cfg[key] = value  # the count the run measured: the same sums in the same order, bit for bit
            continue
        if key in cmdline:
            changed.append(f"{key} {value!r} -> {cfg[key]!r}")
        else:
            kept.append(f"{key}={value!r} (not {cfg[key]!r})")
            cfg[key] = value
    if len(kept) > 8:  # e.g. resuming a config file's run without the file: one line still
        kept = kept[:8] + [f"and {len(kept) - 8} more"]
    parts = ([f"kept the checkpoint's {', '.join(kept)}"] if kept else []) + \
        ([f"changed on the command line: {', '.join(changed)}"] if changed else [])
    return f"resume {ckpt_path}: {'; '.join(parts)}" if parts else None


def time_passes(model, x, autocast, threads, passes, give_up=float('inf')):
    """Seconds of each forward+backward pass of the windows x on `threads` threads, `passes` of them, stopping
    after one that takes longer than give_up (that thread count has lost already)."""
    torch.set_num_threads(threads)
    seconds = []
    for _ in range(passes):
        t0 = time.perf_counter()
        with autocast:
            model(x, x)[1].backward()
        seconds.append(time.perf_counter() - t0)
        if seconds[-1] > give_up:
            break
    model.zero_grad(set_to_none=True)
    return seconds


def choose_threads(cfg, model, batch_size, seq_len, autocast, device_type, world):
    """Set torch's CPU threads from the `threads` key; returns (count, how it was chosen).
    'auto' times a forward+backward pass of this model on 1 thread and on torch's default (all cores, or what
    OMP_NUM_THREADS / torch.set_num_threads allow) and keeps the default only if it is clearly (10%) faster.
    Neither is right everywhere: a tiny model on idle cores gains from a second thread, but when other jobs hold
    the cores torch's threads wait on each other and a step can take 10x longer (docs/cpu.md). The passes run on
    fixed random tokens with the random state set aside and the gradients dropped: training is unchanged."""
    asked = thread_count(cfg['threads'])
    if asked:
        torch.set_num_threads(asked)
        return asked, f"threads={asked}"
    most = torch.get_num_threads()
    if device_type != 'cpu' or world > 1 or most == 1:  # GPUs; torchrun sets OMP_NUM_THREADS=1 per process
        return most, "torch's default"
    x = torch.randint(model.config.vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator
        first = time_passes(model, x, autocast, 1, 1)[0]  # also the warm-up (allocations, first-call costs)
        repeats = 2 if first < 2.0 else 1  # a big model's pass is long enough to time once
        one = sum(time_passes(model, x, autocast, 1, repeats)) / repeats
        # the first pass on `most` threads starts them (untimed); on a busy machine it can take 10x longer than
        # one thread's, and then the rest is not worth waiting for
        passes = time_passes(model, x, autocast, most, 1 + repeats, give_up=2 * one)
        many = sum(passes[1:]) / (len(passes) - 1) if len(passes) > 1 else passes[0]
    best = most if many < 0.9 * one else 1
    torch.set_num_threads(best)
    return best, f"auto: a forward+backward pass took {one:.2f} s on 1 thread, {many:.2f} s on {most}"


# -----------------------------------------------------------------------------
# learning rate, evaluation, random state

def get_lr(it, cfg):
    """Linear warmup, then cosine decay to min_lr (the paper: 1000 warmup steps, then cosine)."""
    lr, min_lr, warmup = cfg['learning_rate'], cfg['min_lr'], cfg['warmup_iters']
    if not cfg['decay_lr']:
        return lr
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    decay_iters = cfg['lr_decay_iters'] or cfg['max_iters']
    if it >= decay_iters:
        return min_lr
    ratio = (it - warmup) / max(1, decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def to_device(batch, device):
    """A batch (x, y) or (x, y, answer) on the device; answer is None unless the data marks answer tokens."""
    if device.startswith('cuda'):  # pinned memory lets the copy overlap with the GPU's work
        batch = [t.pin_memory().to(device, non_blocking=True) for t in batch]
    else:
        batch = [t.to(device) for t in batch]
    return (*batch, None) if len(batch) == 2 else tuple(batch)


def window_loss(model, x, y, sp, answer=None):
    """The mean loss of the windows (x, y); sp = (group, rank in it, size): with size > 1 this rank computes only
    its slice of each window, and the mean of the values over the group is the windows' loss (parallel.py).
    answer (passkey_loss='all'): the answer tokens' mean loss is added, so a 6-token answer weighs as much as the
    hundreds of tokens around it (without it, training on every token learned the answer 2x slower: docs/recall.md)."""
    group, sp_rank, size = sp
    if size == 1:
        logits, loss, _ = model(x, y)
        if answer is not None:
            loss = loss + F.cross_entropy(logits[answer].float(), y[answer])
        return loss
    x, y = shard_sequence(x, y, sp_rank, size)
    logits, _, _ = model(x)
    return sequence_parallel_loss(logits, y, group)


@torch.no_grad()
def estimate_val_loss(model, data, cfg, autocast, device, dp_rank, world, sp=(None, 0, 1)):
    """Mean loss over eval_iters windows per process. A fixed seed draws the same windows at every eval, so the
    curve shows the model changing, not the sample; the training generator is left alone (exact resume).
    dp_rank: the data-parallel index (the ranks of a sequence-parallel group draw the same windows)."""
    generator = torch.Generator().manual_seed(cfg['seed'] + 1_000_003 * (dp_rank + 1))
    model.eval()
    total = 0.0
    for _ in range(cfg['eval_iters']):
        x, y, answer = to_device(data.sample_batch(cfg['batch_size'], cfg['seq_len'], generator), device)
        with autocast:
            loss = window_loss(model, x, y, sp, answer)
        total += loss.item()
    model.train()
    loss = torch.tensor(total / cfg['eval_iters'], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(loss)
        loss /= world
    return loss.item()


def rng_state(data_gen):
    """This process's random state, as tensors and plain python values (checkpoints load with weights_only)."""
    np_state = np.random.get_state()
    return {'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            'numpy': [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            'python': random.getstate(),
            'data': data_gen.get_state()}


def set_rng_state(state, data_gen):
    torch.set_rng_state(state['torch'])
    if state['cuda'] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    data_gen.set_state(state['data'])


def gather(obj, world):
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


# -----------------------------------------------------------------------------
# logging: log.jsonl (one object per row), log.csv (the same rows), loss.png at the end

LOG_FIELDS = ['iter', 'loss', 'val_loss', 'lr', 'tokens', 'tokens_per_sec', 'mfu', 'elapsed_s', 'gates']


def memory_gates(model):
    """sigmoid(β) of every Infini layer, a list per layer of one value per head: the share of that head's output
    read from memory (eq. 6). None for the other attention kinds."""
    gates = [torch.sigmoid(p.detach().float()).tolist() for n, p in model.named_parameters() if n.endswith('attn.gate')]
    return [[round(g, 4) for g in layer] for layer in gates] or None


def describe_gates(gates, lean=0.5):
    """'layer 1: 0.02 0.95 | layer 2: ...; heads reading mostly from memory: L1H1 (0.95)'."""
    layers = ' | '.join(f"layer {i + 1}: " + ' '.join(f"{g:.2f}" for g in layer) for i, layer in enumerate(gates))
    leaning = [f"L{i + 1}H{h} ({g:.2f})" for i, layer in enumerate(gates) for h, g in enumerate(layer) if g > lean]
    return f"{layers}; heads reading mostly from memory: {', '.join(leaning) or 'none'}"


class Log:
    def __init__(self, out_dir, start_iter):
        self.jsonl, self.csv = os.path.join(out_dir, 'log.jsonl'), os.path.join(out_dir, 'log.csv')
        # On resume keep the rows before the checkpoint's step only: steps after it are trained again.
        self.rows = [r for r in read_log(self.jsonl) if r['iter'] < start_iter] if start_iter > 0 else []
        with open(self.jsonl, 'w') as fj, open(self.csv, 'w', newline='') as fc:
            writer = csv.DictWriter(fc, LOG_FIELDS)
            writer.writeheader()
            for row in self.rows:
                fj.write(json.dumps(row) + '\n')
                writer.writerow({k: row.get(k) for k in LOG_FIELDS})

    def write(self, row):
        self.rows.append(row)
        with open(self.jsonl, 'a') as f:
            f.write(json.dumps(row) + '\n')
        with open(self.csv, 'a', newline='') as f:
            csv.DictWriter(f, LOG_FIELDS).writerow({k: row.get(k) for k in LOG_FIELDS})


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_losses(rows, path, title):
    """loss.png: training and val loss against step. matplotlib is optional: without it, one warning, no plot."""
    try:
        import matplotlib
        matplotlib.use('Agg')  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed, so no loss plot was drawn (pip install matplotlib); "
              "the numbers are in log.csv")
        return None
    train = [(r['iter'], r['loss']) for r in rows if r.get('loss') is not None]
    val = [(r['iter'], r['val_loss']) for r in rows if r.get('val_loss') is not None]
    gates = [(r['iter'], r['gates']) for r in rows if r.get('gates')]
    fig, axes = plt.subplots(1, 2 if gates else 1, figsize=(14 if gates else 8, 5), squeeze=False)
    ax = axes[0, 0]
    if gates:  # the second panel: each head's memory share sigmoid(β) against step
        steps, values = zip(*gates)
        for i, layer in enumerate(values[0]):
            for h in range(len(layer)):
                axes[0, 1].plot(steps, [v[i][h] for v in values], label=f"L{i + 1}H{h}")
        axes[0, 1].set(xlabel='step', ylabel='sigmoid(β): share read from memory', ylim=(0, 1))
        axes[0, 1].grid(alpha=0.3)
        axes[0, 1].legend(fontsize='small', ncol=2)
    if train:
        ax.plot(*zip(*train), label='train', alpha=0.6)
    if val:
        ax.plot(*zip(*val), 'o-', label='val')
    ax.set_xlabel('step')
    ax.set_ylabel('loss (nats/token)')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM: finish the current step, save a checkpoint, exit. Stopping between steps keeps
    the saved state consistent, so a resumed run continues exactly. A repeat within 2 s is the same request
    (torchrun forwards the terminal's Ctrl-C to workers that already got it); a later one quits without saving."""

    def __init__(self, verbose):
        self.signum, self.time, self.verbose, self.previous = None, 0.0, verbose, {}

    def __call__(self, signum, frame):
        if self.signum is not None:
            if time.time() - self.time < 2.0:
                return
            raise KeyboardInterrupt
        self.signum, self.time = signum, time.time()
        if self.verbose:
            tqdm.write(f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                       f"(press Ctrl-C again to quit without saving)")

    def install(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self)

    def uninstall(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# -----------------------------------------------------------------------------

def setup_processes(cfg):
    """(ddp, rank, local_rank, world_size, device). torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them
    this is the only process. The backend follows the device: nccl for GPUs, gloo for CPU processes."""
    device = cfg['device'] if cfg['device'] != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but torch sees no CUDA GPU; use --device=cpu")
    if not ('RANK' in os.environ and 'WORLD_SIZE' in os.environ):
        return False, 0, 0, 1, device
    backend = cfg['backend'] if cfg['backend'] != 'auto' else ('nccl' if device.startswith('cuda') else 'gloo')
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if device.startswith('cuda'):
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True, dist.get_rank(), local_rank, dist.get_world_size(), device


def load_init_checkpoint(cfg, ckpt_path):
    """(checkpoint, its path) for init_from = 'resume' | path to a ckpt.pt; (None, None) for 'scratch'."""
    init_from = cfg['init_from']
    if init_from == 'scratch':
        return None, None
    resume = init_from == 'resume'
    path = ckpt_path if resume else init_from
    if resume and not os.path.exists(path):
        raise CheckpointError(f"nothing to resume: {path} not found (start with --init_from=scratch)")
    if not resume and not os.path.exists(path) and os.sep not in path and not path.endswith('.pt'):
        raise ConfigError(f"init_from={path!r} must be 'scratch', 'resume' or the path of a checkpoint file")
    if not resume and os.path.realpath(path) == os.path.realpath(ckpt_path):
        raise ConfigError(f"fine-tuning from {path} would overwrite it with the fine-tuned model; "
                          f"choose another --out_dir (or --init_from=resume to continue that run)")
    return load_checkpoint(path, 'cpu'), path


def load_data(cfg, ckpt, master, ddp):
    """(train, validation) sources with .meta and .sample_batch(batch_size, seq_len, generator)."""
    if cfg['dataset'] == 'passkey':  # generated examples in the tokenizer of the checkpoint being fine-tuned
        from passkey import PasskeyData
        tokenizer = ckpt['tokenizer'] if ckpt is not None else cfg['tokenizer']
        train, val = PasskeyData(tokenizer, cfg['passkey_loss']), PasskeyData(tokenizer, 'answer')
        try:  # too short a seq_len for an example is a config mistake: say so before training starts
            train.sample_batch(1, cfg['seq_len'], torch.Generator().manual_seed(0))
        except ValueError as e:
            raise ConfigError(str(e))
        return train, val
    from dataset import TokenData  # the data part's module
    data_dir = resolve_data_dir(cfg['data_dir'])
    prepare_synthetic_if_needed(data_dir, cfg['seq_len'], master, ddp)
    return TokenData(data_dir, 'train'), TokenData(data_dir, 'validation')


def init_model(cfg, explicit, ckpt, path, data_meta):
    """A new model (init_from='scratch'), or the checkpoint's architecture with its weights."""
    model_args = {k: cfg[k] for k in MODEL_KEYS}
    if ckpt is None:
        return GPT(GPTConfig(**model_args, vocab_size=-(-data_meta['vocab_size'] // 64) * 64))  # 64: faster matmuls
    if ckpt.get('tokenizer') != data_meta['tokenizer']:
        raise CheckpointError(f"checkpoint {path} was trained with the {ckpt.get('tokenizer')!r} tokenizer, "
                              f"but the data uses {data_meta['tokenizer']!r}")
    # The architecture comes from the checkpoint. Keys set by a config file or on the command line must agree with
    # it to resume; fine-tuning may change them (e.g. dropout, segment_len) as long as the weights still fit.
    asked = {k: model_args[k] for k in MODEL_KEYS if k in explicit}
    if cfg['init_from'] == 'resume':
        differ = {k: v for k, v in asked.items() if ckpt['model_args'].get(k) != v}
        if differ:
            what = '; '.join(f"{k}: checkpoint {ckpt['model_args'].get(k)!r}, config {v!r}" for k, v in differ.items())
            raise CheckpointError(f"cannot resume from {path}: it holds another architecture ({what}); "
                                  f"use the config it was trained with, or another --out_dir")
    model_args = {**ckpt['model_args'], **asked}
    if model_args['vocab_size'] < data_meta['vocab_size']:
        raise CheckpointError(f"checkpoint {path} has vocab_size {model_args['vocab_size']}, fewer than the "
                              f"data's {data_meta['vocab_size']}")
    model = build_model(model_args, path)
    load_state_dict(model, ckpt, path)
    return model


def restore_training_state(optimizer, ckpt, data_gen, rank, world, seed, dp_rank=None):
    """Resume: AdamW's moments and step counts, and every process's random state, from the checkpoint.
    The optimizer's hyperparameters (lr_scale, weight decay, betas) stay those of the current config."""
    hyper = [{k: v for k, v in g.items() if k != 'params'} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt['optimizer'])
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"the optimizer state in the checkpoint does not fit this model: {e}")
    for group, h in zip(optimizer.param_groups, hyper):
        group.update(h)
    states = ckpt['rng']
    if len(states) == world:
        set_rng_state({**states[rank], 'data': ckpt['data_rng'][rank]}, data_gen)
    else:  # another number of processes: the windows cannot continue exactly; reseed deterministically
        if rank == 0:
            print(f"note: the checkpoint was written by {len(states)} processes and this run has {world}: the "
                  f"training windows are reseeded, so the run does not continue bit for bit")
        data_gen.manual_seed(seed + (rank if dp_rank is None else dp_rank) + 7919 * ckpt['iter_num'])


def main(argv=None):
    """Entry point; argv like sys.argv[1:]. User mistakes end as SystemExit('error: ...'), one line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if '-h' in argv or '--help' in argv:
        print(describe(DEFAULTS))
        return None
    made, finished = [], False  # made: the out_dir folders this run created, removed again if it fails empty
    try:
        result = train(argv, made)
        finished = True
        return result
    except (ConfigError, CheckpointError) as e:
        raise SystemExit(f"error: {e}")
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        raise SystemExit("interrupted: quit without saving (the checkpoint already in out_dir, if any, is intact)")
    finally:
        if not finished:  # e.g. missing data: leave no empty out_dir behind
            remove_if_empty(made)
        if dist.is_initialized():
            dist.destroy_process_group()


def train(argv, made_dirs):
    cfg, explicit = get_config(DEFAULTS, argv)
    check_config(cfg)
    out_dir = cfg['out_dir']
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    ckpt, ckpt_source = load_init_checkpoint(cfg, ckpt_path)
    resumed = resume_settings(cfg, ckpt, explicit, command_line_keys(argv), ckpt_path) \
        if cfg['init_from'] == 'resume' else None
    check_config(cfg)

    ddp, rank, local_rank, world, device = setup_processes(cfg)
    master = rank == 0
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    dtype = cfg['dtype'] if cfg['dtype'] != 'auto' else ('bfloat16' if device_type == 'cuda' else 'float32')
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if dtype == 'bfloat16' else nullcontext()
    sp = cfg['seq_parallel']
    if sp > 1 and not ddp:
        raise ConfigError(f"seq_parallel={sp} needs torchrun --nproc_per_node {sp} (or a multiple)")
    try:  # groups of sp consecutive ranks split each window; dp_world groups (replicas) draw different windows
        sp_group, sp_rank, dp_rank, dp_world = init_sequence_parallel(sp) if sp > 1 else (None, 0, rank, world)
    except ValueError as e:
        raise ConfigError(str(e))
    gas = cfg['gradient_accumulation_steps']
    if gas % dp_world:
        raise ConfigError(f"gradient_accumulation_steps={gas} is the total over all {dp_world} processes and must be "
                          f"a multiple of it; try --gradient_accumulation_steps={max(dp_world, gas - gas % dp_world)}")
    gas //= dp_world
    tokens_per_iter = gas * dp_world * cfg['batch_size'] * cfg['seq_len']
    torch.manual_seed(cfg['seed'] + rank)
    np.random.seed(cfg['seed'] + rank)
    random.seed(cfg['seed'] + rank)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    if master:
        made_dirs.extend(check_out_dir(out_dir))

    # data and model ---------------------------------------------------------------
    train_data, val_data = load_data(cfg, ckpt, master, ddp)
    tokenizer = train_data.meta['tokenizer']
    data_gen = torch.Generator().manual_seed(cfg['seed'] + dp_rank)  # all training-window randomness
    raw_model = init_model(cfg, explicit, ckpt, ckpt_source, train_data.meta)
    raw_model.to(device)
    if sp > 1:  # in place, before the optimizer and DDP: same parameters, same checkpoints
        try:
            make_sequence_parallel(raw_model, sp_group, cfg['seq_len'])
        except ValueError as e:
            raise ConfigError(str(e))
    threads, how = choose_threads(cfg, raw_model, cfg['batch_size'], cfg['seq_len'], autocast, device_type, world)
    if device_type == 'cpu' and world == 1:
        cfg['threads'] = str(threads)  # saved in the checkpoint: a resumed run sums in the same order (bit for bit)
    model_config = asdict(raw_model.config)
    cfg.update({k: v for k, v in model_config.items() if k in cfg})  # what is trained (a checkpoint's, on resume)
    check_config(cfg)
    optimizer = raw_model.configure_optimizers(cfg['weight_decay'], cfg['learning_rate'], cfg['gate_lr'],
                                               (cfg['beta1'], cfg['beta2']), device_type)
    iter_num, best_val_loss = 0, float('inf')
    if cfg['init_from'] == 'resume':
        iter_num, best_val_loss = ckpt['iter_num'], ckpt['best_val_loss']
        restore_training_state(optimizer, ckpt, data_gen, rank, world, cfg['seed'], dp_rank)
    ckpt = None  # free the memory of the loaded state

    model = torch.compile(raw_model) if cfg['compile'] else raw_model
    eval_model = model
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)

    if master:
        if resumed:
            print(resumed)
        n_seg = f" = {cfg['seq_len'] // cfg['segment_len']} segments of {cfg['segment_len']}" \
            if model_config['attn'] in ('local', 'infini') else ''
        n_layer = model_config['n_layer']
        print(f"model: attn={model_config['attn']!r}, {n_layer} layer{'s' if n_layer != 1 else ''}, "
              f"n_embd {model_config['n_embd']}, {raw_model.num_params() / 1e6:.2f}M parameters ({cfg['init_from']})")
        source = f"{train_data.data_dir}, {len(train_data):,} train tokens" if cfg['dataset'] == 'tokens' \
            else train_data.meta['source']
        print(f"data: {source} ({tokenizer} tokenizer) | window: seq_len "
              f"{cfg['seq_len']}{n_seg} | {tokens_per_iter:,} tokens/step ({cfg['batch_size']} x {gas} micro-steps "
              f"x {world} process{'es' if world > 1 else ''}{f', {sp} per window' if sp > 1 else ''})")
        cpu = f", {threads} thread{'s' if threads > 1 else ''} ({how})" if device_type == 'cpu' else ''
        print(f"device: {device} ({dtype}{', compiled' if cfg['compile'] else ''}{cpu}) | out_dir: {out_dir}")

    # the training loop ------------------------------------------------------------
    log = Log(out_dir, iter_num) if master else None
    last_saved = (ckpt_path, iter_num) if cfg['init_from'] == 'resume' else None
    stop = StopRequest(master)
    stop.install()

    def save(reason):
        nonlocal last_saved
        states = gather(rng_state(data_gen), world)  # every process takes part
        if master:
            save_checkpoint(ckpt_path, {
                'model': raw_model.state_dict(), 'model_args': model_config, 'tokenizer': tokenizer,
                'optimizer': optimizer.state_dict(), 'iter_num': iter_num, 'best_val_loss': best_val_loss,
                'config': cfg, 'rng': [{k: v for k, v in s.items() if k != 'data'} for s in states],
                'data_rng': [s['data'] for s in states]})
            tqdm.write(f"step {iter_num}: saved {ckpt_path} ({reason})")
        last_saved = (ckpt_path, iter_num)

    def last_good():
        return f"{last_saved[0]} (step {last_saved[1]})" if last_saved else "none (no checkpoint was written yet)"

    pbar = tqdm(total=cfg['max_iters'], initial=iter_num, disable=not master, dynamic_ncols=True, unit='step')
    t_start = time.time()
    running_mfu, val_loss = None, None
    try:
        while True:
            last_step = iter_num >= cfg['max_iters']
            if stop.signum is not None:
                if last_saved is None or last_saved[1] != iter_num:
                    save('interrupted')
                pbar.close()
                if master:
                    print(f"stopped at step {iter_num}; continue with the same arguments plus --init_from=resume")
                raise SystemExit(128 + stop.signum)

            # evaluate and save (the weights after iter_num steps) -----------------------------------
            row = {'iter': iter_num}
            if iter_num % cfg['eval_interval'] == 0 or last_step:
                val_loss = estimate_val_loss(eval_model, val_data, cfg, autocast, device, dp_rank, world,
                                             (sp_group, sp_rank, sp))
                row['val_loss'] = val_loss
                row['gates'] = memory_gates(raw_model)
                if not math.isfinite(val_loss):
                    raise SystemExit(f"error: val loss is {val_loss} at step {iter_num}; stopping without saving. "
                                     f"Last good checkpoint: {last_good()}. Try a lower learning_rate.")
                if master:
                    tqdm.write(f"step {iter_num}: val loss {val_loss:.4f}"
                               + (f" | memory gates {describe_gates(row['gates'])}" if row['gates'] else ''))
                improved = val_loss < best_val_loss
                best_val_loss = min(best_val_loss, val_loss)
                if (improved or cfg['always_save_checkpoint'] or last_step) and iter_num > 0 \
                        and (last_saved is None or last_saved[1] != iter_num):
                    save('end of run' if last_step else 'eval')
            if cfg['ckpt_interval'] and iter_num % cfg['ckpt_interval'] == 0 and iter_num > 0 \
                    and (last_saved is None or last_saved[1] != iter_num):
                save('ckpt_interval')
            if last_step:
                if master and 'val_loss' in row:
                    log.write(row)
                break

            # one optimizer step: gas micro-steps per process, gradients averaged over processes --------
            t_step = time.time()
            lr = get_lr(iter_num, cfg)
            for group in optimizer.param_groups:
                group['lr'] = lr * group['lr_scale']
            loss_sum = torch.zeros((), device=device)
            for micro_step in range(gas):
                batch = train_data.sample_batch(cfg['batch_size'], cfg['seq_len'], data_gen)
                x, y, answer = to_device(batch, device)
                # DDP all-reduces gradients in backward; only the last micro-step needs to.
                sync = model.no_sync() if ddp and micro_step < gas - 1 else nullcontext()
                with sync:
                    with autocast:
                        loss = window_loss(model, x, y, (sp_group, sp_rank, sp), answer) / gas
                    loss.backward()
                loss_sum += loss.detach()
            # One all-reduce carries the loss (for the log) and any stop request, so every process agrees.
            flags = torch.stack([loss_sum.float(), torch.tensor(float(stop.signum or 0), device=device)])
            if ddp:
                dist.all_reduce(flags)
                flags[0] /= world
            lossf, stop_signum = flags[0].item(), int(flags[1].item())
            if stop_signum and stop.signum is None:
                stop.signum = signal.SIGTERM  # another process was asked to stop
            if not math.isfinite(lossf):
                again = ", resuming from it with --init_from=resume --learning_rate=N" if last_saved else ""
                raise SystemExit(f"error: training loss is {lossf} at step {iter_num} (lr {lr:.3g}); stopping "
                                 f"without saving. Last good checkpoint: {last_good()}. Try a lower learning_rate"
                                 f"{again}.")
            if cfg['grad_clip'] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg['grad_clip'])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            # progress and logs ---------------------------------------------------------------------------
            now = time.time()
            tokens_per_sec = tokens_per_iter / (now - t_step)  # the step alone, evals and saves left out
            mfu = None
            if device_type == 'cuda':
                mfu = raw_model.flops_per_token(cfg['seq_len']) * tokens_per_sec / world / cfg['peak_flops']
                running_mfu = mfu if running_mfu is None else 0.9 * running_mfu + 0.1 * mfu
            mfu_text = f"{100 * running_mfu:.1f}%" if running_mfu is not None else "n/a"
            pbar.set_postfix_str(f"loss {lossf:.4f} | {tokens_per_sec:,.0f} tok/s | MFU {mfu_text}", refresh=False)
            pbar.update(1)
            if master and (iter_num % cfg['log_interval'] == 0 or 'val_loss' in row):
                log.write({**row, 'loss': lossf, 'lr': lr, 'tokens': (iter_num + 1) * tokens_per_iter,
                           'tokens_per_sec': round(tokens_per_sec, 1), 'mfu': mfu,
                           'elapsed_s': round(now - t_start, 3)})
            iter_num += 1
    finally:
        stop.uninstall()
        pbar.close()

    if master:
        plot = plot_losses(log.rows, os.path.join(out_dir, 'loss.png'),
                           f"{model_config['attn']}, {model_config['n_layer']} layers, seq_len {cfg['seq_len']}")
        elapsed = time.time() - t_start
        print(f"done: {iter_num} steps, {elapsed:.0f} s this run, final val loss {val_loss:.4f}")
        print(f"checkpoint: {last_saved[0] if last_saved else '(none)'}")
        gates = memory_gates(raw_model)
        if gates:
            print(f"memory gates sigmoid(β) per layer and head: {describe_gates(gates)}")
        print(f"loss curve: {plot if plot else '(not drawn: matplotlib is not installed)'}; "
              f"log: {os.path.join(out_dir, 'log.jsonl')}, {os.path.join(out_dir, 'log.csv')}")
    return {'iter_num': iter_num, 'val_loss': val_loss, 'best_val_loss': best_val_loss,
            'checkpoint': last_saved[0] if last_saved else None}


if __name__ == '__main__':
    main()
