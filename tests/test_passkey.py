"""passkey.py: the prompt (length, depth, tokenization), streaming = one-shot, fine-tuning batches, clear errors.
Tiny models (tests/tiny_checkpoints.py: 2 layers, n_embd 32, byte tokenizer) saved as train.py's checkpoints."""
import json
import math
import os
from dataclasses import asdict

import numpy as np
import pytest
import torch

import passkey
from sample import FULL_MAX_LEN, round_chunk, stream
from tokenizer import get_tokenizer
from tiny_checkpoints import KINDS, one_thread, save_tiny, tiny_model  # noqa: F401 (one_thread is an autouse fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def tokenizers():
    return {name: get_tokenizer(name) for name in ('byte', 'gpt2')}


# ----------------------------------------------------------------------------------------------
# the prompt

@pytest.mark.parametrize('name', ['byte', 'gpt2'])
@pytest.mark.parametrize('length', [300, 1000, 4096, 32768])
@pytest.mark.parametrize('depth', [0.0, 0.25, 0.5, 1.0])
def test_prompt_length_is_exact(tokenizers, name, length, depth):
    """Exactly the length asked for (the last filler sentence may be cut), so that a length, and the shorter lengths
    that evaluate() spreads prompts over, put the answer where they say."""
    pieces = passkey.Pieces(tokenizers[name])
    for n in range(length, length + pieces.longest_sentence + 1):
        prompt = passkey.build_prompt(pieces, n, depth, 12345)
        assert prompt.ids.dtype == np.int64 and len(prompt.ids) == n


@pytest.mark.parametrize('name', ['byte', 'gpt2'])
@pytest.mark.parametrize('depth', [0.0, 0.1, 0.5, 0.9, 1.0])
def test_the_key_appears_exactly_once_at_the_requested_depth(tokenizers, name, depth):
    tok = tokenizers[name]
    pieces = passkey.Pieces(tok)
    prompt = passkey.build_prompt(pieces, 3000, depth, 4711)
    text = tok.decode(prompt.ids)
    key_line = passkey.KEY_LINE.format(key=4711)
    assert text.count(key_line) == 1 and text.count('4711') == 2  # "The pass key is N. ... N is the pass key."
    assert tok.decode(prompt.ids[prompt.key_start:prompt.key_end]) == key_line
    assert tok.decode(prompt.ids[prompt.key_last:prompt.key_end]) == ' 4711 is the pass key.'
    filler = prompt.filler_before + prompt.filler_after
    assert abs(prompt.filler_before - depth * filler) <= pieces.longest_sentence
    assert text.startswith(passkey.TASK) and text.endswith(passkey.QUESTION)
    if depth == 0.0:  # right after the task description
        assert prompt.key_start == len(pieces.head)
    if depth == 1.0:  # right before the question
        assert prompt.key_end == len(prompt.ids) - len(pieces.question)


@pytest.mark.parametrize('name', ['byte', 'gpt2'])
@pytest.mark.parametrize('key', [1, 42, 909, 31337, 50000])
def test_pieces_and_answer_tokenize_like_the_whole_text(tokenizers, name, key):
    """The prompt is assembled from separately tokenized pieces; the answer " N" is tokenized on its own. Both
    must give the very tokens of tokenizing prompt + answer as one text, or teacher forcing scores wrong tokens.
    Also where the filler ends mid-sentence (every cut of the five sentences: 22 lengths in a row)."""
    tok = tokenizers[name]
    for length in range(600, 622):
        prompt = passkey.build_prompt(passkey.Pieces(tok), length, 0.5, key)
        text = tok.decode(prompt.ids) + passkey.ANSWER.format(key=key)
        assert tok.encode(text) == prompt.ids.tolist() + prompt.answer
    assert tok.decode(prompt.answer) == f" {key}"


def test_a_million_token_prompt_is_built_quickly_as_one_int_tensor(tokenizers):
    prompt = passkey.build_prompt(passkey.Pieces(tokenizers['byte']), 1 << 20, 0.5, 123)
    assert len(prompt.ids) == 1 << 20 and prompt.ids.nbytes == 8 << 20


def test_leading_number_parses_the_greedy_answer():
    assert passkey.leading_number(' 12345.') == 12345
    assert passkey.leading_number(' 123456') == 123456  # a longer number is not the key
    assert passkey.leading_number(' blue') is None


# ----------------------------------------------------------------------------------------------
# streaming evaluation

@pytest.mark.parametrize('kind', list(KINDS))
def test_streamed_logits_equal_one_shot_logits(kind):
    model = tiny_model(kind)
    ids = torch.randint(0, 256, (203,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids[None])[0][0, -9:]
    for chunk in (7, 16, round_chunk(model.config, 48), 203):
        got, _ = stream(model, ids, chunk, last_logits=9)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind', list(KINDS))
def test_streamed_trial_equals_one_shot_trial(kind):
    """Exact match and token accuracy from a prompt streamed in small chunks are those of one call, and the
    teacher-forced scores agree with a one-shot forward over prompt + answer."""
    model, tok = tiny_model(kind), get_tokenizer('byte')
    prompt = passkey.build_prompt(passkey.Pieces(tok), 330, 0.3, 2024)
    streamed = passkey.run_trial(model, tok, prompt, chunk=32)
    one_call = passkey.run_trial(model, tok, prompt, chunk=10_000)
    assert streamed == one_call
    full = torch.from_numpy(np.concatenate((prompt.ids, prompt.answer)))
    with torch.no_grad():
        logits = model(full[None])[0][0]
    n = len(prompt.answer)
    predicted = logits[-n - 1:-1, :tok.vocab_size].argmax(-1)
    assert streamed['token_acc'] == pytest.approx((predicted == torch.tensor(prompt.answer)).float().mean().item())


def test_cli_runs_a_grid_and_writes_json(tmp_path, capsys):
    ckpt = save_tiny(tmp_path / 'ckpt.pt', segment_len=128)
    out = tmp_path / 'pk.json'
    results = passkey.main(['--ckpt', ckpt, '--lens', '300,512', '--trials', '2', '--chunk', '256', '--offsets', '1',
                            '--json', str(out), '--plot', str(tmp_path / 'pk.png')])
    captured = capsys.readouterr()
    assert len(results) == 6 and {r['depth'] for r in results} == {'start', 'middle', 'end'}
    report = json.loads(out.read_text())
    assert [r['len'] for r in report['results']] == [300] * 3 + [512] * 3
    assert all(len(r['rows']) == 2 and 0 <= r['token_acc'] <= 1 for r in report['results'])
    assert all(row['prompt_len'] == r['len'] for r in report['results'] for row in r['rows'])  # --offsets 1
    assert report['peak_memory_bytes'] > 0 and report['tokens_per_s'] > 0
    assert 'exact match of the greedy answer' in captured.out and 'teacher-forced token accuracy' in captured.out
    # at 512 tokens the 'end' key lies in the question's 128-token segment, the start key does not
    cells = {(r['len'], r['depth']): r for r in report['results']}
    assert cells[512, 'end']['key_in_last_segment'] == 1.0 and cells[512, 'start']['key_in_last_segment'] == 0.0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert captured.err.count('warning: matplotlib is not installed') == 1


def test_prompts_spread_the_answer_over_every_position_of_a_segment(tmp_path, capsys):
    """By default each prompt is a random 0..segment_len-1 tokens shorter than --len: one length alone puts every
    answer at one position of its segment, and a model trained at one position scored 14-24% a few tokens off it."""
    ckpt = save_tiny(tmp_path / 'ckpt.pt', segment_len=16)
    report = tmp_path / 'pk.json'
    passkey.main(['--ckpt', ckpt, '--len', '300', '--depth', 'start', '--trials', '40', '--json', str(report)])
    result, = json.loads(report.read_text())['results']
    lengths = [row['prompt_len'] for row in result['rows']]
    assert result['offsets'] == 16 and 285 <= min(lengths) and max(lengths) <= 300
    assert len({n % 16 for n in lengths}) >= 12  # 40 draws of 16 positions: most of them (a test of the spread)
    assert '(285-300 tokens)' in capsys.readouterr().out
    # scored apart: answers whose digits are predicted in two segments (the first at n - 1, the end at n + len - 1)
    crosses = [(n - 1) // 16 != (n + len(f" {row['key']}") - 1) // 16 for n, row in zip(lengths, result['rows'])]
    assert [row['answer_crosses_segment'] for row in result['rows']] == crosses and 0 < sum(crosses) < 40
    inside = [row['exact'] for row, c in zip(result['rows'], crosses) if not c]
    assert result['answers_inside'] == len(inside) and result['exact_inside_segment'] == sum(inside) / len(inside)
    for kind in ('full', 'gca'):  # no segments that local attention restarts at: nothing to score apart
        assert not any(passkey.answer_crosses_segment(tiny_model(kind).config, n, 6) for n in range(280, 300))
    model = tiny_model('infini')  # offsets=1: all at the length; never shorter than the prompt without filler
    pieces = passkey.Pieces(get_tokenizer('byte'))
    shortest = pieces.skeleton()
    for offsets, length, expected in ((1, 300, {300}), (64, shortest + 2, {shortest, shortest + 1, shortest + 2})):
        result, = passkey.evaluate(model, get_tokenizer('byte'), [length], [('start', 0.0)], 30, seed=0, chunk=64,
                                   autocast=None, log=lambda s: 0, offsets=offsets)
        assert {row['prompt_len'] for row in result['rows']} == expected


def test_alignment_period_is_the_blocks_the_model_attends_in():
    kinds = ('infini', 'local', 'gca', 'dilated', 'full')
    c = {kind: tiny_model(kind, segment_len=24, gca_chunk=8).config for kind in kinds}
    expected = [24, 24, 8, c['dilated'].dilated_segments[0], 24]  # full: no blocks, the same spread as infini's
    assert [passkey.alignment_period(config) for config in c.values()] == expected


def test_dilated_chunk_is_rounded_to_its_window():
    model = tiny_model('dilated')
    assert round_chunk(model.config, 40) == 64 and round_chunk(model.config, 64) == 64


# ----------------------------------------------------------------------------------------------
# fine-tuning data

@pytest.mark.parametrize('name', ['byte', 'gpt2'])
def test_finetune_batch_has_loss_only_on_the_answer(tokenizers, name):
    tok = tokenizers[name]
    seq_len = 512 if name == 'byte' else 1024
    x, y = passkey.sample_finetune_batch(tok, 4, seq_len, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, seq_len) and x.dtype == y.dtype == torch.long
    for b in range(4):
        where = (y[b] != -1).nonzero().flatten()
        assert len(where) >= 1 and (where.diff() == 1).all()  # one contiguous run: the answer
        answer = tok.decode(y[b, where])
        assert answer.startswith(' ') and answer[1:].isdigit()
        context = tok.decode(x[b, :where[0] + 1])  # everything the first answer token is predicted from
        assert context.endswith(passkey.QUESTION) and context.count(passkey.KEY_LINE.format(key=int(answer))) == 1
        assert (x[b, 1:] == y[b, :-1])[where[:-1]].all()  # y is x shifted by one on the answer
    x2, y2 = passkey.sample_finetune_batch(tok, 4, seq_len, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)  # the generator drives all randomness


@pytest.mark.parametrize('name', ['byte', 'gpt2'])
def test_training_examples_put_the_answer_at_every_offset(tokenizers, name):
    """offsets=32: the answer starts at each of 32 positions (mod 32), about equally often; offsets=1: at one
    position per answer length, which is all a model trained so can answer at (docs/recall.md)."""
    pieces = passkey.Pieces(tokenizers[name])
    seq_len = 288 if name == 'byte' else 320
    for offsets in (1, 32):
        counts = {}
        generator = torch.Generator().manual_seed(0)
        for _ in range(1600):
            ids, start, n = passkey.finetune_example(pieces, seq_len, generator, offsets=offsets)
            assert len(ids) == seq_len + 1 and start + n < len(ids)
            counts.setdefault(n, []).append(start % 32)
        for starts in counts.values():
            if offsets == 1:
                assert len(set(starts)) == 1
            elif len(starts) >= 320:  # the common answer lengths
                assert len(set(starts)) == 32 and max(map(starts.count, set(starts))) < 3 * len(starts) / 32


def test_an_end_share_of_the_examples_put_the_key_right_before_the_question():
    """end_share: that share of the keys lies right before the question (where --depth end puts it), the rest at a
    uniform depth; end_share=0 draws exactly the examples drawn before it existed (finetune_example's own draws)."""
    pieces = passkey.Pieces(get_tokenizer('byte'))
    seq_len, question = 2304, len(pieces.question)

    def key_at_end(ids, start, n):  # the key line's last byte is the one before the question's first
        key = int(bytes(ids[start:start + n].tolist()).decode())
        line = pieces.key_line(key)
        return np.array_equal(ids[start - question - len(line):start - question], line)

    for share, low, high in ((0.0, 0, 10), (0.25, 80, 140), (1.0, 400, 400)):
        generator = torch.Generator().manual_seed(0)
        at_end = sum(key_at_end(*passkey.finetune_example(pieces, seq_len, generator, offsets=32, end_share=share))
                     for _ in range(400))
        assert low <= at_end <= high, (share, at_end)

    def examples(**end_share):
        generator = torch.Generator().manual_seed(1)
        return [passkey.finetune_example(pieces, seq_len, generator, offsets=32, **end_share)[0] for _ in range(20)]

    assert all(np.array_equal(a, b) for a, b in zip(examples(), examples(end_share=0.0)))
    data = passkey.PasskeyData('byte', end_share=1.0)
    x, y = data.sample_batch(3, seq_len, torch.Generator().manual_seed(2))
    for b in range(3):  # the share reaches the batches train.py samples (passkey_end_share)
        start = int((y[b] != -1).nonzero()[0]) + 1
        assert key_at_end(torch.cat((x[b], y[b, -1:])).numpy(), start, len(y[b][y[b] != -1]))


def test_passkey_data_stands_in_for_token_data():
    data = passkey.PasskeyData('byte')
    assert data.meta['tokenizer'] == 'byte' and data.meta['vocab_size'] == 256
    x, y = data.sample_batch(2, 320, torch.Generator().manual_seed(3))
    _, loss, _ = tiny_model()(x, y)
    assert torch.isfinite(loss)  # only the answer's tokens count; never 0/0
    with pytest.raises(ValueError, match='too short for a passkey example'):
        data.sample_batch(2, 64, torch.Generator())


# ----------------------------------------------------------------------------------------------
# bad input: one clear line each

def run_error(argv):
    with pytest.raises(SystemExit) as e:
        passkey.main(argv)
    message = str(e.value.code)
    assert message.startswith('error: ') and '\n' not in message
    return message


def test_len_shorter_than_the_prompt_skeleton(tmp_path):
    msg = run_error(['--ckpt', save_tiny(tmp_path / 'c.pt'), '--len', '100'])
    assert 'shorter than the prompt without filler' in msg and '--len 245' in msg


@pytest.mark.parametrize('lens', [['--len', '0'], ['--lens', '0,300']])
def test_len_zero_is_refused_not_taken_as_the_default(tmp_path, lens):
    msg = run_error(['--ckpt', save_tiny(tmp_path / 'c.pt'), *lens])
    assert msg.startswith('error: --len 0 is shorter than the prompt without filler')


def test_long_prompts_show_progress_and_stream_to_the_same_answer(tmp_path, capsys, monkeypatch):
    ckpt = save_tiny(tmp_path / 'c.pt')
    argv = ['--ckpt', ckpt, '--len', '2000', '--depth', 'middle', '--chunk', '64']
    quiet = passkey.main(argv)
    assert 'tok' not in capsys.readouterr().err
    monkeypatch.setattr(passkey, 'PROGRESS_MIN_TOKENS', 1000)
    shown = passkey.main(argv)
    assert '2000 middle keys 1-1/1:' in capsys.readouterr().err  # tqdm's bar over the prompt's tokens
    assert [r['rows'] for r in shown] == [r['rows'] for r in quiet]
    model = passkey.load(ckpt, 'cpu')[0]  # blocks of whole chunks: the same calls as one stream()
    ids = torch.randint(0, 256, (40000,), generator=torch.Generator().manual_seed(0))
    one, _ = stream(model, ids, 64)
    blocks, _ = passkey.stream_prompt(model, ids[None], 64)
    assert torch.equal(one, blocks[0])


@pytest.mark.parametrize('depth', ['1.5', '-0.1', 'deep', 'nan'])
def test_depth_outside_the_unit_interval(tmp_path, depth):
    msg = run_error(['--ckpt', save_tiny(tmp_path / 'c.pt'), '--len', '300', '--depth', depth])
    assert 'must be start, middle, end or a fraction in [0, 1]' in msg


def test_missing_checkpoint(tmp_path):
    assert 'not found' in run_error(['--ckpt', str(tmp_path / 'nope.pt'), '--len', '300'])


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / 'bad.pt'
    path.write_bytes(b'this is not a checkpoint' * 10)
    assert run_error(['--ckpt', str(path), '--len', '300']) == f'error: not a checkpoint written by train.py, or damaged: {path}'


def test_unknown_attention_kind_in_an_old_checkpoint(tmp_path):
    args = {**asdict(tiny_model().config), 'attn': 'ring'}
    msg = run_error(['--ckpt', save_tiny(tmp_path / 'old.pt', model_args=args), '--len', '300'])
    assert "attn='ring' is not an attention kind" in msg


def test_full_attention_refuses_what_cannot_fit(tmp_path):
    ckpt = save_tiny(tmp_path / 'full.pt', kind='full')
    msg = run_error(['--ckpt', ckpt, '--len', str(2 * FULL_MAX_LEN)])
    assert "attn='full' keeps a KV cache" in msg and 'runs up to' in msg


def test_len_and_lens_together(tmp_path):
    assert 'not both' in run_error(['--ckpt', save_tiny(tmp_path / 'c.pt'), '--len', '300', '--lens', '300,400'])


@pytest.mark.parametrize('flag', ['--json', '--plot'])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_run(tmp_path, flag, monkeypatch):
    """A folder, a missing folder or a read-only one: one line before any prompt is streamed, not a traceback after
    the whole evaluation."""
    ckpt = save_tiny(tmp_path / 'c.pt')
    monkeypatch.setattr(passkey, 'evaluate', lambda *a, **k: pytest.fail('the evaluation ran'))
    argv = ['--ckpt', ckpt, '--len', '300', flag]
    assert 'is a folder' in run_error(argv + [str(tmp_path)])
    assert 'does not exist' in run_error(argv + [str(tmp_path / 'missing' / 'pk.json')])
    read_only = tmp_path / 'read_only'
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes into a read-only folder anyway: make the write itself fail
        def refuse(*args, **kwargs):
            raise PermissionError(13, 'Permission denied')
        monkeypatch.setattr('sample.tempfile.NamedTemporaryFile', refuse)
    assert 'cannot write to' in run_error(argv + [str(read_only / 'pk.json')])


def test_an_existing_json_is_replaced_only_when_the_run_ends(tmp_path, capsys):
    ckpt = save_tiny(tmp_path / 'c.pt')
    out = tmp_path / 'pk.json'
    out.write_text('{"earlier": "results"}')
    with pytest.raises(SystemExit):  # a run that fails leaves the earlier file as it was
        passkey.main(['--ckpt', ckpt, '--len', '100', '--json', str(out)])
    assert json.loads(out.read_text()) == {'earlier': 'results'}
    passkey.main(['--ckpt', ckpt, '--len', '300', '--depth', 'end', '--json', str(out)])
    assert f'--json {out} exists and will be replaced' in capsys.readouterr().out
    assert json.loads(out.read_text())['results'][0]['depth'] == 'end'


def test_streaming_does_not_modify_the_state_it_is_given():
    """run_trial reuses the prompt's state for teacher forcing and for greedy decoding."""
    model = tiny_model('infini')
    ids = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(0))
    _, state = stream(model, ids, 16)
    before = [t.clone() for t in tensors(state)]
    stream(model, ids[:20], 16, state)
    assert len(before) == 8 and all(torch.equal(a, b) for a, b in zip(before, tensors(state)))


def tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in tensors(o)]
    return []


def test_finetune_config_uses_only_train_keys_and_trains_when_train_py_has_the_hook(tmp_path):
    """configs/passkey_finetune.py: every key is train.py's, except `dataset` until train.py has it; once it does,
    two steps on generated examples from a tiny checkpoint must run."""
    import train
    from configurator import read_config_file
    keys = read_config_file(os.path.join(REPO, 'configs', 'passkey_finetune.py'))
    assert keys['dataset'] == 'passkey' and keys['learning_rate'] == 1e-4 and keys['max_iters'] == 400
    assert set(keys) - set(train.DEFAULTS) <= {'dataset'}
    if 'dataset' not in train.DEFAULTS:
        pytest.skip("train.py has no `dataset` key yet (passkey fine-tuning hook pending)")
    ckpt = save_tiny(tmp_path / 'pre.pt', segment_len=16)
    result = train.main(['configs/passkey_finetune.py', f'--init_from={ckpt}', f'--out_dir={tmp_path / "ft"}',
                         '--max_iters=2', '--seq_len=384', '--batch_size=2', '--eval_iters=1', '--device=cpu'])
    assert result['iter_num'] == 2 and np.isfinite(result['val_loss'])


def test_batched_trials_give_the_results_of_one_prompt_at_a_time():
    """Prompts streamed side by side (grouped by length: keys of 1 to 5 digits) score as they do one by one."""
    model, tok = tiny_model('infini'), get_tokenizer('byte')
    one = passkey.evaluate(model, tok, [300], [('start', 0.0)], 12, seed=3, chunk=64, autocast=None, log=lambda s: 0)
    many = passkey.evaluate(model, tok, [300], [('start', 0.0)], 12, seed=3, chunk=64, autocast=None,
                            log=lambda s: 0, batch=5)
    assert [r['key'] for r in one[0]['rows']] == [r['key'] for r in many[0]['rows']]
    for a, b in zip(one[0]['rows'], many[0]['rows']):
        assert (a['exact'], a['generated']) == (b['exact'], b['generated'])
        assert a['token_acc'] == pytest.approx(b['token_acc'])


def test_batches_hold_prompts_of_one_length():
    pieces = passkey.Pieces(get_tokenizer('byte'))
    keys = [7, 12345, 99, 54321, 3, 11111, 42]
    lengths = [400, 400, 400, 390, 390, 400, 400]
    batches = list(passkey.batches_of_equal_length(pieces, list(zip(keys, lengths)), 0.5, batch=2))
    assert sorted(i for group in batches for i, _ in group) == list(range(len(keys)))
    assert all(len(p.ids) == lengths[i] and p.key == keys[i] for group in batches for i, p in group)
    for group in batches:
        assert len(group) <= 2 and len({len(p.ids) for _, p in group}) == 1 and len({len(p.answer) for _, p in group}) == 1


def test_loss_all_batch_marks_the_answer_and_targets_every_token():
    tok = get_tokenizer('byte')
    x, y = passkey.sample_finetune_batch(tok, 3, 512, torch.Generator().manual_seed(0))
    x2, y2, answer = passkey.sample_finetune_batch(tok, 3, 512, torch.Generator().manual_seed(0), loss='all')
    assert torch.equal(x, x2) and (y2[:, :-1] == x2[:, 1:]).all()
    ends = answer & ~torch.nn.functional.pad(answer[:, 1:], (0, 1))  # the last marked target of each row
    assert torch.equal(y2.masked_fill(~(answer & ~ends), -1), y)  # the answer, as loss='answer' scores it...
    tok_after = tok.decode(y2[ends].tolist())
    assert set(tok_after) == {' '}  # ...and the token that ends the number


@pytest.mark.parametrize('name', ['byte', 'gpt2'])
def test_something_follows_the_answer_at_every_length(tokenizers, name):
    """The answer is never the example's last token, whatever the length and the key's length: the loss must see
    where the number ends (at 147,456 byte tokens a 5-digit key's example used to end on its last digit)."""
    pieces = passkey.Pieces(tokenizers[name])
    for seq_len in [*range(300, 340), 147456]:
        for key in (7, 77, 777, 7777, 12345):  # the depth and key come from the generator; force each key length
            generator = torch.Generator().manual_seed(seq_len)
            answer = pieces.answer(key)
            ids, start, n = passkey.finetune_example(pieces, seq_len, generator, key=key)
            assert len(ids) == seq_len + 1 and start + n < len(ids)
            assert ids[start:start + n].tolist() == answer


def test_gca_reports_whether_the_retriever_fetched_the_key():
    """key_retrieved: is a chunk that holds the key's digits (in its tokens or in their lower-layer window) among the
    top-k neighbours of the chunk that predicts the answer's first digit? Checked against the scores
    s_{m-1,j} = q_{m-1}·k_j recomputed from the store."""
    tok = get_tokenizer('byte')
    pieces = passkey.Pieces(tok)
    Lc = KINDS['gca']['gca_chunk']
    prompt = passkey.build_prompt(pieces, 400, 0.0, 4711)
    row = passkey.run_trial(tiny_model('gca', gca_topk=1000), tok, prompt, chunk=32)
    assert row['key_retrieved'] is True and row['key_retrieved_chance'] == 1.0  # every earlier chunk is fetched
    outcomes = set()
    for top_k in (1, 40):  # of the 47 chunks that the answer's chunk may fetch
        model = tiny_model('gca', gca_topk=top_k)
        for depth in (0.0, 0.5, 1.0):
            prompt = passkey.build_prompt(pieces, 400, depth, 4711)
            assert tok.decode(prompt.ids[prompt.key_first:prompt.key_first + 5]) == ' 4711'
            with torch.no_grad():
                _, state = stream(model, torch.from_numpy(prompt.ids), 64)
            store, m = state[-1], (len(prompt.ids) - 1) // Lc
            fetched = set((store.keys[0, :m - 1] @ store.queries[0, m - 1]).topk(top_k).indices.tolist())
            digits = [*range(prompt.key_first, prompt.key_first + 5), *range(prompt.key_last, prompt.key_last + 5)]
            reach = KINDS['gca']['gca_window'] - 1  # one lower layer: a chunk's keys/values see this far back
            key_chunks = {j for t in digits for j in range(t // Lc, (t + reach) // Lc + 1)}
            (hit, chance), = passkey.retrieved_key(model, [prompt], store)
            assert hit == bool(fetched & key_chunks)
            assert chance == pytest.approx(1 - math.comb(m - 1 - len(key_chunks), top_k) / math.comb(m - 1, top_k))
            outcomes.add(hit)
    assert outcomes == {True, False}  # the check saw both
