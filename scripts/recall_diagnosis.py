"""
Why does recall fall with length? For an Infini-attention checkpoint and passkey prompts of growing length, the share
of each memory head's read-out that comes from the key line: at the position that predicts the answer's first digit,

    share = Σ_{j in key line} σ(q)·σ(k_j)  /  σ(q)·z,     z = Σ_{all j in memory} σ(k_j)      (Infini eq. 3)

(σ: the checkpoint's mem_feature, ELU + 1 as in the paper or ReLU.)

The read-out σ(q)M / σ(q)z is a weighted mean of the stored values, so the key's value reaches the output with
weight `share`; the filler's weight grows with its length unless σ(q)·σ(k_filler) is ~0.

    python scripts/recall_diagnosis.py --ckpt out-recall-infini/ckpt.pt --lens 288,2304,18432
"""
import argparse
import os
import random
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checkpoint import load_model  # noqa: E402
from model import sigma  # noqa: E402
from passkey import MAX_KEY, Pieces, build_prompt  # noqa: E402
from sample import parse_size  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402


@torch.no_grad()
def memory_shares(model, prompt):
    """[(layer, head, share of the key line, filler weight per token)] at the prompt's last position."""
    S = model.config.segment_len
    ids = torch.from_numpy(prompt.ids)[None]
    in_memory = (len(prompt.ids) - 1) // S * S  # the complete segments before the question's segment
    key_line = torch.zeros(in_memory, dtype=torch.bool)
    key_line[prompt.key_start:min(prompt.key_end, in_memory)] = True
    x, rows, feature = model.wte(ids), [], model.config.mem_feature
    for layer, block in enumerate(model.blocks):
        h = block.ln_1(x)
        q, k, _ = block.attn.c_attn(h).view(1, -1, 3, model.config.n_head, model.config.head_size).unbind(2)
        weights = (sigma(k[0, :in_memory].double(), feature) * sigma(q[0, -1].double(), feature)).sum(-1)
        total = weights.sum(0).clamp_min(1e-300)  # (heads,) 0 only with ReLU and no overlap: the head reads 0
        filler = weights[~key_line].sum(0) / max(1, int((~key_line).sum()))
        for head in range(model.config.n_head):
            rows.append((layer, head, (weights[key_line, head].sum() / total[head]).item(), filler[head].item()))
        x, _ = block(x)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--ckpt', required=True)
    p.add_argument('--lens', default='288,2304,18432')
    p.add_argument('--trials', type=int, default=10)
    p.add_argument('--seed', type=int, default=1337)
    args = p.parse_args(argv)
    model, ckpt = load_model(args.ckpt)
    if model.config.attn != 'infini':
        raise SystemExit(f"error: {args.ckpt} is attn={model.config.attn!r}; the diagnosis reads Infini memory")
    pieces, rng = Pieces(get_tokenizer(ckpt['tokenizer'])), random.Random(args.seed)
    gates = [torch.sigmoid(b.attn.gate).tolist() for b in model.blocks]
    print("length  layer head  gate  key-line share of the memory read  filler weight per token")
    for length in (parse_size(s) for s in args.lens.split(',')):
        rows = np.array([memory_shares(model, build_prompt(pieces, length, 0.0, rng.randint(1, MAX_KEY)))
                         for _ in range(args.trials)])  # (trials, layer x head, 4)
        for (layer, head, share, filler) in rows.mean(0):
            layer, head = int(layer), int(head)
            print(f"{length:>7,}   L{layer + 1}    H{head}  {gates[layer][head]:.2f}  {100 * share:10.2f}%"
                  f"                      {filler:.3g}")


if __name__ == '__main__':
    main()
