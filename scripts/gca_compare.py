"""
Grouped cross-attention (DRT, arXiv:2410.01651) next to local attention and Infini-attention (arXiv:2404.07143) at
the same size and training budget, on CPU in minutes. For each kind it trains configs/tiny_<kind>.py with train.py
(4 layers, n_embd 128, --max_iters steps (300 by default) of 8 x 512 tokens: the same for all three, only the
attention differs), then measures on the checkpoint:

  val_ppl@L   perplexity on the same validation windows of L tokens for every kind (L = seq_len; 8 x seq_len
              where books are that long, i.e. pg19, not the 512-token synthetic documents)
  passkey@L   a key stated at the start of a prompt of L tokens (1x, 8x, 64x seq_len) and asked for at its end;
              the model must produce the digits. Exact = all digits right (teacher-forced argmax, the same as greedy
              decoding when all are right); digit_acc = fraction of digits right (chance 0.1).
              synthetic: the corpus's own format ("key xq7 = 4821." ... filler ... "key xq7 = ")
              pg19:      the usual passkey prompt (Mohtashami & Jaggi 2023, arXiv:2305.16300)
  gca store   bytes the retrieval store holds per token after the longest prompt (the formula is in model.py)

    python data/synthetic/prepare.py --doc_len 512 --out data/gca_synthetic
    python scripts/gca_compare.py --data synthetic --data_dir data/gca_synthetic          # results/gca_synthetic.json
    python data/pg19/prepare.py --input path/to/pg19-mini --tokenizer byte --out data/pg19_byte
    python scripts/gca_compare.py --data pg19 --data_dir data/pg19_byte --max_iters 150   # results/gca_pg19.json

Only these two commands write results/; any other run (another --max_iters, fewer trials, ...) writes its JSON into
--work, or to --out (an existing file is replaced only with --force). Trained checkpoints are kept in --work and
reused when they were trained with the same data, steps and seed; one trained otherwise is refused until --retrain.
Runs one thread (--threads): for models this small a second thread was slower on a shared 2-core CPU (docs/cpu.md).
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from checkpoint import CheckpointError, load_checkpoint, load_model  # noqa: E402
from data.synthetic.prepare import FILLER, LETTERS, fact_line  # noqa: E402
from dataset import TokenData  # noqa: E402
from sample import check_output  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402

KINDS = ('local', 'infini', 'gca')
# The runs that make the tracked results (the commands above); every other option at its default.
RECIPES = {'synthetic': dict(data_dir='data/gca_synthetic', max_iters=300),
           'pg19': dict(data_dir='data/pg19_byte', max_iters=150)}


def reusable(kind, args):
    """Whether --work holds this kind's finished training with these data, steps and seed (an unfinished one is
    trained again); a one-line refusal for one trained otherwise, which --retrain replaces."""
    path = os.path.join(args.work, f"{args.data}-{kind}", 'ckpt.pt')
    if args.retrain or not os.path.exists(path):
        return False
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}; pass --retrain to train it again")
    cfg = ckpt.get('config') or {}
    made = dict(data_dir=cfg.get('data_dir') and os.path.normpath(cfg['data_dir']), max_iters=cfg.get('max_iters'),
                seed=cfg.get('seed'))
    asked = dict(data_dir=os.path.normpath(args.data_dir), max_iters=args.max_iters, seed=args.seed)
    if made != asked:
        raise SystemExit(f"error: {path} was trained with {made}, not {asked}; pass --retrain to replace it, or "
                         f"use another --work")
    return ckpt['iter_num'] >= args.max_iters


def train(kind, args):
    """Train configs/tiny_<kind>.py unless a finished checkpoint of it is already there; returns (ckpt path,
    seconds)."""
    out_dir = os.path.join(args.work, f"{args.data}-{kind}")
    path = os.path.join(out_dir, 'ckpt.pt')
    if reusable(kind, args):
        print(f"{kind}: reusing {path}")
        return path, None
    cmd = [sys.executable, 'train.py', f'configs/tiny_{kind}.py', f'--data_dir={args.data_dir}',
           f'--out_dir={out_dir}', f'--max_iters={args.max_iters}', f'--eval_interval={args.max_iters}',
           '--device=cpu', f'--seed={args.seed}']
    if os.path.exists(path):  # unfinished, or --retrain: this work folder's own checkpoint, trained again
        print(f"{kind}: training again; replaces {path}")
        cmd.append('--overwrite=True')
    print(' '.join(cmd[1:]), flush=True)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(out_dir, 'train.out'), 'w') as log:
        env = {**os.environ, 'OMP_NUM_THREADS': str(args.threads)}
        done = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"error: training {kind} failed; see {os.path.join(out_dir, 'train.out')}")
    return path, time.time() - t0


@torch.no_grad()
def val_ppl(model, data, seq_len, n_windows, seed):
    """exp(mean loss) over the same n_windows validation windows for every model (fixed generator)."""
    x, y = data.sample_batch(n_windows, seq_len, torch.Generator().manual_seed(seed))
    losses = [model(x[i:i + 4], targets=y[i:i + 4])[1].item() * len(x[i:i + 4]) for i in range(0, n_windows, 4)]
    return float(torch.tensor(sum(losses) / n_windows).exp())  # every window weighs the same, the last batch too


# ---------------------------------------------------------------------------------------------
# passkey prompts: (prompt tokens, answer tokens), the prompt exactly `length` - len(answer) tokens long

def filler_tokens(tok, sentences, n, rng):
    out = []
    while len(out) < n:
        out += tok.encode(rng.choice(sentences))
    return out[:n]


def synthetic_prompt(tok, length, rng):
    """The synthetic corpus's format: its facts first, filler, then one fact's key; the answer is its value."""
    keys = []
    while len(keys) < 4:  # as data/synthetic/prepare.py makes them
        key = rng.choice(LETTERS) + rng.choice(LETTERS + "0123456789") + rng.choice(LETTERS + "0123456789")
        if key not in keys:
            keys.append(key)
    values = [f"{rng.randrange(10000):04d}" for _ in keys]
    facts = tok.encode("".join(fact_line(k, v) for k, v in zip(keys, values)))
    i = rng.randrange(4)
    question, answer = tok.encode(f"key {keys[i]} = "), tok.encode(values[i])
    n = length - len(facts) - len(question) - len(answer)
    return facts + filler_tokens(tok, FILLER, n, rng) + question, answer


PASSKEY_FILLER = ["The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "]


def passkey_prompt(tok, length, rng):
    """The usual passkey prompt, the key right after the instruction (the longest distance)."""
    key = f"{rng.randrange(10000, 100000)}"
    head = tok.encode("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                      "I will quiz you about the important information there. "
                      f"The pass key is {key}. Remember it. {key} is the pass key. ")
    question, answer = tok.encode(" What is the pass key? The pass key is "), tok.encode(key)
    n = length - len(head) - len(question) - len(answer)
    return head + filler_tokens(tok, PASSKEY_FILLER, n, rng) + question, answer


@torch.no_grad()
def passkey(model, tok, make_prompt, length, trials, seed, piece=4096):
    """All trials as one batch, fed in pieces of `piece` tokens carrying the state (the streaming path)."""
    rng = random.Random(f"{seed}/{length}")
    prompts = [make_prompt(tok, length, rng) for _ in range(trials)]
    seq = torch.tensor([p + a for p, a in prompts])          # (trials, length)
    answers = torch.tensor([a for _, a in prompts])          # (trials, n_digits)
    x, n_ans = seq[:, :-1], answers.size(1)
    T = x.size(1)
    cuts = list(range(T % piece, T, piece)) if T > piece else []  # the last piece is a whole one
    starts = [0] + [c for c in cuts if c > 0]
    state = None
    for start, end in zip(starts, starts[1:] + [T]):
        logits, _, state = model(x[:, start:end], state=state)
    right = logits[:, -n_ans:].argmax(-1) == answers
    return {'trials': trials, 'exact': right.all(1).float().mean().item(),
            'digit_acc': right.float().mean().item()}, state


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', choices=['synthetic', 'pg19'], required=True)
    ap.add_argument('--data_dir', help="default: data/synthetic or data/pg19")
    ap.add_argument('--kinds', default=','.join(KINDS))
    ap.add_argument('--max_iters', type=int, default=300)
    ap.add_argument('--seq_len', type=int, default=512, help="the configs' seq_len (passkey lengths are multiples)")
    ap.add_argument('--multiples', default='1,8,64', help="passkey lengths, in multiples of seq_len")
    ap.add_argument('--trials', default='32,16,4', help="passkey trials per length, one per multiple")
    ap.add_argument('--val_windows', type=int, default=32)
    ap.add_argument('--work', default=os.path.join(REPO, 'out-gca-compare'), help="checkpoints go here")
    ap.add_argument('--out', help="default: results/gca_<data>.json for the commands above, else in --work")
    ap.add_argument('--force', action='store_true', help="replace an existing --out")
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--seed', type=int, default=1337)
    ap.add_argument('--retrain', action='store_true')
    args = ap.parse_args(argv)
    args.data_dir = args.data_dir or os.path.join('data', args.data)
    kinds = [k.strip() for k in args.kinds.split(',') if k.strip()]
    args.kinds = ','.join(kinds)
    try:
        multiples = [int(m) for m in args.multiples.split(',')]
        trials = [int(t) for t in args.trials.split(',')]
    except ValueError:
        raise SystemExit(f"error: --multiples {args.multiples} and --trials {args.trials} must be comma-separated "
                         f"whole numbers")
    if not kinds or set(kinds) - set(KINDS):
        raise SystemExit(f"error: --kinds {args.kinds!r}: choose from {', '.join(KINDS)} (comma-separated)")
    if len(trials) != len(multiples):
        raise SystemExit(f"error: --trials needs one count per multiple ({len(multiples)}), got {args.trials}")
    for flag, values in (('max_iters', [args.max_iters]), ('seq_len', [args.seq_len]), ('multiples', multiples),
                         ('trials', trials), ('val_windows', [args.val_windows]), ('threads', [args.threads])):
        if min(values) < 1:
            raise SystemExit(f"error: --{flag} {getattr(args, flag)} must be at least 1")

    # Tracked results come only from the commands above; any other run (a smoke test) writes into its work folder.
    recipe = {**{k: ap.get_default(k) for k in ('kinds', 'seq_len', 'multiples', 'trials', 'val_windows', 'seed')},
              **RECIPES[args.data]}
    departures = [f"--{k} {getattr(args, k)}" for k, v in recipe.items()
                  if (os.path.normpath(getattr(args, k)) if k == 'data_dir' else getattr(args, k)) != v]
    where = os.path.join(args.work, f'gca_{args.data}.json') if departures else \
        os.path.join(REPO, 'results', f'gca_{args.data}.json')
    out = args.out or where
    os.makedirs(args.work, exist_ok=True)
    check_output(out, '--out', replace=args.force or args.out is None)  # before the training, not after
    if departures:
        print(f"not the recipe of results/gca_{args.data}.json ({' '.join(departures)}): the report goes to {out}")
    for kind in kinds:  # a checkpoint trained otherwise is refused before any training starts
        reusable(kind, args)
    torch.set_num_threads(args.threads)

    val = TokenData(args.data_dir, 'validation')
    tok = get_tokenizer(val.meta['tokenizer'])
    make_prompt = synthetic_prompt if args.data == 'synthetic' else passkey_prompt
    long_ppl = args.data == 'pg19'  # synthetic documents are seq_len long: a longer window only spans documents
    long_windows = max(1, args.val_windows // 4)  # 8x longer windows: a quarter as many (at least one)
    argv = sys.argv[1:] if argv is None else argv
    results = {'data': args.data, 'data_dir': args.data_dir, 'tokenizer': tok.name, 'max_iters': args.max_iters,
               'seq_len': args.seq_len, 'command': ' '.join(['python', 'scripts/gca_compare.py'] + argv),
               'threads': args.threads, 'val_windows': {f'val_ppl@{args.seq_len}': args.val_windows}, 'kinds': {}}
    if long_ppl:
        results['val_windows'][f'val_ppl@{8 * args.seq_len}'] = long_windows
    for kind in kinds:
        path, seconds = train(kind, args)
        model, ckpt = load_model(path, 'cpu')
        model.eval()
        r = {'checkpoint': os.path.relpath(path, REPO), 'params': model.num_params(), 'train_seconds': seconds,
             'train_final_val_loss': ckpt.get('best_val_loss'),
             'model_args': {k: v for k, v in ckpt['model_args'].items() if not k.startswith('dilated')}}
        t0 = time.time()
        r[f'val_ppl@{args.seq_len}'] = val_ppl(model, val, args.seq_len, args.val_windows, args.seed)
        if long_ppl:
            r[f'val_ppl@{8 * args.seq_len}'] = val_ppl(model, val, 8 * args.seq_len, long_windows, args.seed)
        for m, n in zip(multiples, trials):
            L = m * args.seq_len
            r[f'passkey@{L}'], state = passkey(model, tok, make_prompt, L, n, args.seed)
            if kind == 'gca':  # the store after L tokens of n prompts
                store, c = state[-1], model.config
                per_token = store.nbytes() / (n * L)
                r[f'store@{L}'] = {'bytes': store.nbytes(), 'bytes_per_token': per_token,
                                   'bytes_per_token_per_upper_layer': per_token / (c.n_layer - c.gca_lower_layers),
                                   'full_attention_kv_bytes_per_token_per_layer': 2 * c.n_embd * 4}
        r['eval_seconds'] = time.time() - t0
        results['kinds'][kind] = r
        print(kind, json.dumps({k: v for k, v in r.items() if k != 'model_args'}), flush=True)
    with open(out + '.tmp', 'w') as f:
        json.dump(results, f, indent=1)
    os.replace(out + '.tmp', out)
    print(f"wrote {out}")


if __name__ == '__main__':
    main()
