"""
Can a dilated model read the pass key at all? In LongNet's dilated attention a query sees a key only when some pattern
(w, r) covers both: the same segment of w tokens and the same offset mod r. A key that no pattern covers can still be
read through a position in between, one layer per hop, so what a model of L layers can read is the L-step closure of
that coverage. This counts, for passkey prompts (passkey.py) of each length, how often every digit of the answer can
reach one of the key line's two copies of that digit within 1, 2, ... layers: the most a model of that depth could
recall, whatever it learns. (Full attention: every digit in one layer.)

    python scripts/dilated_reach.py --segments 32,128,512,4096 --rates 1,4,16,128 --lens 288,2304

With --ckpt (a dilated checkpoint; its patterns replace --segments/--rates) it also asks what the model does: its
teacher-forced accuracy on the digits that one layer can read directly (a pattern covers the answer's position and
the digit), on those it can read only through a position in between, and on those beyond its layers' reach.
Byte tokens only (one token per digit). Each length costs T x T memory and T^3 work: up to 16,384 tokens.
"""
import argparse
import os
import random
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checkpoint import load_model  # noqa: E402
from model import GPTConfig  # noqa: E402
from passkey import MAX_KEY, Pieces, build_prompt, lengths_to_spread  # noqa: E402
from sample import parse_size  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402


MAX_LEN = 16384


def coverage(T, segments, rates):
    """(T, T) bool: row i may attend to column j in one layer, as model.DilatedAttention of a T-token call: j <= i,
    and for some pattern the same segment (w clipped to T) and the same offset mod r inside it (every offset is some
    head's, model.head_offsets)."""
    i, j = np.arange(T)[:, None], np.arange(T)[None]
    covered = np.zeros((T, T), dtype=bool)
    for w, r in zip(segments, rates):
        w = min(w, T)
        covered |= (j <= i) & (i // w == j // w) & (i % r == j % r)  # same segment: same offset iff same i mod r
    return covered


def reach(covered, layers):
    """[reach after 1 layer, after 2, ...]: row i reaches column j through that many hops of `covered` (a position
    always sees itself, so fewer hops count too). Boolean products done as float32 matmuls: exact while T < 2^24."""
    one = torch.from_numpy(covered).float()
    steps, now = [covered], one
    for _ in range(layers - 1):
        now = ((now @ one) > 0).float()
        steps.append(now.numpy() > 0)
    return steps


def digit_targets(pieces, prompt):
    """(position predicting each digit, the two positions in the key line that hold that digit) for the answer's
    digits (its first token, the space, needs no key)."""
    key_line = (prompt.key_start + pieces.key_first(prompt.key), prompt.key_start + pieces.key_last(prompt.key))
    return [(len(prompt.ids) - 1 + a, [start + a for start in key_line]) for a in range(1, len(prompt.answer))]


def random_prompts(pieces, length, trials, seed, spread=1):
    """`trials` passkey prompts, each with a random key at a random depth and, as passkey.py asks them, a random
    0..spread-1 tokens shorter than `length` (readable() spreads them over the densest segment, w_0)."""
    rng = random.Random(seed)
    spread = lengths_to_spread(pieces, length, spread)
    for _ in range(trials):
        key = rng.randint(1, MAX_KEY)
        yield build_prompt(pieces, length - rng.randrange(spread), rng.random(), key)


def readable(pieces, length, segments, rates, layers, trials, seed):
    """For each depth 1..layers: the share of prompts (random key and depth) whose every digit is reachable."""
    reaches, counts = {}, np.zeros(layers)
    for prompt in random_prompts(pieces, length, trials, seed, spread=segments[0]):
        T = len(prompt.ids) + len(prompt.answer)
        if T not in reaches:  # up to segments[0] prompt lengths, times the answer's few lengths
            reaches[T] = reach(coverage(T, segments, rates), layers)
        for depth, R in enumerate(reaches[T]):
            counts[depth] += all(R[p, targets].any() for p, targets in digit_targets(pieces, prompt))
    return counts / trials


ROUTES = ('readable in one layer', 'only through a position in between', 'beyond its layers')


@torch.no_grad()
def accuracy_by_route(model, pieces, length, trials, seed):
    """{route: [right, digits]}: the model's teacher-forced argmax on each answer digit, by how its patterns let the
    digit's position reach a copy of that digit in the key line: in one layer, only in two or more (up to its depth),
    or not at all (ROUTES)."""
    c, counts = model.config, {route: [0, 0] for route in ROUTES}
    for prompt in random_prompts(pieces, length, trials, seed, spread=c.dilated_segments[0]):
        ids = np.concatenate((prompt.ids, prompt.answer))
        steps = reach(coverage(len(ids), c.dilated_segments, c.dilated_rates), c.n_layer)
        predicted = model(torch.from_numpy(ids)[None])[0][0].argmax(-1).numpy()
        for p, targets in digit_targets(pieces, prompt):
            route = ROUTES[0] if steps[0][p, targets].any() else ROUTES[1] if steps[-1][p, targets].any() else ROUTES[2]
            counts[route][0] += int(predicted[p] == ids[p + 1])
            counts[route][1] += 1
    return counts


def parse_ints(text):
    try:
        return tuple(int(v) for v in text.split(',') if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use comma-separated integers like 1,4,16")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--segments', type=parse_ints, default=(32, 128, 512, 4096), help='dilated_segments w')
    p.add_argument('--rates', type=parse_ints, default=(1, 4, 16, 128), help='dilated_rates r')
    p.add_argument('--lens', default='288,2304', help='prompt lengths, comma-separated (each costs T x T x T)')
    p.add_argument('--layers', type=int, default=3, help='report depths 1..layers')
    p.add_argument('--trials', type=int, default=100, help='random prompts per length')
    p.add_argument('--ckpt', default=None, help='a dilated checkpoint: its patterns, and its accuracy by coverage')
    p.add_argument('--seed', type=int, default=1337)
    args = p.parse_args(argv)
    model = None
    if args.ckpt:
        model, ckpt = load_model(args.ckpt)
        if model.config.attn != 'dilated':
            raise SystemExit(f"error: {args.ckpt} is attn={model.config.attn!r}, not a dilated model")
        if ckpt['tokenizer'] != 'byte':
            raise SystemExit(f"error: {args.ckpt} uses the {ckpt['tokenizer']} tokenizer; this counts byte tokens "
                             f"(one per digit)")
        args.segments, args.rates = model.config.dilated_segments, model.config.dilated_rates
    try:  # the patterns are checked as the model checks them
        GPTConfig(attn='dilated', dilated_segments=args.segments, dilated_rates=args.rates)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if args.layers < 1 or args.trials < 1:
        raise SystemExit("error: --layers and --trials must be at least 1")
    try:
        lengths = [parse_size(s) for s in args.lens.split(',') if s.strip()]
    except argparse.ArgumentTypeError as e:
        raise SystemExit(f"error: --lens: {e}")
    if not lengths or max(lengths) > MAX_LEN:
        raise SystemExit(f"error: --lens {args.lens}: give lengths up to {MAX_LEN:,} (each costs T x T memory)")
    pieces = Pieces(get_tokenizer('byte'))
    print(f"segments {args.segments}, rates {args.rates}: prompts whose every answer digit can reach the key, "
          f"% of {args.trials}")
    print(f"{'length':>9}" + ''.join(f"{f'{L} layer' + 's' * (L > 1):>11}" for L in range(1, args.layers + 1)))
    for length in lengths:
        shares = readable(pieces, length, args.segments, args.rates, args.layers, args.trials, args.seed)
        print(f"{length:>9,}" + ''.join(f"{100 * s:>11.0f}" for s in shares))
    for length in lengths if model is not None else ():
        counts = accuracy_by_route(model, pieces, length, args.trials, args.seed)
        print(f"{args.ckpt} at {length:,} tokens, teacher-forced digit accuracy: " + '; '.join(
            f"{route} {right}/{n} ({100 * right / max(n, 1):.0f}%)" for route, (right, n) in counts.items()))


if __name__ == '__main__':
    main()
