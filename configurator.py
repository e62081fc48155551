"""
Config for train.py: config files of plain assignments, then `--key=value` overrides (wherever they stand in argv).

    python train.py configs/pg19_infini.py --batch_size=2 --compile=False

A config file may be named `configs/X.py`, `config/X.py`, `X.py` or just `X`; all mean configs/X.py.
Unlike nanoGPT's configurator (which exec()s both), nothing is executed: a config file is parsed with `ast`
and may hold only `key = <literal>` lines, and an override's value is parsed with `ast.literal_eval` and
must have the type of the key's default. Every mistake becomes one ConfigError line saying what to do.
"""

import ast
import difflib
import os

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')


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
