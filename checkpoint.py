"""
Checkpoints: written atomically, read with torch.load(weights_only=True).

A checkpoint is a dict of tensors and plain python containers only (so weights_only loading accepts it):
    {'model': state_dict, 'model_args': asdict(GPTConfig), 'tokenizer': 'gpt2' | 'byte', 'optimizer': state_dict,
     'iter_num': int, 'best_val_loss': float, 'config': train config dict, 'rng': [per rank], 'data_rng': [per rank]}
Used by train.py (save, resume, fine-tune) and by passkey.py / sample.py / eval_ppl.py through load_model().
"""

import os
import shutil
import tempfile
import warnings
from dataclasses import asdict

import torch


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
