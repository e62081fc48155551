"""
Sample from a trained model, as nanoGPT's sample.py, for models whose prompt may be far longer than one call.

    python sample.py --ckpt out-quickstart/ckpt.pt --start "The pass key is" --max_new_tokens 100
    python sample.py --ckpt out-pg19-infini/ckpt.pt --start FILE:book.txt --num_samples 3 --top_k 50

The prompt is streamed through the model `--chunk` tokens per call, carrying model.py's state (Infini memory,
the KV cache of the unfinished segment, or full attention's growing cache), then tokens are generated one
at a time with the same state: the segment's KV cache grows by one token per step, and when a segment fills
up its keys and values are folded into the memory (model.py does this at segment boundaries by itself). The
result is exactly what one forward pass over prompt + generated text would give (tests/test_sample.py).

The helpers here (load, stream, generate, ...) are also used by passkey.py and eval_ppl.py.
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
                   help='CPU threads for torch (0: 1 for models with n_embd <= 256, else torch\'s default)')


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


def set_threads(threads, config, device):
    """Tiny models lose from a second thread: their matmuls are too small to split, and on a busy machine
    torch's worker threads wait on each other. Measured on 2 shared cores with the 4-layer n_embd-128 model:
    streaming 1024-token calls ran at 24K tok/s on 1 thread, 4K on 2; eval_ppl at 10.5K vs 286 tok/s.
    Bigger models keep torch's default unless --threads says otherwise."""
    if threads < 0:
        raise SystemExit(f"error: --threads {threads} must be >= 0 (0: automatic)")
    if threads == 0 and device == 'cpu' and config.n_embd <= 256:
        threads = 1
    if threads:
        torch.set_num_threads(threads)
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


def pyplot(what):
    """matplotlib.pyplot drawing to files, or None after one warning: matplotlib is optional."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"warning: matplotlib is not installed, so no {what} was drawn (pip install matplotlib); "
              "the numbers are in the table above and in --json", file=sys.stderr)
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
    set_threads(args.threads, model.config, device)
    autocast, dtype_bytes = autocast_for(device, args.dtype)
    text = read_start(args.start)
    ids = tokenizer.encode(text) or [tokenizer.eot]  # an empty prompt starts like a new document
    ids = torch.tensor(ids, dtype=torch.long)
    chunk = plan_chunk(model.config, len(ids) + args.max_new_tokens, args.chunk or default_chunk(model.config, device),
                       device, dtype_bytes)

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
