"""
How surely does a recall recipe learn? Passkey recall is learned by a sudden drop of the answer's loss, at a step
that moves with the seed (initialisation and generated examples both follow it) and with the CPU thread count (the
float rounding). This trains one config once per seed x thread count and reports, for each run, the first step at
which the answer's val loss fell below 0.1 (evaluated every --eval_every steps), the final val loss, and passkey.py's
exact match on new keys at start and middle; then min / median / max over the runs and how many never got there.

    python scripts/convergence.py                    # the quick start: seeds 1-8 x 1 and 2 threads (~50 min)
    python scripts/convergence.py --config recall_infini --seeds 1-4 --threads 2 --json out-convergence/recall.json

Runs are subprocesses (train.py, then passkey.py), one at a time, in --work/<config>/seed<S>_t<T>; a finished run
whose settings match is reused, one with other settings is refused (not replaced): give each sweep its own --work.
The JSON (default --work/<config>.json) is not replaced without --force.
"""
import argparse
import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from recall_cpu import CONVERGED, parse_seeds, run  # noqa: E402 (run: a repo script in a subprocess, its threads)
from sample import check_output, save_report  # noqa: E402


def one_run(args, seed, threads):
    """Train (unless done with the same settings) and evaluate one seed x thread count; returns its summary."""
    folder = os.path.join(args.work, args.config, f"seed{seed}_t{threads}")
    summary_path = os.path.join(folder, 'summary.json')
    settings = [args.config, f"--seed={seed}", f"--threads={threads}", f"--eval_interval={args.eval_every}",
                *args.overrides]
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary['settings'] != settings:  # another run's checkpoint: not ours to replace
            raise SystemExit(f"error: {folder} holds a run trained with {' '.join(summary['settings'])}, not "
                             f"{' '.join(settings)}; use another --work, or delete the folder to train it again")
        if summary['trials'] == args.trials:
            return summary
    os.makedirs(folder, exist_ok=True)
    seconds = run(['train.py', *settings, f"--out_dir={folder}", '--overwrite=True'],
                  os.path.join(folder, 'train.log'), threads)
    with open(os.path.join(folder, 'log.jsonl')) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    val = [(r['iter'], r['val_loss']) for r in rows if r.get('val_loss') is not None]
    below = [it for it, loss in val if loss < CONVERGED]
    run(['passkey.py', '--ckpt', os.path.join(folder, 'ckpt.pt'), '--len', str(args.len), '--depth', 'start,middle',
         '--trials', str(args.trials), '--batch', '25', '--threads', '1', '--json', os.path.join(folder, 'passkey.json')],
        os.path.join(folder, 'passkey.log'), 1)
    with open(os.path.join(folder, 'passkey.json')) as f:
        results = json.load(f)['results']
    exact = {r['depth']: r['exact'] for r in results}
    rows = [row for r in results for row in r['rows']]
    split = {name: [row['exact'] for row in rows if row['answer_crosses_segment'] == across]
             for name, across in (('exact_inside_segment', False), ('exact_across_segments', True))}
    summary = dict(settings=settings, seed=seed, threads=threads, trials=args.trials, train_seconds=round(seconds, 1),
                   converged_step=below[0] if below else None, final_val_loss=val[-1][1], steps=val[-1][0],
                   exact_start=exact['start'], exact_middle=exact['middle'],
                   **{name: sum(v) / len(v) if v else None for name, v in split.items()})
    with open(summary_path, 'w') as f:
        json.dump(summary, f, indent=1)
    return summary


def spread(values):
    return f"{min(values)} / {statistics.median(values):g} / {max(values)}" if values else "-"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--config', default='quickstart', help='a file in configs/')
    p.add_argument('--seeds', type=parse_seeds, default=parse_seeds('1-8'))
    p.add_argument('--threads', default='1,2', help='CPU thread counts, comma-separated')
    p.add_argument('--eval_every', type=int, default=50, help='val loss every this many steps')
    p.add_argument('--len', type=int, default=288, help='passkey prompt length for the exact-match check')
    p.add_argument('--trials', type=int, default=50, help='new keys per depth (start, middle)')
    p.add_argument('--work', default='out-convergence')
    p.add_argument('--json', default=None, help='default: WORK/CONFIG.json')
    p.add_argument('--force', action='store_true', help='replace an existing --json')
    p.add_argument('overrides', nargs='*', help='train.py --key=value overrides for every run (after --)')
    args = p.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(',')]
    except ValueError:
        raise SystemExit(f"error: --threads {args.threads!r}: use counts like 1,2")
    if not args.seeds or args.eval_every < 1 or args.trials < 1 or min(threads) < 1:
        raise SystemExit("error: --seeds, --threads, --eval_every and --trials must name at least one run and be >= 1")
    json_path = args.json or os.path.join(args.work, f"{args.config}.json")
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    check_output(json_path, '--json', replace=args.force)

    runs = []
    for t in threads:
        for seed in args.seeds:
            s = one_run(args, seed, t)
            runs.append(s)
            step = s['converged_step'] if s['converged_step'] is not None else 'never'
            across = '' if s.get('exact_across_segments') is None else \
                f" (answers across two segments: {100 * s['exact_across_segments']:.0f}%)"
            print(f"seed {seed:3d}, {t} thread{'s' if t > 1 else ''}: answer loss < {CONVERGED} at step {step}; final "
                  f"{s['final_val_loss']:.4f}; exact start {100 * s['exact_start']:.0f}%, middle "
                  f"{100 * s['exact_middle']:.0f}%{across}; {s['train_seconds']:.0f} s", flush=True)
    steps = [r['converged_step'] for r in runs if r['converged_step'] is not None]
    exact = [min(r['exact_start'], r['exact_middle']) for r in runs]
    print(f"{args.config}: converged in {len(steps)} of {len(runs)} runs; step min / median / max {spread(steps)}; "
          f"worst exact match (start or middle) {100 * min(exact):.0f}%")
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    save_report(dict(config=args.config, overrides=args.overrides, eval_every=args.eval_every, len=args.len,
                     trials=args.trials, threshold=CONVERGED, load_average_at_end=load, runs=runs,
                     command=' '.join(['python', 'scripts/convergence.py'] + list(sys.argv[1:] if argv is None else argv))),
                json_path, None, None)
    return runs


if __name__ == '__main__':
    main()
