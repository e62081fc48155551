"""bench.py and scripts/gpu_check.py at CPU sizes: they run end to end and write what the GPU run will need."""

import json
import os
import subprocess
import sys

import pytest

import bench
from model import GPT, GPTConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 1024


def run_script(args, timeout):
    # One thread: on a shared 2-core machine a busy core stalls a 2-thread OpenMP team (see bench.py --threads).
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_bench_small_quick_writes_every_row_and_target(tmp_path):
    out = tmp_path / 'bench.json'
    result = run_script(['bench.py', '--sizes', 'small', '--device', 'cpu', '--quick', '--threads', '1',
                         '--json', str(out)], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report['meta']['sizes'] == 'small' and report['meta']['torch']
    assert report['matmul']['tflops'] > 0
    expected = {(kind, 'fwd+bwd', N) for kind in bench.LAYER_KINDS for N in bench.QUICK['fwdbwd']}
    expected |= {(kind, 'fwd', N) for kind in bench.LAYER_KINDS for N in bench.QUICK['fwd']}
    rows = {(r['kind'], r['mode'], r['N']): r for r in report['layer']}
    assert set(rows) == expected
    for key, row in rows.items():
        assert row['status'] == 'ok', (key, row['status'])
        assert row['ms'] > 0 and row['tflops'] > 0 and row['tokens_per_s'] > 0 and row['peak_bytes'] >= 0, key
        assert row['ms_x_local'] > 0, key
        if row['kind'] == 'local':
            assert row['ms_x_local'] == 1.0

    models = {r['config']: r for r in report['model']}
    assert set(models) == set(bench.PG19_CONFIGS)
    for name, row in models.items():
        assert row['status'] == 'ok', (name, row['status'])
        assert 0 < row['mfu'] < 1 and row['ms'] > 0 and row['n_layer'] == 2 and row['seq_len'] == 1 * K, name
    assert models['pg19_infini']['attn'] == 'infini/linear' and models['pg19_infini_delta']['attn'] == 'infini/delta'

    passkey = report['passkey']
    assert passkey['status'] == 'ok' and passkey['tokens'] == bench.QUICK['passkey']['tokens']
    assert passkey['seconds'] > 0 and passkey['peak_x_one_chunk'] > 0

    targets = report['targets']
    assert len(targets) == 9 and all(t['verdict'] in ('PASS', 'FAIL') for t in targets), targets
    assert 'PASS' in result.stdout or 'FAIL' in result.stdout


def test_gpu_check_small_on_cpu_passes(tmp_path):
    out = tmp_path / 'gpu_check.json'
    result = run_script(['scripts/gpu_check.py', '--device', 'cpu', '--small', '--json', str(out)], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())['results']
    kinds = {'full', 'local', 'infini', 'infini_delta', 'dilated'}
    assert {r['kind'] for r in results} == kinds
    assert all(r['ok'] for r in results)
    compiled = [r for r in results if 'fullgraph=True' in r['check']]
    assert {r['kind'] for r in compiled} == kinds


@pytest.mark.parametrize('kind', list(bench.LAYER_KINDS))
def test_layer_flops_count_attention_as_the_model_does(kind):
    # bench's layer count = projections + the model's causal attention count (+ delta's extra memory read).
    cfg = GPTConfig(vocab_size=256, n_layer=1, n_head=8, n_embd=1024, segment_len=2048, **bench.LAYER_KINDS[kind])
    C, D, N = cfg.n_embd, cfg.head_size, 128 * K
    projections = N * 8 * C * C
    delta_read = N * 2 * C * D if cfg.mem_update == 'delta' and cfg.attn == 'infini' else 0
    model = GPT(cfg)
    assert bench.layer_flops(cfg, N) - projections - delta_read == pytest.approx(model.attention_flops_per_token(N) * N)


def test_dilated_paper_pattern_does_about_twice_local_attention_flops():
    local = GPTConfig(vocab_size=256, n_layer=1, attn='local')
    dilated = GPTConfig(vocab_size=256, n_layer=1, attn='dilated')
    projections = 128 * K * 8 * 1024 * 1024
    ratio = (bench.layer_flops(dilated, 128 * K) - projections) / (bench.layer_flops(local, 128 * K) - projections)
    assert 2.0 < ratio < 2.2  # 1024 + 512 + 256 + 227.6 + 170.7 keys per row (8 heads, r = 12: model.head_offsets)
    #                             against local's 1024


def test_missing_config_file_falls_back_to_the_issue_shape(monkeypatch, tmp_path):
    monkeypatch.setattr(bench, 'REPO', str(tmp_path))
    run, source = bench.read_run_config('pg19_dilated')
    assert 'missing' in source
    assert (run['n_layer'], run['n_embd'], run['seq_len'], run['attn']) == (12, 1024, 32 * K, 'dilated')


def test_config_file_is_parsed_not_executed(monkeypatch, tmp_path):
    (tmp_path / 'configs').mkdir()
    (tmp_path / 'configs' / 'pg19_local.py').write_text("attn = 'local'\nn_layer = 3\nseq_len = 4096\n")
    monkeypatch.setattr(bench, 'REPO', str(tmp_path))
    run, source = bench.read_run_config('pg19_local')
    assert source == 'configs/pg19_local.py' and (run['attn'], run['n_layer'], run['seq_len']) == ('local', 3, 4096)
    cfg, run = bench.model_config(run, 512, dict(n_layer=2))
    assert cfg.n_layer == 2 and cfg.attn == 'local' and cfg.vocab_size == 512


def test_sizes_parse_with_k_and_m_suffixes():
    assert bench.parse_sizes('8K,128k,1M,100') == (8 * K, 128 * K, 1024 * K, 100)


def test_unknown_section_is_one_line_not_a_traceback():
    result = run_script(['bench.py', '--only', 'layers', '--device', 'cpu'], timeout=60)
    assert result.returncode != 0
    assert 'unknown layers; choose from layer, model, passkey, cpu_table' in result.stderr
    assert 'Traceback' not in result.stderr
