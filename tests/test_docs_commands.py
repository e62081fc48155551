"""Every command the README, docs/, configs/ and the scripts' own usage lines give for passkey.py, eval_ppl.py,
sample.py, scripts/recall_cpu.py, scripts/gca_compare.py and scripts/dilated_reach.py still parses as written: its
flags exist and take the values shown. Parsing only; nothing runs."""
import argparse
import ast
import glob
import importlib.util
import os
import re
import shlex

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ('passkey.py', 'eval_ppl.py', 'sample.py', 'scripts/recall_cpu.py', 'scripts/gca_compare.py',
           'scripts/dilated_reach.py')
COMMAND = re.compile(r'python (' + '|'.join(re.escape(s) for s in SCRIPTS) + r')((?: [^#`\n]*)?)')


def documented_commands():
    """{command: the first file that gives it}: the README, docs/*.md, configs/*.py and the scripts' docstrings."""
    files = ['README.md'] + sorted(glob.glob('docs/*.md', root_dir=REPO))
    files += sorted(glob.glob('configs/*.py', root_dir=REPO))
    found = {}
    for name in files + list(SCRIPTS):
        with open(os.path.join(REPO, name)) as f:
            text = f.read()
        if name in SCRIPTS:
            text = ast.get_docstring(ast.parse(text))
        for script, args in COMMAND.findall(text):
            found.setdefault(f'python {script}{args.rstrip()}', name)
    return sorted(found.items())


class Parsed(Exception):
    pass


def parse(script, argv, monkeypatch):
    """The script's own parser on argv; returns (args, what parse_known_args left over)."""
    for method in ('parse_args', 'parse_known_args'):
        original = getattr(argparse.ArgumentParser, method)

        def stop(self, args=None, namespace=None, original=original):
            raise Parsed(original(self, args, namespace))
        monkeypatch.setattr(argparse.ArgumentParser, method, stop)
    spec = importlib.util.spec_from_file_location(os.path.basename(script)[:-3], os.path.join(REPO, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(Parsed) as e:
        module.main(argv)
    result = e.value.args[0]
    return result if isinstance(result, tuple) else (result, [])


def test_the_docs_give_commands_for_every_script():
    assert {c.split()[1] for c, _ in documented_commands()} == set(SCRIPTS)


@pytest.mark.parametrize('command, where', documented_commands())
def test_documented_command_parses(command, where, monkeypatch):
    script, *argv = shlex.split(command)[1:]
    _, rest = parse(script, argv, monkeypatch)
    if rest:  # recall_cpu.py passes the rest to train.py: --key=value of its settings
        from train import DEFAULTS
        assert all(a.startswith('--') and a[2:].split('=')[0] in DEFAULTS and '=' in a for a in rest), (where, rest)
