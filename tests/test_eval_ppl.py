"""eval_ppl.py: streamed per-token losses equal one forward pass; per-book, overall and per-position numbers
agree with each other; bad input is one clear line. Tiny models from tests/tiny_checkpoints.py, a tiny byte-level
corpus made here."""
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval_ppl
from checkpoint import save_checkpoint
from model import GPT, GPTConfig
from sample import round_chunk

from tiny_checkpoints import KINDS, one_thread, save_tiny, tiny_model  # noqa: F401 (one_thread is an autouse fixture)
BOOK_LENGTHS = [300, 90, 200, 41]  # tokens, each book's EOT included


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """The CONTRACTS format: <split>.bin (uint16, books concatenated, each ending in EOT), <split>_books.npy."""
    d = tmp_path_factory.mktemp('data')
    rng = np.random.default_rng(0)
    for split in ('validation', 'test'):
        books = [np.append(rng.integers(97, 123, n - 1), 0).astype(np.uint16) for n in BOOK_LENGTHS]
        np.concatenate(books).tofile(d / f'{split}.bin')
        np.save(d / f'{split}_books.npy', np.cumsum([0] + BOOK_LENGTHS).astype(np.int64))
    (d / 'meta.json').write_text(json.dumps({'tokenizer': 'byte', 'vocab_size': 256, 'eot': 0, 'source': 'test',
                                             'splits': {}}))
    return str(d)


@pytest.mark.parametrize('kind', list(KINDS))
def test_streamed_losses_equal_one_shot_losses(kind):
    model = tiny_model(kind)
    tokens = np.random.default_rng(1).integers(0, 256, 150).astype(np.uint16)
    x, y = torch.from_numpy(tokens[:-1].astype(np.int64)), torch.from_numpy(tokens[1:].astype(np.int64))
    with torch.no_grad():
        logits, loss, _ = model(x[None], y[None])
    expected = F.cross_entropy(logits[0], y, reduction='none').double().numpy()
    for chunk in (7, 32, 200):
        got = eval_ppl.window_losses(model, tokens, round_chunk(model.config, chunk))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert got.mean() == pytest.approx(loss.item(), rel=1e-5)


def test_windows_of_a_book():
    assert eval_ppl.windows_of(300, 64) == [(0, 65), (64, 65), (128, 65), (192, 65)]  # 256 scored, tail left out
    assert eval_ppl.windows_of(65, 64) == [(0, 65)] and eval_ppl.windows_of(64, 64) == []
    assert eval_ppl.windows_of(300, 0) == [(0, 300)]


def test_fixed_length_report_is_consistent(data_dir, tmp_path, capsys):
    ckpt = save_tiny(tmp_path / 'ckpt.pt')
    out = tmp_path / 'ppl.json'
    report = eval_ppl.main(['--ckpt', ckpt, '--data_dir', data_dir, '--len', '64', '--buckets', '4', '--chunk', '24',
                            '--json', str(out), '--plot', str(tmp_path / 'ppl.png')])
    assert json.loads(out.read_text())['overall'] == report['overall']
    # books of 300, 90, 200 tokens hold 4, 1, 3 windows of 64 (+1); the 41-token book is skipped
    assert [(b['book'], b['tokens']) for b in report['books']] == [(0, 256), (1, 64), (2, 192)]
    assert report['books_skipped'] == 1 and report['overall']['tokens'] == 512
    # the overall loss is token-weighted: the same from the books and from the position buckets
    by_books = sum(b['loss'] * b['tokens'] for b in report['books']) / 512
    by_buckets = sum(b['loss'] * b['tokens'] for b in report['buckets']) / 512
    assert report['overall']['loss'] == pytest.approx(by_books) == pytest.approx(by_buckets)
    assert [(b['start'], b['end'], b['tokens']) for b in report['buckets']] == [(0, 16, 128), (16, 32, 128),
                                                                                 (32, 48, 128), (48, 64, 128)]
    assert report['overall']['ppl'] == pytest.approx(np.exp(report['overall']['loss']))
    out = capsys.readouterr().out
    assert 'loss by position' in out and '3 books (1 shorter book skipped)' in out  # not "1 shorter books"


def test_max_windows_scores_the_first_windows_of_every_book(data_dir, tmp_path, capsys):
    ckpt = save_tiny(tmp_path / 'ckpt.pt')
    report = eval_ppl.main(['--ckpt', ckpt, '--data_dir', data_dir, '--len', '64', '--max_windows', '2'])
    assert [(b['book'], b['tokens']) for b in report['books']] == [(0, 128), (1, 64), (2, 128)]
    assert 'windows of 64 tokens (the first 2 of each book)' in capsys.readouterr().out
    eval_ppl.main(['--ckpt', ckpt, '--data_dir', data_dir, '--len', '64', '--max_books', '1'])
    out = capsys.readouterr().out
    assert ', 1 book (1 shorter book skipped), ' in out and 'tokens of 1 book (token-weighted)' in out
    assert 'must be >= 0' in run_error(['--ckpt', ckpt, '--data_dir', data_dir, '--max_windows', '-1'])


def test_whole_books_and_max_books(data_dir, tmp_path):
    ckpt = save_tiny(tmp_path / 'ckpt.pt', kind='dilated')
    report = eval_ppl.main(['--ckpt', ckpt, '--data_dir', data_dir, '--split', 'validation', '--len', '0',
                            '--max_books', '3', '--buckets', '0,32,128'])
    assert [b['tokens'] for b in report['books']] == [299, 89, 199]
    assert [(b['start'], b['tokens']) for b in report['buckets']] == [(0, 96), (32, 96 + 57 + 96), (128, 171 + 71)]


def run_error(argv):
    with pytest.raises(SystemExit) as e:
        eval_ppl.main(argv)
    message = str(e.value.code)
    assert message.startswith('error: ') and '\n' not in message
    return message


def test_bad_input_is_one_clear_line(data_dir, tmp_path):
    ckpt = save_tiny(tmp_path / 'ckpt.pt')
    assert 'no book of test' in run_error(['--ckpt', ckpt, '--data_dir', data_dir, '--len', '32768'])
    assert 'must be a number of buckets' in run_error(['--ckpt', ckpt, '--data_dir', data_dir, '--buckets', 'x'])
    assert 'not found' in run_error(['--ckpt', ckpt, '--data_dir', str(tmp_path / 'nodata')])
    gpt2 = save_tiny(tmp_path / 'gpt2.pt', tokenizer='gpt2')
    assert 'vocab_size 256, fewer than' in run_error(['--ckpt', gpt2, '--data_dir', data_dir])
    model = GPT(GPTConfig(vocab_size=50304, n_layer=1, n_head=2, n_embd=32))
    save_checkpoint(str(tmp_path / 'big.pt'), {'model': model.state_dict(), 'model_args': asdict(model.config),
                                               'tokenizer': 'gpt2'})
    msg = run_error(['--ckpt', str(tmp_path / 'big.pt'), '--data_dir', data_dir])
    assert "tokenized with 'byte' but the checkpoint uses the 'gpt2' tokenizer" in msg
    assert 'not found' in run_error(['--ckpt', str(tmp_path / 'missing.pt'), '--data_dir', data_dir])


@pytest.mark.parametrize('flag', ['--json', '--plot'])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_run(data_dir, tmp_path, flag, monkeypatch):
    """A folder or a missing folder: one line before any book is streamed, not a traceback after all of them."""
    ckpt = save_tiny(tmp_path / 'ckpt.pt')
    monkeypatch.setattr(eval_ppl, 'evaluate', lambda *a, **k: pytest.fail('the evaluation ran'))
    argv = ['--ckpt', ckpt, '--data_dir', data_dir, '--len', '64', flag]
    assert 'is a folder' in run_error(argv + [str(tmp_path)])
    assert 'does not exist' in run_error(argv + [str(tmp_path / 'missing' / 'ppl.json')])
