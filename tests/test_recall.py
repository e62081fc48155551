"""The memory carries information across segments: a short training run on a reduced recall task, where a digit
planted in the first segment is asked for three segments later. Infini-attention must learn it (its memory is the
only path from the first segment to the question); local attention, the same model without memory, must stay at
chance (1 in 10). The long runs (passkey retrieval at 1M tokens) are scripts/recall_cpu.py, not tests."""

import json
import subprocess
import sys

import pytest
import torch

from model import GPT, GPTConfig

SEGMENT, SEGMENTS, QUESTION = 16, 4, 50
DIGITS, LETTERS = range(0, 10), range(20, 46)


def recall_batch(generator, batch_size):
    """Letters as filler, one digit at a random place of the first segment, the question token last; the loss is
    on the answer alone (targets -1 elsewhere)."""
    T = SEGMENT * SEGMENTS
    x = torch.randint(LETTERS.start, LETTERS.stop, (batch_size, T), generator=generator)
    value = torch.randint(DIGITS.start, DIGITS.stop, (batch_size,), generator=generator)
    where = torch.randint(0, SEGMENT, (batch_size,), generator=generator)
    x[torch.arange(batch_size), where] = value
    x[:, -1] = QUESTION
    y = torch.full((batch_size, T), -1)
    y[:, -1] = value
    return x, y


def train_and_score(attn, steps=400):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_layer=1, n_head=1, n_embd=32, attn=attn, segment_len=SEGMENT))
    optimizer = model.configure_optimizers(0.0, 1e-2, 0.1, (0.9, 0.95), 'cpu')
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        _, loss, _ = model(*recall_batch(generator, 32))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = recall_batch(torch.Generator().manual_seed(1), 1000)
    with torch.no_grad():
        logits, _, _ = model(x)
    return (logits[:, -1].argmax(-1) == y[:, -1]).float().mean().item()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: a second thread only waits
    yield
    torch.set_num_threads(threads)


def test_infini_memory_recalls_a_digit_three_segments_back():
    assert train_and_score('infini') > 0.6


def test_local_attention_cannot_recall_it():
    assert train_and_score('local') < 0.2  # chance is 0.1


def test_recall_script_trains_both_stages_and_reports_every_cell(tmp_path):
    """scripts/recall_cpu.py end to end on a tiny budget (2 steps a stage, 1 key per cell): both stages train from one
    another, every length and the stage-1 checkpoint are evaluated with passkey.py, and the JSON says so."""
    out = tmp_path / 'recall.json'
    done = subprocess.run([sys.executable, 'scripts/recall_cpu.py', '--only', 'local', '--work', str(tmp_path / 'work'),
                           '--trials', '1', '--json', str(out), '--plot', str(tmp_path / 'recall.png'),
                           '--max_iters=2', '--batch_size=2', '--eval_iters=1'],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = json.loads(out.read_text())['runs']['local']
    assert [s['steps'] for s in run['stages']] == [2, 2]
    assert 'init_from' in run['stages'][1]['command']
    assert sorted((c['stage'], c['len'], c['depth']) for c in run['eval']) == sorted(
        (stage, n, d) for stage, n in ((1, 288), (2, 2304), (2, 18432)) for d in ('start', 'middle', 'end'))
