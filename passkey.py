"""
Passkey retrieval: find a 1-5 digit number hidden at some depth of up to a million tokens of filler text.

The task of Mohtashami & Jaggi, "Landmark Attention: Random-Access Infinite Context Length for Transformers"
(arXiv:2305.16300), as "Leave No Context Behind: Efficient Infinite Context Transformers with Infini-attention"
(Munkhdalai et al., arXiv:2404.07143) gives it in its Appendix B and uses it in Table 3:

    There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz
    you about the important information there. The grass is green. The sky is blue. The sun is yellow. Here we
    go. There and back again. (... repeated ...) The pass key is 9054. Remember it. 9054 is the pass key.
    The grass is green. (... repeated ...) What is the pass key? The pass key is

    python passkey.py --ckpt out-quickstart/ckpt.pt --len 1M                 # start, middle and end
    python passkey.py --ckpt out-pg19-infini/ckpt.pt --lens 32K,128K,256K,512K,1M --trials 10 --json pk.json

Two scores per length x depth (both over --trials random keys 1..50000, as Landmark's test):
- exact match: the greedy continuation's first number equals the key;
- token accuracy: teacher-forced, the fraction of the answer's tokens (" N" tokenized) whose argmax, given the
  prompt and the answer's earlier tokens, is the true token. It moves before exact match does.
For gca, a third: how often the retriever fetched a chunk that holds the key, against the chance of a random pick.
A prompt is exactly its length in tokens (the last filler sentence may be cut), and by default each is a random
0..S-1 tokens shorter than --len, S the model's segment length (gca: its chunk): one length alone puts every answer at
one position of its segment, and a model trained at one position answered a quarter as often a few tokens off it
(docs/recall_1m.md). --offsets 1 asks for exactly --len. The fine-tuning examples below spread the answer the same way.
Start, middle and end are reported separately because only start and middle test the memory: when the key lies
in the last segment, local attention alone finds it. The paper's zero-shot Infini model scores ~100% at the end
but 3-14% at start/middle; after fine-tuning on 5K-token examples it finds the key at every depth up to 1M.

The prompt is streamed through the model --chunk tokens per call, carrying the state (memory, caches), and only
the answer positions go through the LM head, so memory does not grow with --len (full attention excepted: its
KV cache grows, and lengths that cannot fit are refused up front).

Training data (the paper fine-tunes on 5K-token inputs for 400 steps at lr 1e-4): sample_finetune_batch() and
PasskeyData below, which train.py reads with dataset='passkey' (the quick start, configs/recall_infini*.py,
configs/passkey_finetune.py).
"""

import argparse
import math
import random
import re
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sample import (add_common_args, autocast_for, check_output, default_chunk, describe_device, generate, load,
                    parse_size, peak_memory, pick_device, plan_chunk, pyplot, save_figure, save_report, set_threads,
                    stream)

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.")
FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")
KEY_LINE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
ANSWER = " {key}"
DEPTHS = {'start': 0.0, 'middle': 0.5, 'end': 1.0}
MAX_KEY = 50000  # Landmark's test draws the key from 1..50000
PROGRESS_MIN_TOKENS = 65536  # prompts this long show a progress bar (a CPU streams ~10-20K tokens/s)


# -----------------------------------------------------------------------------
# the prompt

class Prompt(NamedTuple):
    ids: np.ndarray    # int64 token ids of the whole prompt, ending with the question
    answer: list       # token ids of " N", the expected continuation
    key: int
    key_start: int     # token positions of the key line " The pass key is N. ... is the pass key."
    key_end: int
    key_first: int     # where the key's first " N" starts
    key_last: int      # where the key's second " N" starts (the copy nearest the question)
    filler_before: int  # filler tokens before / after the key line
    filler_after: int


class Pieces:
    """The prompt's fixed pieces, tokenized once. Every piece but the task starts with a space, and GPT-2's
    pre-tokenizer splits before a space + word, so concatenating the pieces' tokens gives exactly the tokens of
    the concatenated text (a test checks it): a 1M-token prompt is built from a few short encode() calls."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.head = np.array(tokenizer.encode(TASK), dtype=np.int64)
        self.question = np.array(tokenizer.encode(QUESTION), dtype=np.int64)
        self.sentences = [np.array(tokenizer.encode(' ' + s), dtype=np.int64) for s in FILLER]
        self.cycle = np.concatenate(self.sentences)  # one round of the five filler sentences
        self.longest_sentence = max(len(s) for s in self.sentences)

    def key_line(self, key):
        return np.array(self.tokenizer.encode(KEY_LINE.format(key=key)), dtype=np.int64)

    def key_first(self, key):
        """Offset of the first " N" in the key line, which starts " The pass key is N."."""
        return len(self.tokenizer.encode(KEY_LINE.split(' {key}')[0]))

    def key_last(self, key):
        """Offset of the second " N" in the key line: the key line ends with " N is the pass key."."""
        return len(self.key_line(key)) - len(self.tokenizer.encode(f" {key} is the pass key."))

    def answer(self, key):
        return self.tokenizer.encode(ANSWER.format(key=key))

    def skeleton(self, key=MAX_KEY):
        """Tokens of the prompt without filler (task, key line, question)."""
        return len(self.head) + len(self.key_line(key)) + len(self.question)

    def filler(self, budget):
        """`budget` tokens of filler (the five sentences, cycling; the last may be cut mid-sentence, so that a prompt
        has exactly the length asked for) and the offsets at which a whole sentence starts, plus `budget`: the places
        where the key line may go."""
        tokens = np.resize(self.cycle, budget)
        lengths = np.tile([len(s) for s in self.sentences], budget // len(self.cycle) + 1)
        ends = np.cumsum(lengths)
        return tokens, np.concatenate(([0], ends[ends < budget], [budget]))


def check_depth(depth):
    """'start' | 'middle' | 'end' | a fraction in [0, 1] -> (name, fraction)."""
    if isinstance(depth, str) and depth in DEPTHS:
        return depth, DEPTHS[depth]
    try:
        fraction = float(depth)
    except (TypeError, ValueError):
        fraction = float('nan')
    if not 0.0 <= fraction <= 1.0:  # also catches nan
        raise SystemExit(f"error: --depth {depth} must be start, middle, end or a fraction in [0, 1] "
                         f"(0 = right after the task description, 1 = right before the question)")
    return f"{fraction:g}", fraction


def build_prompt(pieces, length, depth, key):
    """The passkey prompt of exactly `length` tokens, with the key line after a `depth` fraction of the filler
    sentences."""
    key_line = pieces.key_line(key)
    budget = length - len(pieces.head) - len(key_line) - len(pieces.question)
    if budget < 0:
        raise SystemExit(f"error: --len {length} is shorter than the prompt without filler ({length - budget} "
                         f"tokens: task, key line, question); use --len {pieces.skeleton()} or more")
    filler, starts = pieces.filler(budget)
    cut = int(starts[round(depth * (len(starts) - 1))])  # after round(depth x number of sentences) sentences
    ids = np.concatenate((pieces.head, filler[:cut], key_line, filler[cut:], pieces.question))
    key_start = len(pieces.head) + cut
    return Prompt(ids, pieces.answer(key), key, key_start, key_start + len(key_line),
                  key_start + pieces.key_first(key), key_start + pieces.key_last(key), cut, len(filler) - cut)


# -----------------------------------------------------------------------------
# one trial: stream the prompt, then score the answer two ways

def leading_number(text):
    m = re.match(r'\s*(\d+)', text)
    return int(m.group(1)) if m else None


def stream_prompt(model, ids, chunk, autocast=None, desc=''):
    """stream(ids) with a progress bar for long prompts: a 1M-token prompt takes minutes on a CPU. The prompts
    (B, n) go through stream() in blocks of whole chunks, carrying the state, so the model sees the same calls as
    in one stream() call (same results)."""
    n = ids.size(-1)
    block = chunk * max(1, 16384 // chunk)
    with tqdm(total=n * len(ids), desc=desc, unit='tok', unit_scale=True, leave=False,
              disable=n < PROGRESS_MIN_TOKENS) as bar:
        state = None
        for start in range(0, n, block):
            last = start + block >= n
            logits, state = stream(model, ids[:, start:start + block], chunk, state, last_logits=int(last),
                                   autocast=autocast)
            bar.update(min(block, n - start) * len(ids))
    return logits, state


@torch.no_grad()
def retrieved_key(model, prompts, store):
    """gca: per prompt, whether the retriever fetched a chunk that holds the key, for the chunk whose position
    predicts the answer's first digit, and the chance that k chunks drawn at random would; (None, None) where no
    fetchable chunk holds it (the key is within the sliding window's reach). A chunk holds the key when one of the
    key's digits (either copy) is among the tokens its stored keys/values were computed from: its own and, through
    the lower layers' sliding windows, the gca_lower_layers * (gca_window - 1) tokens before it."""
    c = model.config
    reach = c.gca_lower_layers * (c.gca_window - 1)
    answer_chunk = (len(prompts[0].ids) - 1) // c.gca_chunk  # its neighbours are the top-k chunks j < answer_chunk - 1
    index, weights = model.retriever.retrieve(store.queries, store.keys,
                                              torch.tensor([answer_chunk], device=store.keys.device))
    n = max(0, answer_chunk - 1)            # chunks it may fetch
    k = min(c.gca_topk, n)
    hits = []
    for prompt, picked, weight in zip(prompts, index[:, 0].tolist(), weights[:, 0].tolist()):
        digits = [t for start in (prompt.key_first, prompt.key_last) for t in range(start, start + len(prompt.answer))]
        holding = {j for t in digits for j in range(t // c.gca_chunk, (t + reach) // c.gca_chunk + 1) if j < n}
        if not holding:
            hits.append((None, None))
            continue
        hit = bool(holding & {j for j, w in zip(picked, weight) if w > 0})
        hits.append((hit, 1 - math.comb(n - len(holding), k) / math.comb(n, k)))
    return hits


def run_trials(model, tokenizer, prompts, chunk, autocast=None, desc=''):
    """Stream a batch of prompts of one length (and answers of one length) side by side; per prompt, the exact
    match of the greedy answer and the teacher-forced token accuracy (gca: and whether the key was retrieved)."""
    ids = torch.from_numpy(np.stack([p.ids for p in prompts]))
    logits, state = stream_prompt(model, ids, chunk, autocast, desc)
    no_retriever = [(None, None)] * len(prompts)
    retrieved = retrieved_key(model, prompts, state[-1]) if model.config.attn == 'gca' else no_retriever
    after_prompt = logits[:, -1, :tokenizer.vocab_size]
    answers = torch.tensor([p.answer for p in prompts])
    # Teacher forcing: feed the answer's tokens but the last after the prompt; the prompt's last logits predict
    # answer[0], answer[i]'s logits predict answer[i + 1]. The state after the prompt is reused below as well.
    n = answers.size(1)
    forced, _ = stream(model, answers[:, :-1], chunk, state, last_logits=n - 1, autocast=autocast)
    forced = torch.cat((after_prompt[:, None], forced[..., :tokenizer.vocab_size]), 1)
    correct = (forced.argmax(-1).cpu() == answers)
    # Greedy: one token more than the answer, so that a longer number (12345 -> 123456) is not counted right.
    tokens, _ = generate(model, after_prompt, state, n + 1, tokenizer.vocab_size, temperature=0, autocast=autocast)
    rows = []
    for prompt, generated, ok, (hit, hit_chance) in zip(prompts, tokens, correct, retrieved):
        text = tokenizer.decode(generated)
        rows.append(dict(key=prompt.key, generated=text, exact=leading_number(text) == prompt.key,
                         token_acc=ok.float().mean().item(), key_pos=prompt.key_start, key_retrieved=hit,
                         key_retrieved_chance=hit_chance))
    return rows


def run_trial(model, tokenizer, prompt, chunk, autocast=None):
    """One prompt: exact match of the greedy answer and teacher-forced token accuracy."""
    return run_trials(model, tokenizer, [prompt], chunk, autocast)[0]


def last_segment_start(config, length):
    """Where the question's segment starts: a key after it is in reach of local attention alone. None for full
    attention (everything is in reach); dilated attention reaches the whole window lcm(w_i) only sparsely, so
    for it the flag is left at the segment of w_0 = dilated_segments[0], where it attends densely. gca: its
    sliding window (anything earlier must be retrieved)."""
    if config.attn == 'full':
        return None
    if config.attn == 'gca':
        return max(0, length - config.gca_window)
    dense = config.dilated_segments[0] if config.attn == 'dilated' else config.segment_len
    return (length - 1) // dense * dense


def alignment_period(config):
    """How many positions the question can take relative to the model's blocks: infini and local segment_len, gca
    its chunk, dilated its densest segment w_0 (as last_segment_start). Training examples and evaluation prompts
    spread the answer over this many positions. Full attention has no blocks, yet a small model trained with the
    answer at one position learns that position (seed 1, 4 heads of 16: 90 / 85% of keys at the trained 282 tokens,
    0-10% at 283-288), so it gets segment_len too: the same spread as the infini and local models it is compared with."""
    return {'dilated': config.dilated_segments[0], 'gca': config.gca_chunk}.get(config.attn, config.segment_len)


def answer_crosses_segment(config, n, answer_len):
    """Whether a prompt of n tokens has its answer's digits predicted in two segments (infini, local): from the first
    (at n - 1) to the token that must end the number (at n + answer_len - 1). Past the boundary local attention starts
    afresh and the memory keeps no order, so nothing tells the model how far into the number it has got. With
    infini_local='sliding' (not the paper's) the window reaches across the boundary; the same answers are still
    scored apart, to compare."""
    if config.attn not in ('infini', 'local'):
        return False
    return (n - 1) // config.segment_len != (n + answer_len - 1) // config.segment_len


def lengths_to_spread(pieces, length, offsets):
    """How many prompt lengths, `length` and below, evaluation spreads over: `offsets`, or fewer where a shorter prompt
    could not hold the task, the key line and the question."""
    return max(1, min(offsets, length - pieces.skeleton() + 1))


def batches_of_equal_length(pieces, trials, fraction, batch):
    """The prompts for `trials` [(key, length)], in batches of at most `batch` prompts of one length and answer length
    (keys with more digits take more answer tokens), each as [(index in trials, prompt)]."""
    groups = {}
    for i, (key, length) in enumerate(trials):
        groups.setdefault((length, len(pieces.answer(key))), []).append(i)
    for indices in groups.values():
        for start in range(0, len(indices), batch):  # prompts are built batch by batch: 8 MB each at 1M tokens
            yield [(i, build_prompt(pieces, trials[i][1], fraction, trials[i][0]))
                   for i in indices[start:start + batch]]


def evaluate(model, tokenizer, lengths, depths, trials, seed, chunk, autocast, log=print, batch=1, offsets=None):
    """Every length x depth, `trials` keys each, `batch` prompts streamed side by side. Each prompt is a random
    0..offsets-1 tokens shorter than its length (offsets=None: alignment_period(model.config)), so that the answer
    falls at every position of a segment, not at the one a single length gives. Returns a list of result dicts. The
    keys and lengths depend on seed alone (not on batch), and so do the results."""
    pieces = Pieces(tokenizer)
    offsets = alignment_period(model.config) if offsets is None else offsets
    rng = random.Random(seed)
    share = lambda scores: sum(scores) / len(scores) if scores else None  # noqa: E731
    results = []
    for length in lengths:
        spread = lengths_to_spread(pieces, length, offsets)
        for name, fraction in depths:
            drawn = [(rng.randint(1, MAX_KEY), length - rng.randrange(spread)) for _ in range(trials)]  # key, length
            rows, tokens, t0 = [None] * trials, 0, time.time()
            for group in batches_of_equal_length(pieces, drawn, fraction, batch):
                prompts = [prompt for _, prompt in group]
                done = sum(row is not None for row in rows)
                desc = f"{size_name(length)} {name} keys {done + 1}-{done + len(group)}/{trials}"
                for (i, prompt), row in zip(group, run_trials(model, tokenizer, prompts, chunk, autocast, desc)):
                    local_from = last_segment_start(model.config, len(prompt.ids))
                    row['key_in_last_segment'] = local_from is None or prompt.key_last >= local_from
                    row['prompt_len'] = len(prompt.ids)
                    row['answer_crosses_segment'] = answer_crosses_segment(model.config, len(prompt.ids),
                                                                           len(prompt.answer))
                    rows[i] = row
                    tokens += len(prompt.ids)
            seconds = time.time() - t0
            in_last = [r['key_in_last_segment'] for r in rows]
            result = dict(len=length, depth=name, fraction=fraction, trials=len(rows), offsets=spread,
                          exact=sum(r['exact'] for r in rows) / len(rows),
                          token_acc=sum(r['token_acc'] for r in rows) / len(rows),
                          key_in_last_segment=sum(in_last) / len(rows), seconds=seconds,
                          tokens_per_s=tokens / max(seconds, 1e-9), rows=rows)
            inside = [r['exact'] for r in rows if not r['answer_crosses_segment']]
            across = [r['exact'] for r in rows if r['answer_crosses_segment']]
            result.update(exact_inside_segment=share(inside), answers_inside=len(inside),
                          exact_across_segments=share(across))
            split = '' if not across else (f" (answer inside one segment {100 * (share(inside) or 0):.0f}% of "
                                            f"{len(inside)}, across two {100 * share(across):.0f}% of {len(across)})")
            retrieved = ''
            if model.config.attn == 'gca':  # over the prompts whose key lay beyond the sliding window
                hits = [r for r in rows if r['key_retrieved'] is not None]
                for metric in ('key_retrieved', 'key_retrieved_chance'):
                    result[metric] = sum(r[metric] for r in hits) / len(hits) if hits else None
                if hits:
                    retrieved = (f"  key retrieved {100 * result['key_retrieved']:3.0f}% of {len(hits)} (chance "
                                 f"{100 * result['key_retrieved_chance']:.2g}%)")
            results.append(result)
            lengths_note = f" ({length - spread + 1:,}-{length:,} tokens)" if spread > 1 else ''
            log(f"{length:>9,}{lengths_note} {name:>7}  exact {100 * result['exact']:5.1f}%{split}  token acc "
                f"{100 * result['token_acc']:5.1f}%  key in last segment {100 * result['key_in_last_segment']:3.0f}%"
                f"{retrieved}"
                f"  {result['tokens_per_s']:>9,.0f} tok/s  (keys {', '.join(str(r['key']) for r in rows[:4])}"
                f"{', ...' if len(rows) > 4 else ''}; greedy {rows[0]['generated']!r})")
    return results


# -----------------------------------------------------------------------------
# fine-tuning data: ~5K-token examples, random depth and key, loss only on the answer's tokens

def finetune_example(pieces, seq_len, generator, key=None, offsets=1, end_share=0.0):
    """seq_len + 1 tokens (prompt, answer, then filler to the exact length) and where the answer lies. The answer
    starts at one of `offsets` positions, drawn uniformly: a model with segments learns to answer wherever the question
    falls in its segment only if it is trained so (with one length, every example put the answer at one offset, and a
    prompt a few tokens shorter was answered 14-24% where the trained one was 100%: docs/recall_1m.md). The key's
    depth is uniform, except that an `end_share` of the examples put the key line right before the question (depth 1,
    where `--depth end` puts it): at a uniform depth a key almost never lies in the question's own segment, and a model
    with 128-token segments never learned to copy it from there (a share of 0.25 or 0.5 did not teach it in 500 steps
    either: docs/recall_1m.md). `key` fixes the key (the tests use it);
    the generator is advanced the same either way (and as before end_share existed when it is 0)."""
    drawn = int(torch.randint(1, MAX_KEY + 1, (1,), generator=generator))
    key = drawn if key is None else key
    depth = float(torch.rand(1, generator=generator))
    if end_share > 0 and float(torch.rand(1, generator=generator)) < end_share:
        depth = 1.0
    answer = pieces.answer(key)
    total = seq_len + 1
    # One token less than would fit, so that something always follows the answer: the loss must see where the number
    # ends (at 147,456 tokens a 5-digit key's example ended on its last digit, and the model added a sixth).
    longest = total - len(answer) - 1
    room = longest - pieces.skeleton(key)  # filler tokens to spare
    shorter = int(torch.randint(0, min(offsets, room + 1), (1,), generator=generator))
    prompt = build_prompt(pieces, longest - shorter, depth, key)
    tail = np.resize(pieces.cycle, total - len(prompt.ids) - len(answer))  # 1 + shorter tokens
    return np.concatenate((prompt.ids, answer, tail)), len(prompt.ids), len(answer)


def sample_finetune_batch(tokenizer, batch_size, seq_len, generator, loss='answer', offsets=1, end_share=0.0):
    """(x, y) int64 (batch_size, seq_len): passkey examples of seq_len tokens, y = x shifted by one and -1
    everywhere but on the answer's tokens, so the loss (ignore_index=-1) is the answer's alone. The answer starts at
    one of `offsets` positions (alignment_period(config): at every position of a segment); an `end_share` of the
    keys lie right before the question (finetune_example).
    loss='all': (x, y, answer), y every next token and `answer` a bool mask of the answer's targets and of the
    token after it (where the number ends: without it, a model trained on mostly 5-digit keys gave 4-digit keys a
    fifth digit), for a loss on every token plus the answer's own mean (train.py's passkey_loss='all').
    All randomness (keys, depths) comes from the torch.Generator, as dataset.TokenData.sample_batch."""
    pieces = Pieces(tokenizer)
    shortest = pieces.skeleton() + len(pieces.answer(MAX_KEY)) + 8  # + 8: keys whose digits take more tokens
    if seq_len < shortest:
        raise ValueError(f"seq_len={seq_len} is too short for a passkey example (at least {shortest} tokens "
                         f"with the {tokenizer.name} tokenizer); the paper uses ~5K")
    x = torch.empty(batch_size, seq_len, dtype=torch.long)
    y = torch.empty(batch_size, seq_len, dtype=torch.long)
    answer = torch.zeros(batch_size, seq_len, dtype=torch.bool)
    for b in range(batch_size):
        tokens, start, n = finetune_example(pieces, seq_len, generator, offsets=offsets, end_share=end_share)
        tokens = torch.from_numpy(tokens)
        x[b], y[b] = tokens[:-1], tokens[1:]
        answer[b, start - 1:start - 1 + n] = True  # position t predicts token t + 1
    if loss == 'all':
        return x, y, answer | F.pad(answer[:, :-1], (1, 0))  # the answer and the token that ends it
    return x, y.masked_fill(~answer, -1)


class PasskeyData:
    """A stand-in for dataset.TokenData that train.py can sample from: generated passkey examples.
        data = PasskeyData(ckpt['tokenizer'], offsets=alignment_period(model.config))
        x, y = data.sample_batch(batch_size, seq_len, generator)"""

    def __init__(self, tokenizer_name, loss='answer', offsets=1, end_share=0.0):
        from tokenizer import get_tokenizer
        self.tokenizer, self.loss, self.offsets = get_tokenizer(tokenizer_name), loss, offsets
        self.end_share = end_share
        self.meta = {'tokenizer': self.tokenizer.name, 'vocab_size': self.tokenizer.vocab_size,
                     'eot': self.tokenizer.eot, 'source': 'passkey examples, generated (passkey.py)'}

    def __len__(self):
        return 0  # generated on the fly: there is no corpus to count

    def sample_batch(self, batch_size, seq_len, generator):
        return sample_finetune_batch(self.tokenizer, batch_size, seq_len, generator, self.loss, self.offsets,
                                     self.end_share)


# -----------------------------------------------------------------------------
# report

def size_name(n):
    for unit, scale in (('M', 1 << 20), ('K', 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def print_table(results, attn, log=print):
    """Like the paper's Table 3: one column per length, each cell start/middle/end (or the depths asked)."""
    lengths = list(dict.fromkeys(r['len'] for r in results))
    depths = list(dict.fromkeys(r['depth'] for r in results))
    cell = {(r['len'], r['depth']): r for r in results}
    metrics = [('exact', 'exact match of the greedy answer'),
               ('token_acc', 'teacher-forced token accuracy on the answer')]
    if 'key_retrieved' in results[0]:
        metrics.append(('key_retrieved', 'gca: a chunk that holds the key among the retrieved ones '
                                         '(prompts whose key is beyond the sliding window)'))
    percent = lambda x: '-' if x is None else f"{100 * x:.0f}"
    for metric, title in metrics:
        log(f"\n{title}, % ({'/'.join(depths)}):")
        width = max(12, 4 * len(depths) + 2)
        log(f"{'':<10}" + ''.join(f"{size_name(n):>{width}}" for n in lengths))
        values = ['/'.join(percent(cell[n, d][metric]) for d in depths) for n in lengths]
        log(f"{attn:<10}" + ''.join(f"{v:>{width}}" for v in values))


def plot_heatmap(results, path, title):
    """Exact-match accuracy, depth x length. matplotlib is optional: without it, one warning and no plot."""
    plt = pyplot('heatmap')
    if plt is None:
        return None
    lengths = list(dict.fromkeys(r['len'] for r in results))
    depths = list(dict.fromkeys(r['depth'] for r in results))
    cell = {(r['len'], r['depth']): r['exact'] for r in results}
    grid = np.array([[100 * cell[n, d] for n in lengths] for d in depths])
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2, 0.6 * len(depths) + 1.5))
    im = ax.imshow(grid, vmin=0, vmax=100, cmap='RdYlGn', aspect='auto')
    ax.set_xticks(range(len(lengths)), [size_name(n) for n in lengths])
    ax.set_yticks(range(len(depths)), depths)
    for i in range(len(depths)):
        for j in range(len(lengths)):
            ax.text(j, i, f"{grid[i, j]:.0f}", ha='center', va='center')
    ax.set_xlabel('input length (tokens)')
    ax.set_ylabel('key depth')
    ax.set_title(title)
    fig.colorbar(im, label='exact match, %')
    return save_figure(plt, fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(description='Passkey retrieval (Landmark / Infini-attention Appendix B).')
    add_common_args(p)
    p.add_argument('--len', type=parse_size, default=None, help='prompt length in tokens (e.g. 32768, 32K, 1M)')
    p.add_argument('--lens', default=None, help='a grid of lengths, comma-separated (e.g. 32K,128K,1M)')
    p.add_argument('--depth', default='start,middle,end',
                   help='start, middle, end or a fraction in [0, 1]; comma-separated for several')
    p.add_argument('--trials', type=int, default=1,
                   help='random keys per length x depth (1 keeps a 1M run of start, middle, end under 5 minutes on '
                        'a CPU; use 20 or more for a table to trust)')
    p.add_argument('--batch', type=int, default=16,
                   help='prompts streamed side by side (faster; the results do not depend on it; full attention: 1)')
    p.add_argument('--offsets', type=int, default=None,
                   help='each prompt is a random 0..offsets-1 tokens shorter than --len, so that the question falls at '
                        'that many positions of its segment (default: the segment length, also for full attention; gca '
                        'the chunk, dilated w_0); 1 = every prompt exactly --len tokens')
    p.add_argument('--seed', type=int, default=1337)
    p.add_argument('--json', default=None, help='write every trial and the summary here (checked before the run; '
                                                'an existing file is replaced)')
    p.add_argument('--plot', default=None, help='accuracy heatmap PNG (needs matplotlib)')
    args = p.parse_args(argv)

    if args.len is not None and args.lens is not None:
        raise SystemExit("error: give --len or --lens, not both")
    try:
        lengths = [parse_size(s) for s in args.lens.split(',') if s.strip()] if args.lens else \
            [32768 if args.len is None else args.len]  # --len 0 is refused below, not taken as the default
    except argparse.ArgumentTypeError as e:
        raise SystemExit(f"error: --lens: {e}")
    depths = [check_depth(d.strip()) for d in args.depth.split(',') if d.strip()]
    if not depths:
        raise SystemExit("error: --depth is empty; use start, middle, end or a fraction in [0, 1]")
    if args.trials < 1:
        raise SystemExit(f"error: --trials {args.trials} must be at least 1")
    if args.batch < 1:
        raise SystemExit(f"error: --batch {args.batch} must be at least 1")
    if args.offsets is not None and args.offsets < 1:
        raise SystemExit(f"error: --offsets {args.offsets} must be at least 1 (1: every prompt exactly --len tokens)")
    check_output(args.json, '--json')  # before the run: a path that cannot be written would lose its results
    check_output(args.plot, '--plot')

    device = pick_device(args.device)
    model, tokenizer, ckpt = load(args.ckpt, device)
    config = model.config
    pieces = Pieces(tokenizer)
    for length in lengths:  # every length checked before any is run
        if length < pieces.skeleton():
            build_prompt(pieces, length, 0.0, MAX_KEY)  # raises the one-line error
    autocast, dtype_bytes = autocast_for(device, args.dtype)
    asked = args.chunk or default_chunk(config, device, segments=8)
    for length in sorted(lengths):  # refuse what cannot fit before spending any time; plan for the longest
        chunk = plan_chunk(config, length, asked, device, dtype_bytes)
    set_threads(args.threads, model, device, chunk)
    if args.chunk and chunk != args.chunk:
        print(f"note: --chunk {args.chunk} -> {chunk} tokens per call ("
              f"{'a multiple of the dilated window' if config.attn == 'dilated' else 'full attention memory'})")
    window = {'full': 'everything (KV cache)', 'local': f'segments of {config.segment_len}, no memory',
              'infini': f"{'a sliding window' if config.infini_local == 'sliding' else 'segments'} of "
                        f"{config.segment_len} + compressive memory ({config.mem_update})",
              'dilated': f'dilated w={config.dilated_segments} r={config.dilated_rates}'}.get(config.attn)
    if config.attn == 'gca':
        window = (f'sliding window {config.gca_window} + top-{config.gca_topk} retrieved chunks of '
                  f'{config.gca_chunk}')
    print(f"passkey: {args.ckpt} (attn={config.attn}: {window}; {tokenizer.name} tokenizer; trained "
          f"{ckpt.get('iter_num', '?')} steps) | {args.trials} trials per cell | {chunk:,} tokens per call on "
          f"{describe_device(device)}")
    print("only start/middle test the memory: a key in the last segment is found by local attention alone")
    t0 = time.time()
    batch = 1 if config.attn == 'full' else args.batch  # full attention's KV cache grows with every prompt
    offsets = alignment_period(config) if args.offsets is None else args.offsets
    if offsets > 1:
        print(f"each prompt is 0-{offsets - 1} tokens shorter than its length (at random), so that the answer falls at "
              f"{offsets} positions of its {'segment' if config.attn != 'gca' else 'chunk'}")
    results = evaluate(model, tokenizer, lengths, depths, args.trials, args.seed, chunk, autocast, batch=batch,
                       offsets=offsets)
    elapsed = time.time() - t0
    print_table(results, config.attn)
    print(f"chance: a random key of 1-5 digits is guessed {100 / MAX_KEY:.3f}% of the time; local attention of the "
          f"same size cannot see a key outside the question's segment (the 'key in last segment' column) and stays "
          f"there")
    peak, what = peak_memory(device)
    tokens = sum(r['tokens_per_s'] * r['seconds'] for r in results)
    print(f"\n{tokens:,.0f} tokens in {elapsed:.1f} s ({tokens / max(elapsed, 1e-9):,.0f} tok/s); peak memory "
          f"{peak / 2**20:,.0f} MiB ({what})")

    report = dict(ckpt=args.ckpt, model_args=ckpt.get('model_args'), tokenizer=tokenizer.name, trials=args.trials,
                  offsets=offsets, seed=args.seed, chunk=chunk, device=device, seconds=elapsed,
                  tokens_per_s=tokens / max(elapsed, 1e-9),
                  peak_memory_bytes=peak, peak_memory_kind=what, results=results)
    save_report(report, args.json, args.plot, lambda path: plot_heatmap(results, path, f"passkey, attn={config.attn}"))
    return results


if __name__ == '__main__':
    main()
