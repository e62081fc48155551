"""
Config for train.py: config files of plain assignments, then `--key=value` overrides (wherever they stand in argv).

    python train.py configs/pg19_infini.py --batch_size=2 --compile=False

A config file may be named `configs/X.py`, `config/X.py`, `X.py` or just `X`; all mean configs/X.py.
Unlike nanoGPT's configurator (which exec()s both), nothing is executed: a config file is parsed with `ast`
and may hold only `key = <literal>` lines, and an override's value is parsed with `ast.literal_eval` and
must have the type of the key's default. Every mistake becomes one ConfigError line saying what to do.
Then the whole config is checked (check_config: values, and the model's own checks, before any data is made), and
--init_from=resume takes the checkpoint's training settings unless the command line overrides them (resume_settings).
"""

import ast
import difflib
import os
from dataclasses import fields

from model import GPTConfig
from sample import too_many_threads

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')


MODEL_KEYS = [f.name for f in fields(GPTConfig) if f.name != 'vocab_size']
# Keys that describe this machine and this invocation, not the run: on resume they come from the command line and
# config file as given; every other key comes from the checkpoint unless overridden on the command line.
MACHINE_KEYS = ('init_from', 'overwrite', 'out_dir', 'device', 'dtype', 'compile', 'backend', 'peak_flops')


class ConfigError(ValueError):
    """A user-facing config mistake; train.py prints it as one line."""


def resolve_config_path(name):
    """configs/X.py, config/X.py, X.py and X all name configs/X.py; an existing file elsewhere is taken as is."""
    if os.path.isfile(name):
        return name
    base = name.replace('\\', '/')
    for prefix in ('./', 'configs/', 'config/'):
        if base.startswith(prefix):
            base = base[len(prefix):]
    base = base[:-3] if base.endswith('.py') else base
    path = os.path.join(CONFIG_DIR, base + '.py')
    if os.path.isfile(path):
        return path
    available = available_configs()
    hint = difflib.get_close_matches(base, available, n=1)
    hint = f"did you mean {hint[0]!r}? " if hint else ''
    raise ConfigError(f"config file {name!r} not found (looked for configs/{base}.py); {hint}"
                      f"available: {', '.join(available)}")


def available_configs():
    if not os.path.isdir(CONFIG_DIR):
        return []
    return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith('.py') and not f.startswith('_'))


def read_config_file(path):
    """Parse a config file into {key: value} without running it: only `key = <literal>` lines are allowed."""
    try:
        with open(path, encoding='utf-8') as f:
            source = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}")
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}")
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring
        where = f"{path}:{node.lineno}"
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ConfigError(f"{where}: config files hold only plain assignments like `batch_size = 8` "
                              f"(found `{ast.get_source_segment(source, node) or type(node).__name__}`)")
        try:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            value = ast.get_source_segment(source, node.value)
            raise ConfigError(f"{where}: the value of {node.targets[0].id} must be a literal (a number, string, "
                              f"True/False/None or a tuple of them), not `{value}`")
    return values


def check_key(key, defaults):
    if key not in defaults:
        close = difflib.get_close_matches(key, list(defaults), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; `python train.py --help` lists the keys"
        raise ConfigError(f"unknown config key {key!r}{hint}")


def coerce(key, value, default):
    """Return value converted to the type of default, or raise ConfigError. None as a default accepts anything."""
    def wrong(expected):
        return ConfigError(f"{key}={value!r} has the wrong type: expected {expected} (default: {default!r})")

    if default is None:
        return value
    if isinstance(default, bool):  # before int: bool is a subclass of int
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ('true', 'false'):
            return value.lower() == 'true'
        raise wrong("True or False")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # --max_iters=1e5
            return int(value)
        raise wrong("an integer")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise wrong("a number")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        if default == 'auto' and isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # `threads = 2` in a config file: keys that default to 'auto' also take a number
        raise wrong("a string")
    if isinstance(default, (tuple, list)):
        if isinstance(value, (tuple, list)):
            if default and isinstance(default[0], float):  # (3, -3) for a tuple of floats: the numbers are meant
                value = tuple(float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value)
            if default and not all(isinstance(v, type(default[0])) and not isinstance(v, bool) for v in value):
                raise wrong(f"a tuple of {type(default[0]).__name__}s like {tuple(default)!r}")
            return tuple(value)
        raise wrong(f"a tuple like {tuple(default)!r}")
    if isinstance(value, type(default)):
        return value
    raise wrong(type(default).__name__)


def parse_override_value(text, default):
    """An override's text -> python value. Strings need no quotes (--init_from=resume); nothing is executed."""
    if isinstance(default, str):
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"'
        return ast.literal_eval(text) if quoted else text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # not a literal: keep the text, coerce() then reports the type mismatch


def get_config(defaults, argv):
    """Apply the config files in argv, in order, then its --key=value overrides, in order, to a copy of defaults:
    an override wins over any config file wherever it stands (`--max_iters=5 configs/tiny_local.py` trains 5 steps).
    Returns (config, explicit): explicit is the set of keys that a file or an override set."""
    config, explicit = dict(defaults), set()
    overrides = [arg for arg in argv if arg.startswith('--')]
    for arg in argv:
        if arg.startswith('-') and not arg.startswith('--'):
            raise ConfigError(f"unknown option {arg!r}; use a config file and/or --key=value overrides")
        if arg.startswith('-'):
            continue
        path = resolve_config_path(arg)
        for key, value in read_config_file(path).items():
            try:
                check_key(key, defaults)
                config[key] = coerce(key, value, defaults[key])
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}")
            explicit.add(key)
    for arg in overrides:
        key, eq, text = arg[2:].partition('=')
        check_key(key, defaults)
        if not eq:
            raise ConfigError(f"write overrides as --{key}=VALUE (got {arg!r})")
        config[key] = coerce(key, parse_override_value(text, defaults[key]), defaults[key])
        explicit.add(key)
    return config, explicit


def command_line_keys(argv):
    """The keys set by --key=value in argv (not by a config file): on resume only these change the run."""
    return {arg[2:].partition('=')[0] for arg in argv if arg.startswith('--')}


def describe(defaults):
    """The text of --help: every key with its default."""
    width = max(len(k) for k in defaults)
    lines = [f"  --{k.ljust(width)} = {v!r}" for k, v in defaults.items()]
    configs = ', '.join(available_configs())
    return ("usage: python train.py [CONFIG] [--key=value ...]\n"
            f"CONFIG: a file in configs/ ({configs})\nkeys and their defaults:\n" + "\n".join(lines))


# -----------------------------------------------------------------------------
# train.py's config as a whole: checked (one line each, saying what to do), merged with a checkpoint's on resume

def check_config(cfg):
    for key in ('batch_size', 'seq_len', 'gradient_accumulation_steps', 'eval_interval', 'eval_iters', 'log_interval',
                'seq_parallel'):
        if cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]} must be at least 1")
    for key in ('max_iters', 'ckpt_interval', 'warmup_iters', 'lr_decay_iters', 'passkey_one_offset_iters'):
        if cfg[key] < 0:
            raise ConfigError(f"{key}={cfg[key]} must be >= 0")
    if cfg['dtype'] not in ('auto', 'float32', 'bfloat16'):
        raise ConfigError(f"dtype={cfg['dtype']!r}: use 'auto', 'bfloat16' (GPUs from Ampere on) or 'float32'")
    if cfg['dataset'] not in ('tokens', 'passkey'):
        raise ConfigError(f"dataset={cfg['dataset']!r}: use 'tokens' (the files in data_dir) or 'passkey'")
    if cfg['tokenizer'] not in ('byte', 'gpt2'):
        raise ConfigError(f"tokenizer={cfg['tokenizer']!r}: use 'byte' or 'gpt2'")
    if cfg['passkey_loss'] not in ('answer', 'all'):
        raise ConfigError(f"passkey_loss={cfg['passkey_loss']!r}: use 'answer' or 'all'")
    if not 0.0 <= cfg['passkey_end_share'] <= 1.0:  # also catches nan
        raise ConfigError(f"passkey_end_share={cfg['passkey_end_share']} must be a share in [0, 1]")
    if cfg['dataset'] == 'passkey' and cfg['passkey_loss'] == 'all' and cfg['seq_parallel'] > 1:
        raise ConfigError("passkey_loss='all' does not work with seq_parallel > 1; use passkey_loss='answer'")
    if cfg['seq_parallel'] > 1:
        from parallel import NOT_PARALLEL  # imported here: parallel.py imports this module
        if cfg['attn'] in NOT_PARALLEL:  # said before any process, data or model is set up
            raise ConfigError(NOT_PARALLEL[cfg['attn']])
    if cfg['seq_parallel'] > 1 and cfg['compile']:
        raise ConfigError(f"seq_parallel={cfg['seq_parallel']} does not work with compile=True; use --compile=False")
    if cfg['backend'] not in ('auto', 'nccl', 'gloo'):
        raise ConfigError(f"backend={cfg['backend']!r}: use 'auto', 'nccl' or 'gloo'")
    for key in ('learning_rate', 'gate_lr'):
        if not cfg[key] > 0:
            raise ConfigError(f"{key}={cfg[key]} must be positive")
    thread_count(cfg['threads'])
    try:  # the model's own checks (e.g. n_embd divisible by n_head), before any data is read or made
        GPTConfig(**{k: cfg[k] for k in MODEL_KEYS})
    except ValueError as e:
        raise ConfigError(str(e))
    S, T = cfg['segment_len'], cfg['seq_len']
    if cfg['attn'] in ('local', 'infini') and S >= 1 and T % S:
        # the model would pad a last partial segment; in training every window should be whole segments
        lower, upper = (T // S) * S, (T // S + 1) * S
        options = ' or '.join(str(v) for v in (lower, upper) if v > 0)
        raise ConfigError(f"seq_len={T} must be a multiple of segment_len={S} (attn={cfg['attn']!r} processes "
                          f"seq_len/segment_len segments); try seq_len={options}")


def thread_count(value):
    """The `threads` key as a number: 0 for 'auto' (or 0), else the count asked for (at most the cores)."""
    text = str(value).strip().lower()
    if not (text == 'auto' or (text.isdigit() and int(text) >= 0)):
        raise ConfigError(f"threads={value!r}: use 'auto' (or 0) to measure, or a number of CPU threads like 1 or 2")
    count = 0 if text == 'auto' else int(text)
    if too_many_threads(count):
        raise ConfigError(too_many_threads(count))
    return count


def resume_settings(cfg, ckpt, explicit, cmdline, ckpt_path):
    """--init_from=resume: the checkpoint's training settings (max_iters, the lr schedule, batch, ...) replace
    the defaults and the config file's, so that a resumed run continues the run that was stopped; --key=value on
    the command line still overrides. Returns one line naming what differs, or None. The architecture is the
    checkpoint's (init_model refuses a config that sets another); machine keys (device, compile, ...) are this
    invocation's. explicit: the keys a config file or the command line set; cmdline: those of the command line."""
    cfg.update({k: v for k, v in ckpt['model_args'].items() if k in MODEL_KEYS and k not in explicit})
    saved, changed, kept = ckpt.get('config') or {}, [], []
    for key, value in saved.items():
        if key not in cfg or key in MODEL_KEYS or key in MACHINE_KEYS or cfg[key] == value:
            continue
        if key == 'threads' and key not in cmdline and thread_count(cfg[key]) == 0:
            cfg[key] = value  # the count the run measured: the same sums in the same order, bit for bit
            continue
        if key in cmdline:
            changed.append(f"{key} {value!r} -> {cfg[key]!r}")
        else:
            kept.append(f"{key}={value!r} (not {cfg[key]!r})")
            cfg[key] = value
    if len(kept) > 8:  # e.g. resuming a config file's run without the file: one line still
        kept = kept[:8] + [f"and {len(kept) - 8} more"]
    parts = ([f"kept the checkpoint's {', '.join(kept)}"] if kept else []) + \
        ([f"changed on the command line: {', '.join(changed)}"] if changed else [])
    return f"resume {ckpt_path}: {'; '.join(parts)}" if parts else None
