"""sample.py: KV-cached, memory-carrying generation gives the logits of one forward pass over the same text;
sampling is reproducible from a seed; bad input is one clear line."""

import pytest
import torch

import sample

from tiny_checkpoints import KINDS, one_thread, save_tiny, tiny_model  # noqa: F401 (one_thread is an autouse fixture)


@pytest.mark.parametrize('kind', list(KINDS))
@pytest.mark.parametrize('chunk', [5, 16, 64])
def test_kv_cached_generation_equals_one_shot_logits(kind, chunk):
    """A 45-token prompt streamed in chunks, then 30 sampled tokens one call each, crossing segment boundaries
    (memory updates) and dilated windows: every step's logits equal a single forward over prompt + samples."""
    model = tiny_model(kind)
    prompt = torch.randint(0, 256, (45,), generator=torch.Generator().manual_seed(1))
    logits, state = sample.stream(model, prompt, sample.round_chunk(model.config, chunk))
    tokens, drawn_from = sample.generate(model, logits[-1], state, 30, 256, temperature=1.0, top_k=None,
                                         generator=torch.Generator().manual_seed(2))
    text = torch.cat((prompt, torch.tensor(tokens[:-1])))
    with torch.no_grad():
        expected = model(text[None])[0][0, -30:]
    torch.testing.assert_close(torch.stack(drawn_from), expected, rtol=1e-5, atol=1e-5)


def test_greedy_decoding_picks_the_argmax():
    model = tiny_model()
    logits, state = sample.stream(model, torch.tensor([1, 2, 3]), 16)
    tokens, drawn = sample.generate(model, logits[-1], state, 5, 256, temperature=0)
    assert tokens == [int(l.argmax()) for l in drawn]


def test_top_k_keeps_only_the_k_most_likely():
    logits = torch.arange(10.0)
    generator = torch.Generator().manual_seed(0)
    assert {sample.pick_token(logits, 1.0, 3, generator) for _ in range(200)} <= {7, 8, 9}


def test_sampling_is_deterministic_given_a_seed(tmp_path, capsys):
    ckpt = save_tiny(tmp_path / 'ckpt.pt')
    argv = ['--ckpt', ckpt, '--start', 'The pass key is', '--num_samples', '2', '--max_new_tokens', '40']
    outputs = []
    for seed in (7, 7, 8):
        sample.main(argv + ['--seed', str(seed)])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]
    assert outputs[0].count('---------------') == 2


def test_start_from_a_file(tmp_path, capsys):
    ckpt = save_tiny(tmp_path / 'ckpt.pt')
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('The grass is green. ' * 20)
    sample.main(['--ckpt', ckpt, '--start', f'FILE:{prompt}', '--num_samples', '1', '--max_new_tokens', '5'])
    assert 'prompt: 400 tokens streamed' in capsys.readouterr().err


def run_error(argv):
    with pytest.raises(SystemExit) as e:
        sample.main(argv)
    message = str(e.value.code)
    assert message.startswith('error: ') and '\n' not in message
    return message


def test_bad_input_is_one_clear_line(tmp_path):
    ckpt = save_tiny(tmp_path / 'ckpt.pt')
    assert 'cannot read the prompt file' in run_error(['--ckpt', ckpt, '--start', f'FILE:{tmp_path}/nope.txt'])
    assert 'must be >= 0' in run_error(['--ckpt', ckpt, '--temperature', '-1'])
    assert 'must be at least 1' in run_error(['--ckpt', ckpt, '--max_new_tokens', '0'])
    assert 'not found' in run_error(['--ckpt', str(tmp_path / 'missing.pt')])
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'\x00garbage' * 100)
    assert run_error(['--ckpt', str(bad)]) == f'error: not a checkpoint written by train.py, or damaged: {bad}'


def test_threads_zero_is_measured_like_train_py_and_too_many_threads_is_one_line(monkeypatch):
    model = tiny_model()
    timed = []

    def fake_measure(time_passes, most, what):  # the shared rule (train.py's too) gets a real forward pass to time
        timed.append((time_passes(1, 1), what))
        torch.set_num_threads(1)
        return 1, 'auto'

    monkeypatch.setattr(sample, 'measure_threads', fake_measure)
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 2)
    sample.set_threads(0, model, 'cpu', 32)
    assert len(timed) == 1 and len(timed[0][0]) == 1 and timed[0][0][0] > 0 and '32 tokens' in timed[0][1]
    with pytest.raises(SystemExit, match=rf"threads={sample.cpu_cores() + 5} is more than the {sample.cpu_cores()} CPU"):
        sample.set_threads(sample.cpu_cores() + 5, model, 'cpu', 32)
