"""
Checkpoints: written atomically, read with torch.load(weights_only=True).

A checkpoint is a dict of tensors and plain python containers only (so weights_only loading accepts it):
    {'model': state_dict, 'model_args': asdict(GPTConfig), 'tokenizer': 'gpt2' | 'byte', 'optimizer': state_dict,
     'iter_num': int, 'best_val_loss': float, 'config': train config dict, 'rng': [per rank], 'data_rng': [per rank]}
Used by train.py (save, resume, fine-tune; the out_dir checks and the random state it saves are here too) and by
passkey.py / sample.py / eval_ppl.py through load_model().
"""

import os
import random
import shutil
import signal
import tempfile
import threading
import time
import warnings
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm


class CheckpointError(RuntimeError):
    """A user-facing checkpoint problem (missing, unreadable, unwritable, another architecture); one line."""


def first_line(e):
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def save_checkpoint(path, obj):
    """Write obj to path atomically: a temp file in the same directory, fsync, then os.replace. A crash or a
    full disk at any point leaves the previous file at `path` untouched (a rename within a directory is atomic)."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=directory)
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes must be on disk before the rename makes them the checkpoint
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private (0600); give it a normal file's mode
        os.replace(tmp, path)
        tmp = None
        if hasattr(os, 'O_DIRECTORY'):  # make the rename itself durable (POSIX)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except Exception as e:
        # torch.save reports a full disk as a cryptic RuntimeError from its zip writer ("unexpected pos ..."), not
        # as an OSError: look at the free space while the partial temp file still fills the disk.
        reason = first_line(e)
        try:
            free = shutil.disk_usage(directory).free
            if free < 16 * 2**20:
                reason = f"the disk is full ({free / 2**20:.1f} MiB free; {reason})"
        except OSError:
            pass
        previous = "the previous checkpoint is intact" if os.path.exists(path) else "no previous checkpoint exists"
        raise CheckpointError(f"could not write checkpoint {path}: {reason} ({previous})") from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path, device='cpu'):
    """Read a checkpoint written by save_checkpoint; a missing, unreadable or damaged file is one CheckpointError
    line. torch.load's own messages are not passed on: for a file that is not a zip of tensors (random bytes, a
    pickle) it advises loading with weights_only=False, i.e. running whatever code the file holds, and for a
    truncated one it prints a long internal miniz message."""
    if os.path.isdir(path):
        inside = os.path.join(path, 'ckpt.pt')
        hint = f"did you mean {inside}?" if os.path.isfile(inside) else "pass the path of a ckpt.pt file"
        raise CheckpointError(f"{path} is a folder, not a checkpoint: {hint}")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found")
    damaged = f"not a checkpoint written by train.py, or damaged: {path}"
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4" from a file that is no checkpoint
            warnings.simplefilter('ignore')
            ckpt = torch.load(path, map_location=device, weights_only=True)
    except OSError as e:  # the file is there but cannot be read (permissions, I/O error)
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or first_line(e)}") from e
    except Exception as e:
        raise CheckpointError(damaged) from e
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_args' not in ckpt:
        raise CheckpointError(damaged)
    return ckpt


def build_model(model_args, path):
    """GPT(GPTConfig(**model_args)), with one clear line when this model.py cannot build it."""
    from model import GPT, GPTConfig  # imported here so that save/load work without the model
    try:
        return GPT(GPTConfig(**model_args))
    except TypeError as e:  # a setting this model.py does not have (a checkpoint from another version)
        raise CheckpointError(f"checkpoint {path} was written by a different model.py: {first_line(e)}") from e
    except ValueError as e:  # e.g. attn='gca' in a checkpoint from a newer version
        raise CheckpointError(f"checkpoint {path} cannot be built by this model.py: {first_line(e)}") from e


def load_state_dict(model, ckpt, path):
    """Load the checkpoint's weights into model; another architecture gives one line naming what differs."""
    state_dict = {k.removeprefix('_orig_mod.'): v for k, v in ckpt['model'].items()}  # torch.compile's prefix
    ckpt_args, model_args = ckpt['model_args'], asdict(model.config)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        differ = [k for k in model_args if k in ckpt_args and ckpt_args[k] != model_args[k]]
        if differ:
            what = '; '.join(f"{k}: checkpoint {ckpt_args[k]!r}, model {model_args[k]!r}" for k in differ)
        else:  # the config agrees but the weights do not (an edited checkpoint): name the first mismatch
            lines = [l.strip() for l in str(e).splitlines()]
            what = next((l for l in lines if l.startswith(('size mismatch', 'Missing key', 'Unexpected key'))),
                        first_line(e))[:300]
        raise CheckpointError(f"checkpoint {path} holds another architecture ({what})") from e


def load_model(path, device='cpu'):
    """Returns a pair (model, ckpt): the GPT built from the checkpoint's model_args with its weights, in eval mode
    on device, and the checkpoint dict itself (model_args, tokenizer, iter_num, config, ...). Used by passkey.py,
    sample.py and eval_ppl.py:
        model, ckpt = load_model('out-quickstart/ckpt.pt')"""
    ckpt = load_checkpoint(path, 'cpu')
    model = build_model(ckpt['model_args'], path)
    load_state_dict(model, ckpt, path)
    model.to(device).eval()
    return model, ckpt


# -----------------------------------------------------------------------------
# train.py: its out_dir, the checkpoint it starts from, the state it resumes

def refuse_to_replace(ckpt_path, init_from, overwrite):
    """Before any work: a fresh run or a fine-tune must not replace a checkpoint already in out_dir (nor truncate
    its log) unless asked to."""
    if init_from != 'resume' and os.path.exists(ckpt_path) and not overwrite:
        raise CheckpointError(f"{ckpt_path} exists and init_from={init_from!r} would replace it: continue that run "
                              f"with --init_from=resume, choose another --out_dir, or replace it with --overwrite=True")


def check_out_dir(out_dir):
    """Make out_dir if needed and check that it is writable. Returns the folders it made (deepest last), so that
    a run that fails before writing anything can remove them again (remove_if_empty)."""
    made, d = [], os.path.abspath(out_dir)
    while not os.path.exists(d) and os.path.dirname(d) != d:
        made.insert(0, d)
        d = os.path.dirname(d)
    try:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, '.write_test'), 'w') as f:
            f.write('ok')
        os.remove(os.path.join(out_dir, '.write_test'))
    except OSError as e:
        remove_if_empty(made)
        raise CheckpointError(f"cannot write to out_dir={out_dir!r} ({e.strerror or e}); choose another with "
                              f"--out_dir=...")
    return made


def remove_if_empty(made):
    """Remove the folders check_out_dir made, deepest first, as long as they are still empty."""
    for d in reversed(made):
        try:
            os.rmdir(d)  # fails, and keeps the folder, unless it is empty
        except OSError:
            return


def load_init_checkpoint(init_from, ckpt_path):
    """(checkpoint, its path) for init_from = 'resume' (ckpt_path) | the path of a ckpt.pt; (None, None) for
    'scratch'."""
    if init_from == 'scratch':
        return None, None
    resume = init_from == 'resume'
    path = ckpt_path if resume else init_from
    if resume and not os.path.exists(path):
        raise CheckpointError(f"nothing to resume: {path} not found (start with --init_from=scratch; a run in "
                              f"another out_dir resumes with its --out_dir=...)")
    if not resume and not os.path.exists(path) and os.sep not in path and not path.endswith('.pt'):
        raise CheckpointError(f"init_from={path!r} must be 'scratch', 'resume' or the path of a checkpoint file")
    if not resume and os.path.realpath(path) == os.path.realpath(ckpt_path):
        raise CheckpointError(f"fine-tuning from {path} would overwrite it with the fine-tuned model; "
                              f"choose another --out_dir (or --init_from=resume to continue that run)")
    return load_checkpoint(path, 'cpu'), path


def init_model(model_args, asked, ckpt, path, data_meta, resume):
    """A new GPT(model_args) when ckpt is None, else the checkpoint's architecture with its weights. asked: the
    model keys a config file or the command line set: to resume they must agree with the checkpoint; a fine-tune
    may change them (e.g. dropout, segment_len) as long as the weights still fit."""
    from model import GPT, GPTConfig
    if ckpt is None:
        return GPT(GPTConfig(**model_args, vocab_size=-(-data_meta['vocab_size'] // 64) * 64))  # 64: faster matmuls
    if ckpt.get('tokenizer') != data_meta['tokenizer']:
        raise CheckpointError(f"checkpoint {path} was trained with the {ckpt.get('tokenizer')!r} tokenizer, "
                              f"but the data uses {data_meta['tokenizer']!r}")
    differ = {k: v for k, v in asked.items() if ckpt['model_args'].get(k) != v}
    if resume and differ:
        what = '; '.join(f"{k}: checkpoint {ckpt['model_args'].get(k)!r}, config {v!r}" for k, v in differ.items())
        raise CheckpointError(f"cannot resume from {path}: it holds another architecture ({what}); "
                              f"use the config it was trained with, or another --out_dir")
    model_args = {**ckpt['model_args'], **asked}
    if model_args['vocab_size'] < data_meta['vocab_size']:
        raise CheckpointError(f"checkpoint {path} has vocab_size {model_args['vocab_size']}, fewer than the "
                              f"data's {data_meta['vocab_size']}")
    model = build_model(model_args, path)
    load_state_dict(model, ckpt, path)
    return model


def rng_state(data_gen):
    """This process's random state, as tensors and plain python values (checkpoints load with weights_only)."""
    np_state = np.random.get_state()
    return {'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            'numpy': [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            'python': random.getstate(),
            'data': data_gen.get_state()}


def set_rng_state(state, data_gen):
    torch.set_rng_state(state['torch'])
    if state['cuda'] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    data_gen.set_state(state['data'])


def restore_training_state(optimizer, ckpt, data_gen, rank, world, seed, dp_rank):
    """Resume: AdamW's moments and step counts, and every process's random state, from the checkpoint.
    The optimizer's hyperparameters (lr_scale, weight decay, betas) stay those of the current config."""
    hyper = [{k: v for k, v in g.items() if k != 'params'} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt['optimizer'])
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"the optimizer state in the checkpoint does not fit this model: {e}")
    for group, h in zip(optimizer.param_groups, hyper):
        group.update(h)
    states = ckpt['rng']
    if len(states) == world:
        set_rng_state({**states[rank], 'data': ckpt['data_rng'][rank]}, data_gen)
    else:  # another number of processes: the windows cannot continue exactly; reseed deterministically
        if rank == 0:
            print(f"note: the checkpoint was written by {len(states)} processes and this run has {world}: the "
                  f"training windows are reseeded, so the run does not continue bit for bit")
        data_gen.manual_seed(seed + dp_rank + 7919 * ckpt['iter_num'])


def gather(obj, world):
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


class Saver:
    """Writes out_dir/ckpt.pt with everything an exact resume needs (every process's random state included) and
    remembers the last step saved."""

    def __init__(self, path, model, optimizer, cfg, data_gen, tokenizer, world, master, last_step=None):
        self.path, self.model, self.optimizer, self.cfg = path, model, optimizer, cfg
        self.data_gen, self.tokenizer, self.world, self.master = data_gen, tokenizer, world, master
        self.last_step = last_step  # None: nothing written by this run or the one it resumes

    def save(self, iter_num, best_val_loss, reason):
        if self.last_step == iter_num:
            return
        states = gather(rng_state(self.data_gen), self.world)  # every process takes part
        if self.master:
            save_checkpoint(self.path, {
                'model': self.model.state_dict(), 'model_args': asdict(self.model.config), 'tokenizer': self.tokenizer,
                'optimizer': self.optimizer.state_dict(), 'iter_num': iter_num, 'best_val_loss': best_val_loss,
                'config': self.cfg, 'rng': [{k: v for k, v in s.items() if k != 'data'} for s in states],
                'data_rng': [s['data'] for s in states]})
            tqdm.write(f"step {iter_num}: saved {self.path} ({reason})")
        self.last_step = iter_num

    def last_good(self):
        return f"{self.path} (step {self.last_step})" if self.last_step is not None else \
            "none (no checkpoint was written yet)"


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM: finish the current step, save a checkpoint, exit. Stopping between steps keeps
    the saved state consistent, so a resumed run continues exactly. A repeat within 2 s is the same request
    (torchrun forwards the terminal's Ctrl-C to workers that already got it); a later one quits without saving."""

    def __init__(self, verbose):
        self.signum, self.time, self.verbose, self.previous = None, 0.0, verbose, {}

    def __call__(self, signum, frame):
        if self.signum is not None:
            if time.time() - self.time < 2.0:
                return
            raise KeyboardInterrupt
        self.signum, self.time = signum, time.time()
        if self.verbose:
            tqdm.write(f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                       f"(press Ctrl-C again to quit without saving)")

    def install(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self)

    def uninstall(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
