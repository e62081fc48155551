"""scripts/gca_compare.py: where its report goes, what it reuses from --work, and that bad input is one line before any
training. The trainings themselves are not run here: a tiny checkpoint stands in for a finished one."""
import importlib.util
import json
import math
import os
from dataclasses import asdict

import numpy as np
import pytest

from checkpoint import save_checkpoint
from tiny_checkpoints import one_thread, tiny_model  # noqa: F401 (one_thread is an autouse fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_gca_compare():
    spec = importlib.util.spec_from_file_location('gca_compare', os.path.join(REPO, 'scripts', 'gca_compare.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def gca_compare(monkeypatch):
    module = load_gca_compare()
    monkeypatch.setattr(module, 'train', lambda *a: pytest.fail('it started training'))
    return module


@pytest.fixture
def data_dir(tmp_path):
    """One 5000-byte validation book: long enough for a window of 8 x 512 tokens."""
    d = tmp_path / 'data'
    d.mkdir()
    book = np.append(np.random.default_rng(0).integers(97, 123, 4999), 0).astype(np.uint16)
    book.tofile(d / 'validation.bin')
    np.save(d / 'validation_books.npy', np.array([0, len(book)], dtype=np.int64))
    (d / 'meta.json').write_text(json.dumps({'tokenizer': 'byte', 'vocab_size': 256, 'eot': 0, 'source': 'test',
                                             'splits': {}}))
    return str(d)


def finished_training(work, data, kind, data_dir, max_iters, seed=1337):
    """What train.py leaves in --work after max_iters steps."""
    model = tiny_model(kind)
    path = os.path.join(work, f'{data}-{kind}', 'ckpt.pt')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_checkpoint(path, {'model': model.state_dict(), 'model_args': asdict(model.config), 'tokenizer': 'byte',
                           'iter_num': max_iters, 'config': dict(data_dir=data_dir, max_iters=max_iters, seed=seed)})
    return path


def test_one_validation_window_is_enough(data_dir, tmp_path, capsys):
    """--val_windows 1 gave the 8x longer windows 1 // 4 = 0 windows, and a traceback after the training."""
    work = tmp_path / 'work'
    finished_training(str(work), 'pg19', 'local', data_dir, 2)  # reused, not trained
    load_gca_compare().main(['--data', 'pg19', '--data_dir', data_dir, '--kinds', 'local', '--max_iters', '2',
                      '--val_windows', '1', '--multiples', '1', '--trials', '1', '--work', str(work)])
    out = work / 'gca_pg19.json'
    assert f'the report goes to {out}' in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report['val_windows'] == {'val_ppl@512': 1, 'val_ppl@4096': 1}
    local = report['kinds']['local']
    assert local['train_seconds'] is None and math.isfinite(local['val_ppl@512'] + local['val_ppl@4096'])


def run_error(module, argv):
    with pytest.raises(SystemExit) as e:
        module.main(argv)
    message = str(e.value.code)
    assert message.startswith('error: ') and '\n' not in message
    return message


def test_bad_input_and_output_paths_are_one_line_before_any_work(gca_compare, tmp_path):
    base = ['--data', 'synthetic', '--data_dir', str(tmp_path / 'no-data'), '--work', str(tmp_path / 'work')]
    existing = tmp_path / 'mine.json'
    existing.write_text('{}')
    assert run_error(gca_compare, base + ['--out', str(existing)]) == \
        f'error: --out {existing} exists; pass --force to replace it, or choose another path'
    assert 'is a folder' in run_error(gca_compare, base + ['--out', str(tmp_path)])
    assert 'must be at least 1' in run_error(gca_compare, base + ['--val_windows', '0'])
    assert 'choose from local, infini, gca' in run_error(gca_compare, base + ['--kinds', 'local, full'])
    assert 'comma-separated whole numbers' in run_error(gca_compare, base + ['--trials', '32,x,4'])


@pytest.mark.parametrize('argv, tracked', [
    (['--data', 'synthetic', '--data_dir', 'data/gca_synthetic'], True),
    (['--data', 'pg19', '--data_dir', 'data/pg19_byte', '--max_iters', '150'], True),
    (['--data', 'synthetic', '--data_dir', 'data/gca_synthetic', '--max_iters', '20'], False),
    (['--data', 'pg19', '--data_dir', 'data/pg19_byte'], False),  # 300 steps: not the recipe of gca_pg19.json
    (['--data', 'synthetic', '--data_dir', 'data/gca_synthetic', '--trials', '4,2,1'], False),
    (['--data', 'synthetic'], False)])  # data/synthetic: documents of another length
def test_only_the_readme_commands_write_the_tracked_results(gca_compare, tmp_path, monkeypatch, argv, tracked):
    def stop(path, flag, replace):
        raise SystemExit(f'{path} {replace}')
    monkeypatch.setattr(gca_compare, 'check_output', stop)
    with pytest.raises(SystemExit) as e:
        gca_compare.main(argv + ['--work', str(tmp_path)])
    name = f"gca_{argv[1]}.json"
    where = os.path.join(REPO, 'results', name) if tracked else os.path.join(tmp_path, name)
    assert str(e.value.code) == f'{where} True'  # the default is replaced: the recipe regenerates its own results


def test_a_checkpoint_trained_otherwise_is_refused_not_reused(gca_compare, data_dir, tmp_path, monkeypatch):
    """It used to be reused whenever it had trained at least --max_iters steps: 300 steps reported as 20."""
    work = str(tmp_path / 'work')
    finished_training(work, 'synthetic', 'local', data_dir, 300)
    argv = ['--data', 'synthetic', '--data_dir', data_dir, '--kinds', 'local', '--work', work]
    msg = run_error(gca_compare, argv + ['--max_iters', '20'])
    assert "was trained with {'data_dir'" in msg and "'max_iters': 300" in msg and 'pass --retrain' in msg

    def trained(kind, args):
        raise SystemExit(f'trains {kind}')
    monkeypatch.setattr(gca_compare, 'train', trained)
    with pytest.raises(SystemExit, match='trains local'):
        gca_compare.main(argv + ['--max_iters', '20', '--retrain'])
