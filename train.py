"""
Train a long-context GPT: Infini-attention, LongNet dilated attention, grouped cross-attention (GCA), or the local
and full attention baselines (model.py).

    python train.py                                   # the quick start: a tiny Infini model learns passkey recall
    python train.py configs/tiny_local.py --max_iters=100
    python train.py config/pg19_infini.py             # the paper's PG19 setup, one GPU
    torchrun --standalone --nproc_per_node=8 train.py config/pg19_infini.py      # DDP, one node
    python train.py config/pg19_infini.py --init_from=resume                     # continue where it stopped

Config: config files (plain assignments), then --key=value overrides; `python train.py --help` lists the keys.
A training window is `seq_len` tokens, drawn inside one book of data_dir (dataset='tokens') or generated as a
passkey prompt (dataset='passkey'); the model processes it as seq_len/segment_len segments and the loss
backpropagates through all of them. --init_from=resume continues with the checkpoint's own training settings;
only --key=value on the command line changes them. A fresh run refuses an out_dir that holds a checkpoint unless
--overwrite=True. Writes out_dir/ckpt.pt (atomically), log.jsonl, log.csv and loss.png (with matplotlib).
"""

import csv
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import MISSING, asdict, fields

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import (CheckpointError, Saver, StopRequest, check_out_dir, init_model, load_init_checkpoint,
                        refuse_to_replace, remove_if_empty, restore_training_state)
from configurator import (MODEL_KEYS, ConfigError, check_config, command_line_keys, describe, get_config,
                          resume_settings, thread_count)
from model import GPT, GPTConfig  # noqa: F401 (GPT: train.GPT, as in nanoGPT, for scripts and tests)
from parallel import make_sequence_parallel, sequence_parallel_loss, setup_processes, shard_sequence, split_processes
from sample import measure_threads, plot_losses

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
    overwrite=False,             # True: a fresh run (or a fine-tune) may replace the checkpoint already in out_dir
    # data
    dataset='passkey',           # 'tokens': data_dir's files (dataset.TokenData) | 'passkey': generated passkey
                                 # examples (passkey.PasskeyData), data_dir unused
    tokenizer='byte',            # dataset='passkey' from scratch: 'byte' | 'gpt2' (a fine-tune keeps its checkpoint's)
    passkey_loss='all',          # dataset='passkey': 'answer' (the answer's tokens, as the paper's fine-tuning) |
                                 # 'all' (every token + the answer's mean); validation scores the answer alone
    passkey_end_share=0.0,       # dataset='passkey': the share of training examples with the key right before the
                                 # question (the rest at a uniform depth; validation stays uniform)
    passkey_one_offset_iters=0,  # dataset='passkey': the first this many steps put the answer at one position of its
                                 # segment (the example's end), the rest at every position: a curriculum (val_loss
                                 # asks at every position throughout; val_loss_one_offset at the end while it lasts)
    data_dir='data/synthetic',   # dataset='tokens': made by data/<name>/prepare.py; data/synthetic is made on first use
    batch_size=16,               # windows per process and micro-step
    seq_len=288,                 # tokens per window: seq_len/segment_len segments, full backprop through all
    gradient_accumulation_steps=1,  # micro-steps per optimizer step, summed over all processes
    # model (model.GPTConfig; vocab_size comes from the data's tokenizer)
    n_layer=2,
    n_head=4,
    n_embd=64,
    dropout=0.0,
    bias=False,
    attn='infini',               # 'full' | 'local' | 'infini' | 'dilated' | 'gca'
    segment_len=32,
    mem_update='linear',         # infini: 'linear' | 'delta'
    gate_init=(3.0, -3.0, -3.0, -3.0),  # infini: β of each head at the start: one on memory, three on local attention
    # AdamW
    learning_rate=1e-2,
    max_iters=2200,
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
    seed=1337,                   # the initialisation and the training windows (generated or drawn) both follow it
)
# Any other GPTConfig field (e.g. dilated_segments, rope_base) is a config key too, with the model's default.
for _f in fields(GPTConfig):
    if _f.name not in DEFAULTS and _f.name != 'vocab_size' and _f.default is not MISSING:
        DEFAULTS[_f.name] = _f.default


# -----------------------------------------------------------------------------
# what happens once: the config, processes, threads, data, model

def read_config(argv):
    """(cfg, explicit keys, the checkpoint to start from or None, its path, a line about resumed settings or None).
    Everything here is checked before any process group, data or model exists."""
    cfg, explicit = get_config(DEFAULTS, argv)
    ckpt_path = os.path.join(cfg['out_dir'], 'ckpt.pt')
    ckpt, source = load_init_checkpoint(cfg['init_from'], ckpt_path)
    if ckpt is not None and cfg['init_from'] != 'resume':  # a fine-tune: the model keys not set are the checkpoint's
        cfg.update({k: v for k, v in ckpt['model_args'].items() if k in MODEL_KEYS and k not in explicit})
    check_config(cfg)  # (so --n_head=2 alone fits a 2-head checkpoint's gates, not the defaults' four)
    refuse_to_replace(ckpt_path, cfg['init_from'], cfg['overwrite'])
    resumed = None
    if cfg['init_from'] == 'resume':
        resumed = resume_settings(cfg, ckpt, explicit, command_line_keys(argv), ckpt_path)
        check_config(cfg)
    return cfg, explicit, ckpt, source, resumed


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
    """Set torch's CPU threads from the `threads` key; returns (count, how it was chosen). 'auto' times a
    forward+backward pass of this model on 1 thread and on torch's default (sample.measure_threads). The passes
    run on fixed random tokens with the random state set aside and the gradients dropped: training is unchanged."""
    asked = thread_count(cfg['threads'])
    if asked:
        torch.set_num_threads(asked)
        return asked, f"threads={asked}"
    most = torch.get_num_threads()
    if device_type != 'cpu' or world > 1 or most == 1:  # GPUs; torchrun sets OMP_NUM_THREADS=1 per process
        return most, "torch's default"
    x = torch.randint(model.config.vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator
        return measure_threads(lambda threads, passes, give_up=float('inf'):
                               time_passes(model, x, autocast, threads, passes, give_up), most, "forward+backward pass")


def seed_everything(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build_model(cfg, explicit, ckpt, ckpt_source, data_meta, device, sp_group, autocast, world):
    """(model, threads, how they were chosen): a new model or the checkpoint's, on the device, made sequence parallel
    in place (before the optimizer and DDP: same parameters, same checkpoints). cfg takes the model's settings."""
    model = init_model({k: cfg[k] for k in MODEL_KEYS}, {k: cfg[k] for k in MODEL_KEYS if k in explicit}, ckpt,
                       ckpt_source, data_meta, cfg['init_from'] == 'resume').to(device)
    if cfg['seq_parallel'] > 1:
        try:
            make_sequence_parallel(model, sp_group, cfg['seq_len'])
        except ValueError as e:
            raise ConfigError(str(e))
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    threads, how = choose_threads(cfg, model, cfg['batch_size'], cfg['seq_len'], autocast, device_type, world)
    if device_type == 'cpu' and world == 1:
        cfg['threads'] = str(threads)  # saved in the checkpoint: a resumed run sums in the same order (bit for bit)
    cfg.update({k: v for k, v in asdict(model.config).items() if k in cfg})  # what is trained (a checkpoint's)
    check_config(cfg)
    return model, threads, how


def load_data(cfg, ckpt, master, ddp):
    """(train, validation) sources with .meta and .sample_batch(batch_size, seq_len, generator). For dataset='tokens'
    cfg['data_dir'] becomes the folder read (data/synthetic may send another seq_len to a subfolder)."""
    if cfg['dataset'] == 'passkey':  # generated examples in the tokenizer of the checkpoint being fine-tuned
        from passkey import PasskeyData
        tokenizer = ckpt['tokenizer'] if ckpt is not None else cfg['tokenizer']
        train = PasskeyData(tokenizer, cfg['passkey_loss'], end_share=cfg['passkey_end_share'])
        val = PasskeyData(tokenizer, 'answer')
        try:  # too short a seq_len for an example is a config mistake: say so before training starts
            train.sample_batch(1, cfg['seq_len'], torch.Generator().manual_seed(0))
        except ValueError as e:
            raise ConfigError(str(e))
        return train, val
    from dataset import TokenData, resolve_data_dir, synthetic_data_dir
    asked = resolve_data_dir(cfg['data_dir'])
    try:
        if master:
            synthetic_data_dir(asked, cfg['seq_len'], make=True)
    except ValueError as e:
        raise ConfigError(f"cannot make the synthetic corpus for seq_len={cfg['seq_len']}: {e}")
    if ddp:
        dist.barrier()  # the other processes wait until the files exist
    data_dir = synthetic_data_dir(asked, cfg['seq_len'], make=False)
    if data_dir != asked:
        cfg['data_dir'] = data_dir
        if master:
            print(f"data: data/synthetic holds another seq_len's corpus, kept; this run reads {data_dir}")
    return TokenData(data_dir, 'train'), TokenData(data_dir, 'validation')


def describe_run(cfg, model, data, resumed, tokens_per_iter, gas, world, device, dtype, threads, how):
    """The lines printed before the first step: model, data, device."""
    if resumed:
        print(resumed)
    c = model.config
    n_seg = f" = {cfg['seq_len'] // c.segment_len} segments of {c.segment_len}" if c.attn in ('local', 'infini') else ''
    print(f"model: attn={c.attn!r}, {c.n_layer} layer{'s' if c.n_layer != 1 else ''}, n_embd {c.n_embd}, "
          f"{model.num_params() / 1e6:.2f}M parameters ({cfg['init_from']})")
    source = f"{data.data_dir}, {len(data):,} train tokens" if cfg['dataset'] == 'tokens' else data.meta['source']
    sp = cfg['seq_parallel']
    print(f"data: {source} ({data.meta['tokenizer']} tokenizer) | window: seq_len {cfg['seq_len']}{n_seg} | "
          f"{tokens_per_iter:,} tokens/step ({cfg['batch_size']} x {gas} micro-steps x {world} "
          f"process{'es' if world > 1 else ''}{f', {sp} per window' if sp > 1 else ''})")
    cpu = f", {threads} thread{'s' if threads > 1 else ''} ({how})" if device == 'cpu' else ''
    print(f"device: {device} ({dtype}{', compiled' if cfg['compile'] else ''}{cpu}) | out_dir: {cfg['out_dir']}")


# -----------------------------------------------------------------------------
# the step: learning rate, the loss of a batch, the val loss

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


def set_lr(optimizer, it, cfg):
    lr = get_lr(it, cfg)
    for group in optimizer.param_groups:
        group['lr'] = lr * group['lr_scale']  # the gates' group learns at gate_lr / learning_rate of it
    return lr


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


def train_step(model, optimizer, data, data_gen, cfg, gas, autocast, device, sp, ddp, stop_signum):
    """One optimizer step: gas micro-steps, gradients averaged over processes. Returns (the mean loss, whether any
    process was asked to stop): one all-reduce carries both, so every process agrees. A non-finite loss skips the
    update (the caller stops without saving)."""
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(gas):
        x, y, answer = to_device(data.sample_batch(cfg['batch_size'], cfg['seq_len'], data_gen), device)
        # DDP all-reduces gradients in backward; only the last micro-step needs to.
        with model.no_sync() if ddp and micro_step < gas - 1 else nullcontext():
            with autocast:
                loss = window_loss(model, x, y, sp, answer) / gas
            loss.backward()
        loss_sum += loss.detach()
    flags = torch.stack([loss_sum.float(), torch.tensor(float(stop_signum or 0), device=device)])
    if ddp:
        dist.all_reduce(flags)
        flags[0] /= dist.get_world_size()
    lossf, stop_asked = flags[0].item(), flags[1].item() > 0
    if math.isfinite(lossf):
        if cfg['grad_clip'] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg['grad_clip'])
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return lossf, stop_asked


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


def val_loss_at_one_offset(model, data, cfg, autocast, device, dp_rank, world, sp):
    """estimate_val_loss on examples that end with their answer: during passkey_one_offset_iters, the position being
    trained, so the log shows when the first part of the curriculum has been learned (val_loss, at every position,
    shows it only after the switch)."""
    every_offset, data.offsets = data.offsets, 1
    try:
        return estimate_val_loss(model, data, cfg, autocast, device, dp_rank, world, sp)
    finally:
        data.offsets = every_offset


# -----------------------------------------------------------------------------
# logging

LOG_FIELDS = ['iter', 'loss', 'val_loss', 'val_loss_one_offset', 'lr', 'tokens', 'tokens_per_sec', 'mfu', 'elapsed_s',
              'gates']


class Log:
    """log.jsonl (one object per row) and log.csv (the same rows); loss.png is drawn from them at the end."""

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


# -----------------------------------------------------------------------------

def report_eval(row, saver, master):
    """Stop on a non-finite val loss (nothing is saved); print the val loss and the memory gates."""
    if not math.isfinite(row['val_loss']):
        raise SystemExit(f"error: val loss is {row['val_loss']} at step {row['iter']}; stopping without saving. "
                         f"Last good checkpoint: {saver.last_good()}. Try a lower learning_rate.")
    if master:
        gates = f" | memory gates {describe_gates(row['gates'])}" if row['gates'] else ''
        one = row.get('val_loss_one_offset')
        one = f" (answer at the example's end: {one:.4f})" if one is not None else ''
        tqdm.write(f"step {row['iter']}: val loss {row['val_loss']:.4f}{one}{gates}")


def report_end(log, model, cfg, saver, iter_num, seconds, val_loss):
    """The lines printed after the last step, and loss.png."""
    c, out_dir = model.config, cfg['out_dir']
    title = f"{c.attn}, {c.n_layer} layers, seq_len {cfg['seq_len']}"
    plot = plot_losses(log.rows, os.path.join(out_dir, 'loss.png'), title)
    print(f"done: {iter_num} steps, {seconds:.0f} s this run, final val loss {val_loss:.4f}")
    print(f"checkpoint: {saver.path if saver.last_step is not None else '(none)'}")
    if memory_gates(model):
        print(f"memory gates sigmoid(β) per layer and head: {describe_gates(memory_gates(model))}")
    print(f"loss curve: {plot if plot else '(not drawn: matplotlib is not installed)'}; "
          f"log: {os.path.join(out_dir, 'log.jsonl')}, {os.path.join(out_dir, 'log.csv')}")


# -----------------------------------------------------------------------------

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
            if finished:  # every rank ran the same collectives, so this one is matched (after a failure, maybe not)
                dist.barrier()  # no rank closes its connections while another is still in a collective
            dist.destroy_process_group()
            if finished:
                # Then leave without the interpreter's shutdown. gloo's worker threads outlive destroy_process_group
                # (DDP keeps the group referenced) and may still be freeing the last collectives' tensors, which
                # takes the GIL; once the interpreter finalizes, Python ends such a thread inside a C++ destructor:
                # "terminate called without an active exception", SIGABRT, a failed job after a finished run.
                # Everything is written by now (checkpoint, logs); only stdout and stderr may hold buffered text.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)


def train(argv, made_dirs):
    cfg, explicit, ckpt, ckpt_source, resumed = read_config(argv)
    out_dir, resume = cfg['out_dir'], cfg['init_from'] == 'resume'
    ddp, rank, local_rank, world, device = setup_processes(cfg)
    master, device_type = rank == 0, 'cuda' if device.startswith('cuda') else 'cpu'
    dtype = cfg['dtype'] if cfg['dtype'] != 'auto' else ('bfloat16' if device_type == 'cuda' else 'float32')
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if dtype == 'bfloat16' else nullcontext()
    sp_group, sp_rank, dp_rank, dp_world, gas = split_processes(cfg, ddp, rank, world)
    sp = (sp_group, sp_rank, cfg['seq_parallel'])
    tokens_per_iter = gas * dp_world * cfg['batch_size'] * cfg['seq_len']
    seed_everything(cfg['seed'] + rank)
    if master:
        made_dirs.extend(check_out_dir(out_dir))

    train_data, val_data = load_data(cfg, ckpt, master, ddp)
    data_gen = torch.Generator().manual_seed(cfg['seed'] + dp_rank)  # all training-window randomness
    raw_model, threads, how = build_model(cfg, explicit, ckpt, ckpt_source, train_data.meta, device, sp_group,
                                          autocast, world)
    if cfg['dataset'] == 'passkey':  # examples put the answer at every position of a segment, not at one
        from passkey import alignment_period
        every_offset = train_data.offsets = val_data.offsets = alignment_period(raw_model.config)
    optimizer = raw_model.configure_optimizers(cfg['weight_decay'], cfg['learning_rate'], cfg['gate_lr'],
                                               (cfg['beta1'], cfg['beta2']), device_type)
    iter_num, best_val_loss = (ckpt['iter_num'], ckpt['best_val_loss']) if resume else (0, float('inf'))
    if resume:
        restore_training_state(optimizer, ckpt, data_gen, rank, world, cfg['seed'], dp_rank)
    ckpt = None  # free the memory of the loaded state
    eval_model = model = torch.compile(raw_model) if cfg['compile'] else raw_model
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)
    if master:
        describe_run(cfg, raw_model, train_data, resumed, tokens_per_iter, gas, world, device, dtype, threads, how)

    # the training loop ------------------------------------------------------------
    log = Log(out_dir, iter_num) if master else None
    saver = Saver(os.path.join(out_dir, 'ckpt.pt'), raw_model, optimizer, cfg, data_gen,
                  train_data.meta['tokenizer'], world, master, iter_num if resume else None)
    stop = StopRequest(master)
    stop.install()
    pbar = tqdm(total=cfg['max_iters'], initial=iter_num, disable=not master, dynamic_ncols=True, unit='step')
    t_start, running_mfu, val_loss = time.time(), None, None
    try:
        while True:
            last_step = iter_num >= cfg['max_iters']
            if stop.signum is not None:
                saver.save(iter_num, best_val_loss, 'interrupted')
                pbar.close()
                if master:
                    print(f"stopped at step {iter_num}; continue with the same arguments plus --init_from=resume")
                raise SystemExit(128 + stop.signum)

            # evaluate and save (the weights after iter_num steps)
            row = {'iter': iter_num}
            if iter_num % cfg['eval_interval'] == 0 or last_step:
                val_loss = estimate_val_loss(eval_model, val_data, cfg, autocast, device, dp_rank, world, sp)
                row.update(val_loss=val_loss, gates=memory_gates(raw_model))
                if cfg['dataset'] == 'passkey' and iter_num < cfg['passkey_one_offset_iters']:
                    row['val_loss_one_offset'] = val_loss_at_one_offset(eval_model, val_data, cfg, autocast, device,
                                                                        dp_rank, world, sp)
                report_eval(row, saver, master)
                improved, best_val_loss = val_loss < best_val_loss, min(best_val_loss, val_loss)
                if (improved or cfg['always_save_checkpoint'] or last_step) and iter_num > 0:
                    saver.save(iter_num, best_val_loss, 'end of run' if last_step else 'eval')
            if cfg['ckpt_interval'] and iter_num % cfg['ckpt_interval'] == 0 and iter_num > 0:
                saver.save(iter_num, best_val_loss, 'ckpt_interval')
            if last_step:
                if master and 'val_loss' in row:
                    log.write(row)
                break

            # one optimizer step
            if cfg['dataset'] == 'passkey':  # set from the step, so that a resumed run draws the same examples
                train_data.offsets = 1 if iter_num < cfg['passkey_one_offset_iters'] else every_offset
            t_step, lr = time.time(), set_lr(optimizer, iter_num, cfg)
            lossf, stop_asked = train_step(model, optimizer, train_data, data_gen, cfg, gas, autocast, device, sp,
                                           ddp, stop.signum)
            if stop_asked and stop.signum is None:
                stop.signum = signal.SIGTERM  # another process was asked to stop
            if not math.isfinite(lossf):
                saved = saver.last_step is not None
                again = ", resuming from it with --init_from=resume --learning_rate=N" if saved else ""
                raise SystemExit(f"error: training loss is {lossf} at step {iter_num} (lr {lr:.3g}); stopping "
                                 f"without saving. Last good checkpoint: {saver.last_good()}. Try a lower "
                                 f"learning_rate{again}.")

            # progress and logs
            now = time.time()
            tokens_per_sec = tokens_per_iter / (now - t_step)  # the step alone, evals and saves left out
            mfu = raw_model.flops_per_token(cfg['seq_len']) * tokens_per_sec / world / cfg['peak_flops'] \
                if device_type == 'cuda' else None
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
        report_end(log, raw_model, cfg, saver, iter_num, time.time() - t_start, val_loss)
    checkpoint = saver.path if saver.last_step is not None else None
    return {'iter_num': iter_num, 'val_loss': val_loss, 'best_val_loss': best_val_loss, 'checkpoint': checkpoint}


if __name__ == '__main__':
    main()
