"""Tiny models of every attention kind, and checkpoints of them, shared by the passkey/sample/eval_ppl tests."""

from dataclasses import asdict

import pytest
import torch

from checkpoint import save_checkpoint
from model import ATTENTION_KINDS, GPT, GPTConfig

KINDS = {
    'infini': dict(attn='infini'),
    'infini_delta': dict(attn='infini', mem_update='delta'),
    'infini_relu': dict(attn='infini', mem_feature='relu'),
    'local': dict(attn='local'),
    'full': dict(attn='full'),
    'dilated': dict(attn='dilated', dilated_segments=(16, 32), dilated_rates=(1, 2)),
}
if 'gca' in ATTENTION_KINDS:  # grouped cross-attention, when this model.py has it
    KINDS['gca'] = dict(attn='gca', gca_window=16, gca_chunk=8, gca_topk=2, gca_lower_layers=1)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine they make each call far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(kind='infini', seed=0, **extra):
    torch.manual_seed(seed)
    cfg = GPTConfig(**{**dict(vocab_size=256, n_layer=2, n_head=2, n_embd=32, segment_len=16), **KINDS[kind], **extra})
    return GPT(cfg).eval()


def save_tiny(path, kind='infini', model_args=None, tokenizer='byte', **extra):
    return save_model(path, tiny_model(kind, **extra), model_args, tokenizer)


def save_model(path, model, model_args=None, tokenizer='byte'):
    save_checkpoint(str(path), {'model': model.state_dict(), 'model_args': model_args or asdict(model.config),
                                'tokenizer': tokenizer, 'iter_num': 0})
    return str(path)
