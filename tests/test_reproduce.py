"""
scripts/reproduce.py, the driver of the reproduction: the tiny scale end to end on CPU (generated books, a 2 x 32
model, a few steps per run), and resuming. These test the driver, not the papers: the tiny numbers mean nothing.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'scripts'))
import reproduce  # noqa: E402


def driver(*args, timeout=420):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'reproduce.py'), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def stages_of(work):
    with open(os.path.join(work, 'state.json')) as f:
        return json.load(f)['stages']


def test_tiny_scale_runs_every_experiment_end_to_end_and_a_rerun_skips_every_stage(tmp_path):
    work = str(tmp_path / 'work')
    r = driver('--scale', 'tiny', '--work_dir', work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = reproduce.build_plan('tiny')
    stages = stages_of(work)
    assert {s.name for s in plan} == set(stages)
    assert all(rec['status'] == 'done' for rec in stages.values()), \
        {n: rec.get('error') for n, rec in stages.items() if rec['status'] != 'done'}

    for exp in ('exp1', 'exp2', 'exp3'):
        with open(os.path.join(work, 'results', f'{exp}.json')) as f:
            res = json.load(f)
        assert res['status'] == 'complete' and res['scale'] == 'tiny'
        assert res['report_environment']['torch'] and res['report_environment']['device']
        for run in res['runs'].values():
            for part in run.values():
                assert part['status'] == 'done' and part['command'].startswith('python ') and part['wall_s'] >= 0
                assert part['device'] and part['torch']
        assert '—' not in res['table_md'], res['table_md']  # every cell of the table is filled
    with open(os.path.join(work, 'results', 'exp1.json')) as f:
        exp1 = json.load(f)
    train = exp1['runs']['pg19/infini_delta']['train']
    assert train['settings']['mem_update'] == 'delta' and train['tokens_seen'] == train['tokens_planned'] > 0
    assert train['val_loss'] > 0 and train['gates_sigmoid']
    ppl = exp1['runs']['math/infini_linear']['eval_whole']['numbers']
    assert ppl['ppl'] > 1 and ppl['books'] == 2 and ppl['by_position']
    assert 'eval_whole' not in exp1['runs']['math/full']  # a whole book's KV cache: not planned
    with open(os.path.join(work, 'results', 'exp2.json')) as f:
        exp2 = json.load(f)
    cells = exp2['runs']['infini_linear']['passkey']['numbers']
    assert {(c['len'], c['depth']) for c in cells} == {(n, d) for n in (512, 1024, 2048)
                                                        for d in ('start', 'middle', 'end')}
    assert '| infini_linear |' in exp2['table_md']
    assert '## exp3' in r.stdout and '| dilated |' in r.stdout

    # the rerun finds everything done: no stage runs, and the record is unchanged
    t0 = time.time()
    again = driver('--scale', 'tiny', '--work_dir', work)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"0 stages to run, {len(plan)} of the {len(plan)} selected already done" in again.stdout
    assert stages_of(work) == stages
    assert time.time() - t0 < 30


def test_a_stopped_training_saves_and_the_next_run_resumes_it_from_its_checkpoint(tmp_path):
    work = str(tmp_path / 'work')
    args = ['--scale', 'tiny', '--work_dir', work, '--only', 'exp1/pg19/local/train', '--set', 'max_iters=100000']
    # 1. SIGTERM to the driver (what `timeout` sends) while the training runs
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'scripts', 'reproduce.py'), *args],
                            cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS='1'), stdout=subprocess.PIPE, text=True)
    train_log, t0 = os.path.join(work, 'exp1', 'pg19', 'local', 'log.jsonl'), time.time()
    while not (os.path.exists(train_log) and len(open(train_log).readlines()) >= 5):  # a few steps done
        assert proc.poll() is None and time.time() - t0 < 60, proc.stdout.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert 'stopped at step' in out and 'run the same command again to continue' in out
    rec = stages_of(work)['exp1/pg19/local/train']
    assert rec['status'] == 'partial' and rec['iter_num'] > 0
    assert os.path.exists(os.path.join(work, 'exp1', 'pg19', 'local', 'ckpt.pt'))

    # 2. the same command resumes it, and --max_minutes stops it again cleanly
    second = driver(*args, '--max_minutes', '0.1')
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert f"resumed from step {rec['iter_num']}" in second.stdout
    rec = stages_of(work)['exp1/pg19/local/train']
    assert rec['status'] == 'partial' and rec['attempts'][-1]['command'].endswith('--init_from=resume')
    assert len(rec['attempts']) == 2 and rec['wall_s'] == pytest.approx(sum(a['wall_s'] for a in rec['attempts']))


def test_list_shows_every_small_scale_run_with_its_command(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # main() works in the repository; the fixture restores the folder
    assert reproduce.main(['--scale', 'small', '--work_dir', str(tmp_path / 'w'), '--list']) == 0
    out = capsys.readouterr().out
    plan = reproduce.build_plan('small')
    for stage in plan:
        assert stage.name in out
    assert 'python train.py configs/repro_small.py --attn=infini' in out and '--mem_update=delta' in out
    assert '--init_from=out-repro-small/' not in out  # the work folder given, not the default
    assert 'python passkey.py' in out and '1048576' in out and 'python eval_ppl.py' in out


def test_a_finished_stage_whose_checkpoint_is_gone_runs_again_only_for_the_stages_that_need_it(tmp_path):
    plan = reproduce.build_plan('small')
    by_name = {s.name: s for s in plan}
    record = reproduce.Record(str(tmp_path / 'w'), str(tmp_path / 'd'), str(tmp_path / 'r'))
    train, ev = by_name['exp1/pg19/local/train'], by_name['exp1/pg19/local/eval_32K']
    record.put(train, {'status': 'done', 'signature': record.signature(train)})  # its ckpt.pt is not there

    todo = reproduce.stages_to_run([ev], plan, record)
    assert [s.name for s in todo] == [train.name, ev.name]
    assert reproduce.stages_to_run([train], plan, record) == []  # done, and nothing selected needs its checkpoint

    # --only exp2 brings in the exp1 trainings whose checkpoints it fine-tunes, not their evaluations
    todo = reproduce.stages_to_run(reproduce.select(plan, 'exp2'), plan, record)
    names = [s.name for s in todo]
    assert 'exp1/pg19/infini_linear/train' in names and not any('eval' in n for n in names)
    assert names.index('exp1/pg19/infini_linear/train') < names.index('exp2/infini_linear/finetune')

    # training it again makes a new model: what was computed from the old one is no longer done
    others = by_name['exp1/pg19/infini_linear/eval_32K']  # reads another checkpoint
    for stage in (ev, by_name['exp2/local/passkey'], others):
        record.put(stage, {'status': 'done', 'signature': record.signature(stage)})
    reproduce.invalidate_dependents(train, plan, record)
    assert not record.done(ev) and not record.done(by_name['exp2/local/passkey'])
    assert record.done(train) and record.done(others)

    # a recorded stage made by a different plan (here: another step count) is not taken for this one
    changed = reproduce.build_plan('small')
    changed_train = next(s for s in changed if s.name == train.name)
    changed_train.command = [a if not a.startswith('--max_iters=') else '--max_iters=1' for a in train.command]
    assert not record.done(changed_train)


def test_only_naming_no_stage_is_one_clear_error():
    with pytest.raises(SystemExit, match="--only 'exp4' matches no stage"):
        reproduce.select(reproduce.build_plan('small'), 'exp4')


@pytest.mark.parametrize('scale', ['tiny', 'small', 'paper'])
def test_every_planned_training_passes_train_py_config_checks(scale):
    from configurator import get_config
    from train import DEFAULTS, check_config
    record = reproduce.Record('work', 'data', 'results')
    trainings = [s for s in reproduce.build_plan(scale) if s.kind == 'train']
    assert len(trainings) == 16  # exp1: 5 kinds x 2 corpora, exp2: 3 fine-tunings, exp3: 3
    for stage in trainings:
        init = 'scratch' if stage.init_from == 'scratch' else 'work/base/ckpt.pt'
        cfg, _ = get_config(DEFAULTS, record.command(stage)[1:] + [f"--init_from={init}"])
        check_config(cfg)  # raises ConfigError (e.g. seq_len not a multiple of segment_len)
        tokens = cfg['max_iters'] * cfg['batch_size'] * cfg['gradient_accumulation_steps'] * cfg['seq_len']
        assert tokens == stage.info['tokens']
    by_kind = {}
    for stage in trainings:  # equal tokens per step within an experiment, whatever the batch split
        st = stage.info['settings']
        by_kind.setdefault(stage.name.split('/')[0], set()).add(
            st['batch_size'] * st['gradient_accumulation_steps'] * st['seq_len'])
    assert all(len(v) == 1 for v in by_kind.values()), by_kind
