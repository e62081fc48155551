"""
Does the memory remember? Passkey retrieval by tiny models trained on 2 CPU cores.

Trains each run in stages -- configs/recall_infini.py (2 layers, n_embd 96, 3 heads, byte tokens, generated passkey
examples of 288 tokens = 9 segments of 32), then configs/recall_infini_long.py (the same model fine-tuned on 2304-token
examples, 72 segments) -- once per attention kind; only the attention differs. The Infini runs go on to stage 3
(configs/recall_infini_18k.py, 18,432-token examples), infini_linear to stage 4 (configs/recall_infini_147k.py,
147,456). Then evaluates the checkpoints with passkey.py (the same streaming path as any user): each stage from its
own training length up to 1,048,576 tokens (stage 2 at 1x, 8x, 64x and 1M; local, full and dilated, at chance
already, stop at 8x or 1x), stage 1 at its own 288. For gca it also reports how often the retriever fetched the key.
Three more runs train and evaluate only when --only names them: infini_sliding (not the paper's local attention: see
EXTRA_RUNS) and infini_wide (the same model with the paper's) go on to stage 5 (configs/recall_infini_147k_more.py,
100 more steps at 147,456); infini_seg128 takes infini_wide's four stages, then widens its segments from 32 to 128
tokens (stages 5 and 6: configs/recall_infini_seg128.py, configs/recall_infini_147k_seg128.py; stage 7: stage 6's
config once more). Each is evaluated after its last stage from 2,304 tokens to 1M (infini_seg128 after stage 6 too).

    python scripts/recall_cpu.py                         # every run below, seeds 1-3; results/recall_cpu.json, .png
    python scripts/recall_cpu.py --only infini_delta --seeds 4 --trials 20 --work out-recall   # out-recall/...
    python scripts/recall_cpu.py --only infini_sliding --seeds 2 --trials_1m 50 --threads 2  # the window, to 1M
    python scripts/recall_cpu.py --only infini_wide --seeds 1 --trials_1m 50 --threads 2     # the paper's, to 1M
    python scripts/recall_cpu.py --only infini_seg128 --seeds 1 --trials_1m 50 --threads 2   # the paper's, to 1M again

Each run is trained and evaluated once per seed (--seed of every stage: the initialisation and the generated
examples; + 100 for each earlier stage of the run on the same length, whose examples it would draw again), and every
cell is reported as the mean over the seeds with its min and max; the JSON keeps each seed's numbers, and for each
stage how many seeds reached an answer loss below 0.1 (learned the task).
Only the full recipe (no --only, the default seeds and trials, no train.py overrides) writes results/; any other run
writes its JSON and plot into --work, or to --json/--plot (an existing file is replaced only with --force).
Finished trainings and evaluations in --work are reused when they were made with the same settings, so an
interrupted run continues where it stopped; a stage trained with other settings is refused, not replaced.
Only start and middle test the memory: a key in the question's own segment is in reach of local attention.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configurator import read_config_file, resolve_config_path  # noqa: E402
from sample import check_output, pyplot, save_figure, save_report  # noqa: E402

# Each stage fine-tunes the one before on 8x longer examples; all runs take the first two, infini_delta three and
# infini_linear four. Stage 5 (infini_sliding, infini_wide) is 100 more steps on stage 4's length at a lower learning
# rate. infini_seg128 has stages of its own after the fourth (STAGES_OF): the same model with 128-token segments,
# fine-tuned on stage 2's length, then twice on stage 4's (the second time took both seeds tried to 90% at 1M).
STAGES = ('configs/recall_infini.py', 'configs/recall_infini_long.py',
          'configs/recall_infini_18k.py', 'configs/recall_infini_147k.py', 'configs/recall_infini_147k_more.py')
STAGES_OF = {'infini_seg128': STAGES[:4] + ('configs/recall_infini_seg128.py',) +
                              ('configs/recall_infini_147k_seg128.py',) * 2}
STAGE1_LEN = 288
TRAIN_LEN = 2304
MILLION = 1 << 20
SEEDS = '1,2,3'
CONVERGED = 0.1  # the answer's val loss (nats per answer token) below which the key is being copied
LENGTHS = [TRAIN_LEN, 8 * TRAIN_LEN, 64 * TRAIN_LEN, MILLION]
# name, overrides of every stage, {stage: evaluation lengths of its checkpoint} (the stage-1 checkpoint is always
# evaluated at 288). local and full see the same data; full attention is the ceiling at the training length (its cost
# grows with the square of the length), local the floor (it cannot see the key).
RUNS = [
    ('infini_linear', [], {2: LENGTHS, 3: LENGTHS[1:], 4: LENGTHS[2:]}),
    ('infini_delta', ['--mem_update=delta'], {2: LENGTHS, 3: LENGTHS[1:]}),
    # Not the paper's memory: σ = ReLU, which can give filler keys exactly zero weight (model.py, MEMORY_FEATURES).
    ('infini_relu', ['--mem_feature=relu'], {2: LENGTHS, 3: LENGTHS[1:]}),
    ('local', ['--attn=local'], {2: LENGTHS[:2]}),
    ('full', ['--attn=full'], {2: LENGTHS[:1]}),
    # gca: chunks of 16 and a sliding window of 32 (the least it allows: 2 chunks), so that like local attention it
    # sees at most 32 tokens back; the key must be retrieved (passkey.py reports whether it was, per prompt). Top-8
    # as in the paper: with top-2 the retriever settled on the task text's chunks before the copying was learned.
    ('gca', ['--attn=gca', '--gca_chunk=16', '--gca_window=32', '--gca_topk=8', '--gca_lower_layers=1'],
     {2: LENGTHS}),
    # dilated: the longest pattern covers 4096 tokens, so the key is in its reach at 2304 tokens and, at start and
    # middle, out of it at 8x (segments restart every 4096 tokens).
    ('dilated', ['--attn=dilated', '--dilated_segments=(32,128,512,4096)', '--dilated_rates=(1,4,16,128)'],
     {2: LENGTHS[:2]}),
]
# Not in the full recipe, only with --only: the 1M recipe of docs/recall_1m.md (infini_wide is named for the wider
# model, n_embd 96 with 3 heads of 32, which was an override here before stage 1's config took it), evaluated after
# stage 5 from the training length to 1M.
# infini_sliding has a departure from the paper, a sliding window of segment_len tokens in place of its local attention
# (model.py, infini_local='sliding'; the memory is the paper's): about 1.8 hours a seed on 2 threads, an hour of it
# stage 4 (the window scores 2 x 32 keys per query) and 20 min stage 5. infini_wide is the same with the paper's local
# attention, to set beside it on the same curve: about 1.1 hours a seed. infini_seg128 is infini_wide with its segments
# widened to 128 tokens after stage 4 (so that fewer answers run across a boundary; the memory is the paper's): about
# 27 minutes more than infini_wide on 2 threads, 12 each for stages 6 and 7.
TO_1M = {2: LENGTHS[:1], 5: LENGTHS}
EXTRA_RUNS = [
    ('infini_sliding', ['--infini_local=sliding'], TO_1M),
    ('infini_wide', [], TO_1M),
    ('infini_seg128', [], {2: LENGTHS[:1], 6: LENGTHS, 7: LENGTHS}),
]


def stage_seed(seed, configs, stage):
    """train.py's --seed for stage `stage` (from 1) of a run's `configs`: the run's seed + 100 for every earlier stage
    that trained on the same length, whose first examples it would otherwise draw again (stage 5 on stage 4's length:
    + 100; infini_seg128's stage 7 on the length of stages 4 and 6: + 200)."""
    def length(config):
        return read_config_file(resolve_config_path(config))['seq_len']
    return seed + 100 * sum(length(c) == length(configs[stage - 1]) for c in configs[:stage - 1])


def parse_seeds(text):
    """'1-8' or '1,2,5' -> [1, ..., 8] / [1, 2, 5]."""
    try:
        if '-' in text:
            first, last = (int(v) for v in text.split('-'))
            return list(range(first, last + 1))
        return [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use a range like 1-8 or a list like 1,2,5")


def run(cmd, log_path, threads):
    """Run a repo script, its output to log_path; returns the seconds it took. Fails loudly with the log's tail."""
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads)}
    t0 = time.time()
    with open(log_path, 'w') as log:
        done = subprocess.run([sys.executable] + cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-2000:]
        raise SystemExit(f"error: {' '.join(cmd)} failed (log {log_path}):\n{tail}")
    return time.time() - t0


def trained_with(summary):
    """A stage's settings: config and overrides, without where it ran (out_dir, init_from, threads). Summaries
    written before 'settings' was recorded have them in their command."""
    if 'settings' in summary:
        return summary['settings']
    return [a for a in summary['command'].split()[2:] if not a.startswith(('--out_dir=', '--init_from=', '--threads='))]


def config_digest(config):
    """sha256 of a config file's text: a stage is reused only if its config still says what it said then."""
    with open(config, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def not_reusable(done, settings, config, before, stage_before):
    """Why a finished stage (its summary `done`) is not the one asked for now, or None when it is."""
    if trained_with(done) != settings:
        return f"with {' '.join(trained_with(done))}"
    if done.get('config_sha256') != config_digest(config):
        return f"with another {config} (it changed since, or the stage is older than this check)"
    if done.get('init') != before:
        return f"from an earlier stage{stage_before} checkpoint"
    return None


def seed_dir(args, name, seed):
    return os.path.join(args.work, name, f'seed{seed}')


def train(name, overrides, n_stages, seed, args):
    """The stages in turn, each from the checkpoint of the one before; returns what each took and ended with.
    A stage is done when its checkpoint and summary.json are there; it is reused when its settings and its config
    file's text are these and it was fine-tuned from the checkpoint now in the stage before, and refused (not
    replaced) otherwise."""
    stages, init, before = [], [], None
    configs = STAGES_OF.get(name, STAGES)
    for i, config in enumerate(configs[:n_stages]):
        stage_dir = os.path.join(seed_dir(args, name, seed), f'stage{i + 1}')
        summary, ckpt = os.path.join(stage_dir, 'summary.json'), os.path.join(stage_dir, 'ckpt.pt')
        seed_arg = f'--seed={stage_seed(seed, configs, i + 1)}'
        settings = [config, *overrides, seed_arg, *args.train_args]
        done = None
        if os.path.exists(summary) and os.path.exists(ckpt):
            with open(summary) as f:
                done = json.load(f)
            why = not_reusable(done, settings, config, before, i)
            if why:
                raise SystemExit(f"error: {stage_dir} was trained {why}, not {' '.join(settings)}; delete it and the "
                                 f"stages after it to train them again, or use another --work")
        if done is None:  # not started, or stopped before its checkpoint and summary were both written
            if os.path.exists(summary):
                os.remove(summary)
            os.makedirs(stage_dir, exist_ok=True)
            cmd = ['train.py', config, *overrides, seed_arg, *init, f'--out_dir={stage_dir}',
                   f'--threads={args.threads}', *args.train_args]
            if os.path.exists(ckpt):  # a stage stopped before its summary: this folder's own, trained again
                print(f"[{name} seed {seed}] {ckpt} has no summary (an interrupted stage): training it again",
                      flush=True)
                cmd.append('--overwrite=True')
            print(f"[{name} seed {seed}] python {' '.join(cmd)}", flush=True)
            seconds = run(cmd, os.path.join(stage_dir, 'train.out'), args.threads)
            log = os.path.join(stage_dir, 'log.jsonl')
            with open(log) if os.path.exists(log) else open(os.devnull) as f:
                evals = [r for r in map(json.loads, f) if r.get('val_loss') is not None]
            if not os.path.exists(ckpt) or not evals:
                raise SystemExit(f"error: train.py saved no checkpoint in {stage_dir} (log {stage_dir}/train.out); "
                                 f"a stage needs at least one step (--max_iters=1 or more)")
            done = dict(command='python ' + ' '.join(cmd), settings=settings, config_sha256=config_digest(config),
                        init=before,
                        trained=time.strftime('%Y-%m-%dT%H:%M:%S'), seconds=round(seconds, 1), steps=evals[-1]['iter'],
                        val_answer_loss=evals[-1]['val_loss'], gates=evals[-1].get('gates'))
            with open(summary, 'w') as f:
                json.dump(done, f, indent=1)
        stages.append(done)
        print(f"[{name} seed {seed}] stage {i + 1}: {done['seconds'] / 60:.1f} min, answer loss "
              f"{done['val_answer_loss']:.4f}", flush=True)
        init, before = [f"--init_from={ckpt}"], done.get('trained')
    return stages


def evaluate(name, seed, stage, length, trained, args):
    """passkey.py on the stage's checkpoint at one length; its report is reused when it was made with these trials and
    depths from this checkpoint (`trained`: when the stage finished)."""
    folder = seed_dir(args, name, seed)
    ckpt = os.path.join(folder, f'stage{stage}', 'ckpt.pt')
    path = os.path.join(folder, f"{'' if stage == 2 else f'stage{stage}_'}passkey_{length}.json")
    trials, depths = args.trials, 'start,middle,end'
    if length > 8 * TRAIN_LEN:  # the long ones: fewer keys; at 1M only the depths that need memory
        trials, depths = (args.trials_1m, 'start,middle') if length == MILLION else (args.trials_64x, depths)
    report = None
    if os.path.exists(path):
        with open(path) as f:
            report = json.load(f)
        made = (report['trials'], ','.join(dict.fromkeys(r['depth'] for r in report['results'])), report.get('trained'),
                'offsets' in report)  # reports from before the prompts' lengths were spread over a segment have none
        if made != (trials, depths, trained, True):
            print(f"[{name} seed {seed}] {path} was made with trials={made[0]}, depths {made[1]} from the checkpoint "
                  f"of {made[2]}{'' if made[3] else ', every prompt at one length'}; evaluating again", flush=True)
            report = None
    if report is None:
        cmd = ['passkey.py', '--ckpt', ckpt, '--len', str(length), '--trials', str(trials), '--depth', depths,
               '--chunk', '4096', '--threads', str(args.threads), '--json', path]
        print(f"[{name} seed {seed}] python {' '.join(cmd)}", flush=True)
        run(cmd, path.replace('.json', '.out'), args.threads)
        with open(path) as f:
            report = json.load(f)
        report['trained'] = trained  # which checkpoint it measured (the stage is retrained in the same folder)
        save_report(report, path, None, None)
    cells = [{'stage': stage, **{k: v for k, v in r.items() if k != 'rows'}} for r in report['results']]
    for cell in cells:
        retrieved = '' if cell.get('key_retrieved') is None else \
            f", key retrieved {100 * cell['key_retrieved']:.0f}% (chance {100 * cell['key_retrieved_chance']:.2g}%)"
        print(f"[{name} seed {seed}] stage {stage} {cell['len']:>9,} {cell['depth']:>6}: "
              f"exact {100 * cell['exact']:5.1f}%"
              f"{retrieved}  ({cell['trials']} keys, {cell['seconds']:.0f} s)", flush=True)
    return cells


def over_seeds(per_seed):
    """{seed: {'stages': [...], 'eval': [cells]}} -> (cells, learned): each (stage, length, depth) cell averaged over
    the seeds (metrics that a seed lacks, like gca's key_retrieved when no key lay beyond its window, are averaged
    over the seeds that have them), with exact's min, max and per-seed values; and per stage how many seeds ended
    it with an answer loss below CONVERGED."""
    groups = {}
    for seed, result in per_seed.items():
        for cell in result['eval']:
            groups.setdefault((cell['stage'], cell['len'], cell['depth']), {})[seed] = cell
    cells = []
    for (stage, length, depth), by_seed in groups.items():
        cell = dict(stage=stage, len=length, depth=depth, trials=next(iter(by_seed.values()))['trials'],
                    seeds=len(by_seed))
        for metric in ('exact', 'token_acc', 'key_retrieved', 'key_retrieved_chance'):
            values = [c[metric] for c in by_seed.values() if c.get(metric) is not None]
            if values:  # every seed has exact and token_acc
                cell[metric] = sum(values) / len(values)
        exact = {seed: c['exact'] for seed, c in by_seed.items()}
        cells.append(dict(cell, exact_min=min(exact.values()), exact_max=max(exact.values()), exact_by_seed=exact))
    n_stages = max(len(result['stages']) for result in per_seed.values())
    learned = [sum(len(result['stages']) > i and result['stages'][i]['val_answer_loss'] < CONVERGED
                   for result in per_seed.values()) for i in range(n_stages)]
    return cells, learned


def print_summary(results, seeds):
    """Exact match per run, stage and length: the mean over the seeds (min-max), start / middle / end."""
    print(f"\nexact match, %: mean over seeds {', '.join(map(str, seeds))} (min-max); answer loss < {CONVERGED} "
          f"at the end of each stage in how many seeds")
    for name, r in results.items():
        print(f"{name}: learned (stage 1, 2, ...) {' '.join(f'{n}/{len(seeds)}' for n in r['learned'])}")
        for stage, length in dict.fromkeys((c['stage'], c['len']) for c in r['eval']):
            cells = [c for c in r['eval'] if (c['stage'], c['len']) == (stage, length)]
            text = '  '.join(f"{c['depth']} {100 * c['exact']:.0f} ({100 * c['exact_min']:.0f}-"
                             f"{100 * c['exact_max']:.0f})" for c in cells)
            print(f"  stage {stage} {length:>9,}: {text}")


def git_commit():
    """The commit the scripts ran from (taken when the run starts: it lasts hours, and HEAD may move meanwhile), marked
    when tracked files differed from it; None outside a git checkout."""
    try:
        head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(['git', 'diff', '--quiet', 'HEAD', '--'], cwd=REPO, capture_output=True).returncode
    except OSError:
        return None
    return (head + (' with uncommitted changes' if changed == 1 else '')) or None


def plot(results, path):
    """Exact match against length, start and middle (the depths that need memory): a colour per run, a marker per
    stage, solid for keys at the start and dashed for the middle; the mean over the seeds, bars from min to max."""
    plt = pyplot('plot')
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(11, 5.5))
    markers = {2: 'o', 3: 's', 4: '^', 5: 'v', 6: 'D', 7: 'P'}
    for color, (name, r) in zip(plt.rcParams['axes.prop_cycle'].by_key()['color'] * 2, results.items()):
        for stage in sorted({c['stage'] for c in r['eval'] if c['stage'] > 1}):
            for depth, line in (('start', '-'), ('middle', '--')):
                cells = sorted((c['len'], 100 * c['exact'], 100 * (c['exact'] - c['exact_min']),
                                100 * (c['exact_max'] - c['exact'])) for c in r['eval']
                               if (c['stage'], c['depth']) == (stage, depth))
                if cells:
                    lengths, mean, below, above = zip(*cells)
                    ax.errorbar(lengths, mean, yerr=(below, above), fmt=line, marker=markers.get(stage, 'x'),
                                color=color, capsize=3, label=f"{name}, stage {stage}, key at {depth}")
    ax.set_xscale('log', base=2)
    ax.set(xlabel='prompt length (tokens)', ylabel='exact match, % (mean over seeds; bars: min-max)',
           ylim=(-3, 103),
           title=f'passkey retrieval; stage 2 trained on {TRAIN_LEN:,}-token examples, 3 on {8 * TRAIN_LEN:,}, '
                 f'4-6 on {64 * TRAIN_LEN:,}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small', loc='center left', bbox_to_anchor=(1.01, 0.5))
    return save_figure(plt, fig, path)


def main(argv=None):
    # allow_abbrev=False: the rest goes to train.py, so --seed=3 must not be read as an abbreviation of --seeds
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0], allow_abbrev=False,
                                epilog='Any other --key=value is passed to train.py (e.g. --max_iters=300).')
    p.add_argument('--work', default='out-recall', help='checkpoints and per-run evaluations (reused)')
    p.add_argument('--only', default=None, help='comma-separated run names: ' + ', '.join(r[0] for r in RUNS) +
                   ' (the full recipe), ' + ', '.join(r[0] for r in EXTRA_RUNS) + ' (only when named)')
    p.add_argument('--trials', type=int, default=100, help='keys per depth at 1x and 8x the training length')
    p.add_argument('--trials_64x', type=int, default=20, help='keys per depth at 64x the training length')
    p.add_argument('--trials_1m', type=int, default=10, help='keys per depth (start, middle) at 1M tokens')
    p.add_argument('--seeds', type=parse_seeds, default=parse_seeds(SEEDS),
                   help=f'train.py seeds, each run trained once per seed (default {SEEDS})')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--note', default=None, help='a line for the JSON: how busy the machine was, what ran beside')
    p.add_argument('--json', default=None, help='default: results/recall_cpu.json for the full recipe, else in --work')
    p.add_argument('--plot', default=None, help='default: results/recall_cpu.png for the full recipe, else in --work')
    p.add_argument('--force', action='store_true', help='replace an existing --json / --plot')
    args, args.train_args = p.parse_known_args(argv)  # the rest: --key=value overrides for train.py
    names, every = [r[0] for r in RUNS], [r[0] for r in RUNS + EXTRA_RUNS]
    only = [n.strip() for n in args.only.split(',') if n.strip()] if args.only is not None else names
    unknown = set(only) - set(every)
    if unknown or not only:
        raise SystemExit(f"error: --only {args.only!r}: {f'unknown run(s) {sorted(unknown)}' if unknown else 'no run'};"
                         f" choose from {', '.join(every)} (comma-separated)")
    for flag in ('trials', 'trials_64x', 'trials_1m', 'threads'):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag} {getattr(args, flag)} must be at least 1")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f"error: --seeds must name at least one seed, each once (got {args.seeds})")
    if any(a.startswith('--seed=') for a in args.train_args):
        raise SystemExit("error: give seeds with --seeds (every stage of a run trains with its seed), not --seed=")

    # Tracked results come only from the recipe itself; any other run (a smoke test) writes into its work folder.
    trials = [f"--{k} {getattr(args, k)}" for k in ('trials', 'trials_64x', 'trials_1m')
              if getattr(args, k) != p.get_default(k)]
    departures = ([f"--only {','.join(only)}"] if set(only) != set(names) else []) + trials + args.train_args
    if args.seeds != parse_seeds(SEEDS):
        departures.append(f"--seeds {','.join(map(str, args.seeds))}")
    where = os.path.join(args.work, 'recall_cpu') if departures else 'results/recall_cpu'
    json_path = where + '.json' if args.json is None else args.json
    plot_path = where + '.png' if args.plot is None else args.plot
    if not departures and plot_path and importlib.util.find_spec('matplotlib') is None:
        raise SystemExit(f"error: matplotlib is not installed: the full run would update {json_path} and leave "
                         f"{plot_path} stale; pip install matplotlib (or pass --plot '' to draw none)")
    os.makedirs(args.work, exist_ok=True)
    check_output(json_path, '--json', replace=args.force or args.json is None)  # before hours of work, not after
    check_output(plot_path, '--plot', replace=args.force or args.plot is None)
    if departures:
        print(f"not the full recipe ({' '.join(departures)}): the report goes to {json_path}", flush=True)

    commit = git_commit()
    chosen = [run for run in RUNS + EXTRA_RUNS if run[0] in only]
    per_seed = {name: {} for name, _, _ in chosen}
    for seed in args.seeds:  # every run of one seed before the next: `--seeds 1` then reports what a stopped run did
        for name, overrides, lengths in chosen:
            stages = train(name, overrides, max(lengths), seed, args)
            cells = [cell for stage, at in sorted({1: [STAGE1_LEN], **lengths}.items()) for length in at
                     for cell in evaluate(name, seed, stage, length, stages[stage - 1].get('trained'), args)]
            per_seed[name][str(seed)] = dict(stages=stages, minutes=round(sum(s['seconds'] for s in stages) / 60, 2),
                                             eval=cells)
    results = {}
    for name, runs in per_seed.items():
        cells, learned = over_seeds(runs)
        minutes = [r['minutes'] for r in runs.values()]
        n_stages = len(next(iter(runs.values()))['stages'])
        results[name] = dict(configs=STAGES_OF.get(name, STAGES)[:n_stages], eval=cells, learned=learned,
                             minutes=round(sum(minutes) / len(minutes), 2),
                             minutes_max=max(minutes), seeds=runs)
    print_summary(results, args.seeds)
    report = dict(train_len=TRAIN_LEN, seeds=args.seeds, git_commit=commit,
                  date=time.strftime('%Y-%m-%d'),
                  machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                               load_at_end=os.getloadavg()),
                  trials=args.trials, trials_64x=args.trials_64x, trials_1m=args.trials_1m,
                  command='python scripts/recall_cpu.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
                  note=args.note, runs=results)
    save_report(report, json_path, plot_path, lambda path: plot(results, path))


if __name__ == '__main__':
    main()
