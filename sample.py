"""
Sample from a trained model, as nanoGPT's sample.py, for models whose prompt may be far longer than one call.

    python sample.py --ckpt out-quickstart/ckpt.pt --start "The pass key is" --max_new_tokens 100
    python sample.py --ckpt out-pg19-infini/ckpt.pt --start FILE:book.txt --num_samples 3 --top_k 50

The prompt is streamed through the model `--chunk` tokens per call, carrying model.py's state (Infini memory,
the KV cache of the unfinished segment or window, full attention's growing cache, GCA's chunk store), then tokens
are generated one at a time with the same state: the segment's KV cache grows by one token per step, and when a
segment fills up its keys and values are folded into the memory (model.py does this at segment boundaries by
itself). The result is exactly what one forward pass over prompt + generated text would give (tests/test_sample.py).

The helpers here (load, stream, generate, the --threads choice, checked report and plot writing, ...) are also
used by passkey.py, eval_ppl.py, train.py, bench.py and scripts/.
"""

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from contextlib import nullcontext

import torch

# -----------------------------------------------------------------------------
# shared by sample.py, passkey.py and eval_ppl.py

FULL_MAX_LEN = 131072  # full attention beyond this: hours of O(len²) attention, and model.py re-concatenates
#                        the whole KV cache on every call, O(len²/chunk) bytes copied


def parse_size(text):
    """'32768', '32K', '1M' -> int (K = 1024). For --len, --chunk."""
    t = str(text).strip().upper()
    scale = {'K': 1024, 'M': 1024 ** 2}.get(t[-1:], 1)
    try:
        value = int(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a token count (e.g. 32768, 32K, 1M)")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def add_common_args(p):
    p.add_argument('--ckpt', required=True, help='checkpoint written by train.py (out_dir/ckpt.pt)')
    p.add_argument('--device', default='auto', help="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1'")
    p.add_argument('--dtype', default='auto', choices=('auto', 'float32', 'bfloat16'),
                   help="'auto': bfloat16 autocast on cuda, float32 on cpu")
    p.add_argument('--chunk', type=parse_size, default=None,
                   help='tokens per model call while streaming (default: 8 segments on cpu, more on cuda)')
    p.add_argument('--threads', type=int, default=0,
                   help="CPU threads for torch (0: time 1 thread against torch's default, keep the faster)")


def pick_device(name):
    device = name if name != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {device} but torch sees no CUDA GPU; use --device cpu")
    return device


def autocast_for(device, dtype):
    """bf16 autocast on a GPU (the model keeps Infini memory in fp32 regardless); plain fp32 on a CPU."""
    dtype = dtype if dtype != 'auto' else ('bfloat16' if device.startswith('cuda') else 'float32')
    if dtype == 'bfloat16':
        return torch.autocast('cuda' if device.startswith('cuda') else 'cpu', dtype=torch.bfloat16), 2
    return nullcontext(), 4


def cpu_cores():
    """The CPU cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def too_many_threads(threads):
    """A one-line reason when `threads` is more than the cores (threads that wait on each other: 30-50x slower
    measured with 999 on 2 cores), else None."""
    cores = cpu_cores()
    if threads > cores:
        return f"threads={threads} is more than the {cores} CPU cores this process may use; use 1 to {cores} or 0 to measure"
    return None


def measure_threads(time_passes, most, what):
    """'auto' threads: time `what` on 1 thread and on `most` (torch's default: all cores, or what OMP_NUM_THREADS
    allows) and keep `most` only if it is clearly (10%) faster. Neither is right everywhere: a tiny model on idle
    cores gains from a second thread, but when other jobs hold the cores torch's threads wait on each other and a
    pass can take 10x longer (docs/cpu.md). time_passes(threads, passes, give_up) -> seconds of each pass, stopping
    after one slower than give_up. Returns (threads, how they were chosen) and sets them."""
    first = time_passes(1, 1)[0]  # also the warm-up (allocations, first-call costs)
    repeats = 2 if first < 2.0 else 1  # a big model's pass is long enough to time once
    one = sum(time_passes(1, repeats)) / repeats
    # the first pass on `most` threads starts them (untimed); on a busy machine it can take 10x longer than one
    # thread's, and then the rest is not worth waiting for
    passes = time_passes(most, 1 + repeats, give_up=2 * one)
    many = sum(passes[1:]) / (len(passes) - 1) if len(passes) > 1 else passes[0]
    best = most if many < 0.9 * one else 1
    torch.set_num_threads(best)
    return best, f"auto: a {what} took {one:.2f} s on 1 thread, {many:.2f} s on {most}"


def set_threads(threads, model, device, chunk):
    """--threads: a number, or 0 to measure a forward pass of `chunk` tokens on 1 thread and on torch's default
    (measure_threads). Returns the count in use."""
    if threads < 0:
        raise SystemExit(f"error: --threads {threads} must be >= 0 (0: measure)")
    if too_many_threads(threads):
        raise SystemExit(f"error: {too_many_threads(threads)}")
    if threads:
        torch.set_num_threads(threads)
    elif device == 'cpu' and torch.get_num_threads() > 1:
        x = torch.randint(model.config.vocab_size, (1, chunk), generator=torch.Generator().manual_seed(0))

        @torch.no_grad()
        def time_passes(threads, passes, give_up=float('inf')):
            torch.set_num_threads(threads)
            seconds = []
            while len(seconds) < passes and (not seconds or seconds[-1] <= give_up):
                t0 = time.perf_counter()
                model(x)
                seconds.append(time.perf_counter() - t0)
            return seconds

        measure_threads(time_passes, torch.get_num_threads(), f"forward pass of {chunk} tokens")
    return torch.get_num_threads()


def describe_device(device):
    threads = torch.get_num_threads()
    return f"{device} ({threads} thread{'s' if threads > 1 else ''})" if device == 'cpu' else device


def load(path, device):
    """(model in eval mode, tokenizer, checkpoint) from a train.py checkpoint; every problem is one line."""
    from checkpoint import CheckpointError, load_model
    from tokenizer import get_tokenizer
    try:
        model, ckpt = load_model(path, device)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}")
    name = ckpt.get('tokenizer')
    try:
        tokenizer = get_tokenizer(name)
    except ValueError as e:
        raise SystemExit(f"error: checkpoint {path}: {e}")
    if model.config.vocab_size < tokenizer.vocab_size:
        raise SystemExit(f"error: checkpoint {path} has vocab_size {model.config.vocab_size}, fewer than its "
                         f"{name} tokenizer's {tokenizer.vocab_size}")
    # keep only what the scripts read; the optimizer state can be twice the model's size
    ckpt = {k: ckpt[k] for k in ('model_args', 'tokenizer', 'iter_num', 'config') if k in ckpt}
    return model, tokenizer, ckpt


def stream_unit(config):
    """The call granularity that keeps streaming cheap: a segment (local, infini), the window lcm(w_i)
    (dilated: its state is the keys/values since the last window boundary, recomputed on every call)."""
    if config.attn == 'dilated':
        return math.lcm(*config.dilated_segments)
    if config.attn == 'gca':
        return config.gca_window
    return config.segment_len


def default_chunk(config, device, segments=8):
    """Tokens per call: `segments` segments on a CPU, 4x that on a GPU (dilated: its smallest segment, rounded
    up to its window; gca: its sliding window). Measured on 2 CPU cores with the tiny Infini model: 1024-token
    calls (8 segments) ran at 21K tok/s, 16K-token calls at 14K (their activations fall out of cache)."""
    n = segments * (4 if device.startswith('cuda') else 1)
    base = config.dilated_segments[0] if config.attn == 'dilated' else stream_unit(config)
    return round_chunk(config, n * base)


def round_chunk(config, chunk):
    """dilated: a multiple of the window, so every call starts on a window boundary with an empty cache."""
    if config.attn != 'dilated':
        return max(1, chunk)
    window = stream_unit(config)
    return window * max(1, -(-chunk // window))


def available_memory(device):
    if device.startswith('cuda'):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_AVPHYS_PAGES')


def state_bytes_per_token(config, dtype_bytes):
    """Bytes of state each token adds for the kinds whose state grows with the input (else 0):
    full keeps keys and values in every layer; gca keeps every chunk's K/V once plus two retrieval vectors per
    chunk (model.ChunkStore). Infini, local and dilated keep a fixed-size state."""
    if config.attn == 'full':
        return 2 * config.n_layer * config.n_embd * dtype_bytes
    if config.attn == 'gca':
        return (2 + 2 / config.gca_chunk) * config.n_embd * dtype_bytes
    return 0


def plan_chunk(config, length, chunk, device, dtype_bytes):
    """The tokens per call to stream `length` tokens with, after refusing, in one line, a length whose growing
    state (full: KV cache, gca: chunk store) cannot fit. full attends each call's queries to the whole cache
    with an explicit mask, materialised on a CPU (measured: a 1024-token call at 32K used ~600 MB): its calls
    are shortened to keep that transient under ~1 GiB."""
    chunk = round_chunk(config, chunk)
    per_token = state_bytes_per_token(config, dtype_bytes)
    if per_token == 0:
        return chunk
    transient = 0
    if config.attn == 'full':
        per_query = length * (1 + 4 * config.n_head)  # bool mask + fp32 scores per head
        chunk = max(1, min(chunk, (1 << 30) // per_query))
        transient = chunk * per_query
    available = available_memory(device)
    fits = max(0, int(0.8 * available - transient)) // int(per_token)
    cap = FULL_MAX_LEN if config.attn == 'full' else None
    if (cap and length > cap) or length * per_token + transient > 0.8 * available:
        what = 'a KV cache of every token' if config.attn == 'full' else 'a chunk store that grows with the input'
        limit = min(cap, fits) if cap else fits
        raise SystemExit(
            f"error: attn={config.attn!r} keeps {what}: {length:,} tokens need {length * per_token / 2**30:.2f} GiB "
            f"({per_token:.0f} bytes/token) and {device} has {available / 2**30:.1f} GiB available; it runs up to "
            f"{limit:,} tokens here{f' (capped at {cap:,}: its cost grows with len²)' if cap else ''}. Use a "
            f"shorter length, or an infini/local/dilated checkpoint (fixed-size state)")
    return chunk


def peak_memory(device):
    """(bytes, what): torch's peak allocation on a GPU, the process's peak resident set size on a CPU."""
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated(torch.device(device)), 'cuda max_memory_allocated'
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'peak RSS (ru_maxrss)'  # Linux: KiB


@torch.inference_mode()
def stream(model, ids, chunk, state=None, last_logits=1, autocast=None):
    """Feed ids (int64, any device: (n,) one sequence, or (B, n) a batch of equally long ones) through the model
    `chunk` tokens per call, carrying state. Returns (float32 logits of the last `last_logits` positions, (k, V)
    or (B, k, V); state). Only those positions go through the LM head (last_logits=0 for every other call), so
    no call holds more than one chunk of activations: memory stays flat however long ids is."""
    device = next(model.parameters()).device
    batch = ids if ids.dim() == 2 else ids[None]
    n, pieces = batch.size(1), []
    for start in range(0, n, chunk):
        x = batch[:, start:start + chunk].to(device)
        end = start + x.size(1)
        k = min(x.size(1), max(0, last_logits - (n - end)))  # how many of this call's positions are wanted
        with autocast or nullcontext():
            logits, _, state = model(x, state=state, last_logits=k)
        if k:
            pieces.append(logits.float())
    logits = torch.cat(pieces, 1) if pieces else torch.empty(len(batch), 0, model.config.vocab_size, device=device)
    return (logits if ids.dim() == 2 else logits[0]), state


def pick_token(logits, temperature, top_k, generator):
    """nanoGPT's sampling: logits / temperature, keep the top_k, sample; temperature 0 = greedy."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        v = torch.topk(logits, top_k).values
        logits = logits.masked_fill(logits < v[-1], float('-inf'))
    probs = torch.softmax(logits.float().cpu(), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def generate(model, logits, state, max_new_tokens, vocab_size, temperature=1.0, top_k=None, generator=None,
             autocast=None):
    """Continue from `logits` (V,), the prediction after the prompt, and `state`, the model state after it; or
    from (B, V) and the state of B prompts streamed side by side. One token per call; the state is never modified
    in place, so one prompt state serves many samples. Returns (new token ids: a list, or B lists; the logits each
    token was drawn from: (V,) or (B, V) per token)."""
    device = next(model.parameters()).device
    batch = logits if logits.dim() == 2 else logits[None]
    tokens, drawn_from = [], []
    for i in range(max_new_tokens):
        batch = batch[:, :vocab_size]  # the padded rows of the vocabulary are no tokens
        drawn_from.append(batch if logits.dim() == 2 else batch[0])
        tokens.append([pick_token(row, temperature, top_k, generator) for row in batch])
        if i + 1 < max_new_tokens:
            batch, state = stream(model, torch.tensor(tokens[-1], device=device)[:, None], 1, state, 1, autocast)
            batch = batch[:, -1]
    per_prompt = [list(t) for t in zip(*tokens)] if tokens else [[] for _ in batch]
    return (per_prompt if logits.dim() == 2 else per_prompt[0]), drawn_from


def pyplot(what, numbers='the table above and in --json', file=None):
    """matplotlib.pyplot drawing to files, or None after one warning: matplotlib is optional."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"warning: matplotlib is not installed, so no {what} was drawn (pip install matplotlib); "
              f"the numbers are in {numbers}", file=file or sys.stderr)  # looked up now: tests capture it
        return None
    return plt


def save_figure(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def check_output(path, flag, replace=True):
    """Refuse in one line, before any work is done, an output path the report could not be written to at the end
    (the results would be lost): a folder, a missing folder, no permission to write; with replace=False also a file
    that exists. Says when an existing file will be replaced."""
    if not path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or path.endswith(os.sep):
        raise SystemExit(f"error: {flag} {path} is a folder; give a file name, e.g. {os.path.join(path, 'out.json')}")
    if not os.path.isdir(parent):
        raise SystemExit(f"error: {flag} {path}: the folder {parent} does not exist; create it or choose another path")
    try:  # a real write: permissions, read-only file systems and root all answer truthfully
        with tempfile.NamedTemporaryFile(dir=parent, prefix='.write_test'):
            pass
    except OSError as e:
        raise SystemExit(f"error: {flag} {path}: cannot write to {parent} ({e.strerror or e}); choose another path")
    if os.path.exists(path):
        if not replace:
            raise SystemExit(f"error: {flag} {path} exists; pass --force to replace it, or choose another path")
        if not os.access(path, os.W_OK):
            raise SystemExit(f"error: {flag} {path} exists and is read-only; choose another path")
        print(f"note: {flag} {path} exists and will be replaced at the end of the run")


def save_report(report, json_path, plot_path, draw):
    """--json and --plot of passkey.py and eval_ppl.py (checked before the run by check_output): the report as JSON,
    written whole or not at all; draw(plot_path) returns the path it wrote, or None (no matplotlib)."""
    if json_path:
        with open(json_path + '.tmp', 'w') as f:
            json.dump(report, f, indent=1)
        os.replace(json_path + '.tmp', json_path)  # a kill mid-write leaves the previous file intact
        print(f"wrote {json_path}")
    if plot_path and draw(plot_path):
        print(f"wrote {plot_path}")


def plot_losses(rows, path, title):
    """train.py's loss.png: training and val loss against step, and each Infini head's memory share sigmoid(β)
    when the rows have gates. matplotlib is optional: without it, one warning, no plot."""
    plt = pyplot('loss plot', 'log.csv', file=sys.stdout)
    if plt is None:
        return None
    train = [(r['iter'], r['loss']) for r in rows if r.get('loss') is not None]
    val = [(r['iter'], r['val_loss']) for r in rows if r.get('val_loss') is not None]
    gates = [(r['iter'], r['gates']) for r in rows if r.get('gates')]
    fig, axes = plt.subplots(1, 2 if gates else 1, figsize=(14 if gates else 8, 5), squeeze=False)
    ax = axes[0, 0]
    if gates:
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
    ax.set(xlabel='step', ylabel='loss (nats/token)', title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(plt, fig, path)


# -----------------------------------------------------------------------------
# sample.py itself

def read_start(start):
    if start.startswith('FILE:'):
        path = start[5:]
        try:
            with open(path, encoding='utf-8') as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"error: cannot read the prompt file {path}: {getattr(e, 'strerror', None) or e}")
    return start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    add_common_args(p)
    p.add_argument('--start', default='\n', help="the prompt: text, or FILE:path to read it from a file")
    p.add_argument('--num_samples', type=int, default=3)
    p.add_argument('--max_new_tokens', type=int, default=200)
    p.add_argument('--temperature', type=float, default=0.8, help='1.0: as trained; lower: safer; 0: greedy')
    p.add_argument('--top_k', type=int, default=200, help='keep only the top_k most likely tokens (0: all)')
    p.add_argument('--seed', type=int, default=1337)
    args = p.parse_args(argv)
    for name, low in (('num_samples', 1), ('max_new_tokens', 1), ('top_k', 0)):
        if getattr(args, name) < low:
            raise SystemExit(f"error: --{name} {getattr(args, name)} must be at least {low}")
    if not args.temperature >= 0:
        raise SystemExit(f"error: --temperature {args.temperature} must be >= 0 (0 = greedy)")

    device = pick_device(args.device)
    model, tokenizer, ckpt = load(args.ckpt, device)
    autocast, dtype_bytes = autocast_for(device, args.dtype)
    text = read_start(args.start)
    ids = tokenizer.encode(text) or [tokenizer.eot]  # an empty prompt starts like a new document
    ids = torch.tensor(ids, dtype=torch.long)
    chunk = plan_chunk(model.config, len(ids) + args.max_new_tokens, args.chunk or default_chunk(model.config, device),
                       device, dtype_bytes)
    set_threads(args.threads, model, device, chunk)

    t0 = time.time()
    logits, state = stream(model, ids, chunk, last_logits=1, autocast=autocast)
    prompt_s = time.time() - t0
    print(f"prompt: {len(ids):,} tokens streamed in {prompt_s:.2f} s ({len(ids) / max(prompt_s, 1e-9):,.0f} tok/s, "
          f"{chunk} per call, attn={model.config.attn}, {describe_device(device)})", file=sys.stderr)
    generator = torch.Generator().manual_seed(args.seed)
    top_k = args.top_k or None
    for _ in range(args.num_samples):
        tokens, _ = generate(model, logits[-1], state, args.max_new_tokens, tokenizer.vocab_size,
                             args.temperature, top_k, generator, autocast)
        print(tokenizer.decode(tokens))
        print('---------------')
    bytes_, what = peak_memory(device)
    print(f"peak memory: {bytes_ / 2**20:,.0f} MiB ({what})", file=sys.stderr)


if __name__ == '__main__':
    main()
