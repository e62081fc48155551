"""Config files and --key=value overrides: resolution, safe parsing, validation with one clear line."""
import os

import pytest

import configurator
from configurator import CONFIG_DIR, ConfigError, get_config, read_config_file, resolve_config_path
from train import DEFAULTS, check_config, main


@pytest.mark.parametrize("spelling", ["configs/tiny_synthetic.py", "config/tiny_synthetic.py", "tiny_synthetic",
                                      "tiny_synthetic.py", "./configs/tiny_synthetic.py"])
def test_every_spelling_of_a_config_name_resolves_to_configs_dir(spelling):
    assert os.path.samefile(resolve_config_path(spelling), os.path.join(CONFIG_DIR, "tiny_synthetic.py"))


def test_a_config_file_outside_configs_is_taken_as_is(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("batch_size = 3\n")
    config, explicit = get_config(DEFAULTS, [str(path)])
    assert config["batch_size"] == 3 and explicit == {"batch_size"}


def test_missing_config_names_the_closest_one():
    with pytest.raises(ConfigError, match=r"tiny_synthetc.*did you mean 'tiny_synthetic'"):
        resolve_config_path("config/tiny_synthetc.py")


def test_embedded_default_equals_configs_quickstart():
    config, _ = get_config(DEFAULTS, ["quickstart"])
    assert config == DEFAULTS


@pytest.mark.parametrize("name", configurator.available_configs())
def test_every_shipped_config_is_plain_assignments_of_known_keys_that_validate(name):
    values = read_config_file(resolve_config_path(name))
    assert values, f"{name} sets nothing"
    config, explicit = get_config(DEFAULTS, [name])
    assert explicit == set(values)
    check_config(config)


def test_overrides_are_typed_by_the_default():
    config, explicit = get_config(DEFAULTS, ["--batch_size=3", "--learning_rate=1", "--compile=True",
                                             "--decay_lr=false", "--init_from=resume", "--max_iters=1e3",
                                             "--dilated_rates=(1, 2)", "--dilated_segments=[8,16]", "--out_dir=123"])
    assert config["batch_size"] == 3
    assert config["learning_rate"] == 1.0 and isinstance(config["learning_rate"], float)
    assert config["compile"] is True and config["decay_lr"] is False
    assert config["init_from"] == "resume" and config["out_dir"] == "123"  # strings need no quotes
    assert config["max_iters"] == 1000 and isinstance(config["max_iters"], int)
    assert config["dilated_rates"] == (1, 2) and config["dilated_segments"] == (8, 16)
    assert explicit == {"batch_size", "learning_rate", "compile", "decay_lr", "init_from", "max_iters",
                        "dilated_rates", "dilated_segments", "out_dir"}


def test_threads_takes_auto_or_a_number_from_a_file_or_the_command_line(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("threads = 2\n")
    assert get_config(DEFAULTS, [str(path)])[0]["threads"] == "2"
    assert get_config(DEFAULTS, ["--threads=auto"])[0]["threads"] == "auto"
    for value in ("auto", "0", "2"):
        check_config({**DEFAULTS, "threads": value})
    with pytest.raises(ConfigError, match=r"threads='-1': use 'auto' \(or 0\)"):
        check_config({**DEFAULTS, "threads": "-1"})


def test_an_override_wins_over_a_config_file_wherever_it_stands(tmp_path):
    # `train.py --max_iters=5 configs/tiny_local.py` once trained the file's 300 steps and overwrote a checkpoint
    path, later = tmp_path / "c.py", tmp_path / "d.py"
    path.write_text("batch_size = 3\nseq_len = 256\nmax_iters = 300\n")
    later.write_text("seq_len = 64\n")
    config, _ = get_config(DEFAULTS, ["--batch_size=5", str(path), "--seq_len=128", str(later), "--batch_size=6"])
    assert config["batch_size"] == 6 and config["seq_len"] == 128 and config["max_iters"] == 300
    config, _ = get_config(DEFAULTS, [str(path), str(later)])  # config files: the later one wins
    assert config["seq_len"] == 64


def test_a_tuple_of_whole_numbers_is_taken_for_a_tuple_of_floats():
    config, _ = get_config(DEFAULTS, ["--gate_init=(3,-3)"])
    assert config["gate_init"] == (3.0, -3.0) and all(isinstance(g, float) for g in config["gate_init"])
    with pytest.raises(ConfigError, match="a tuple of floats"):
        get_config(DEFAULTS, ["--gate_init=(3,'a')"])


def test_unknown_key_suggests_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'lerning_rate'; did you mean 'learning_rate'\?"):
        get_config(DEFAULTS, ["--lerning_rate=0.1"])


@pytest.mark.parametrize("arg, expected", [
    ("--batch_size=abc", "an integer"), ("--batch_size=2.5", "an integer"), ("--batch_size=True", "an integer"),
    ("--compile=maybe", "True or False"), ("--learning_rate=fast", "a number"),
    ("--dilated_rates=4", "a tuple"), ("--dilated_rates=(1, 'a')", "tuple of ints"),
])
def test_wrong_type_is_one_clear_line(arg, expected):
    with pytest.raises(ConfigError, match=expected) as e:
        get_config(DEFAULTS, [arg])
    assert "\n" not in str(e.value)


def test_override_without_value_or_unknown_option():
    with pytest.raises(ConfigError, match="--compile=VALUE"):
        get_config(DEFAULTS, ["--compile"])
    with pytest.raises(ConfigError, match="unknown option"):
        get_config(DEFAULTS, ["-x"])


def test_override_values_are_parsed_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError):
        get_config(DEFAULTS, [f"--batch_size=__import__('pathlib').Path({str(marker)!r}).touch()"])
    assert not marker.exists()


@pytest.mark.parametrize("source, message", [
    ("import os\n", "only plain assignments"),
    ("batch_size = 4\nif True:\n    seq_len = 8\n", "only plain assignments"),
    ("seq_len = 2048 * 16\n", "must be a literal"),
    ("a = b = 1\n", "only plain assignments"),
    ("batch_size = (\n", "syntax error"),
    ("batch_sise = 4\n", "did you mean 'batch_size'"),
    ("batch_size = 'four'\n", "an integer"),
])
def test_config_files_are_parsed_safely_with_a_clear_error(tmp_path, source, message):
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(ConfigError, match=message) as e:
        get_config(DEFAULTS, [str(path)])
    assert str(path) in str(e.value)


def test_a_config_file_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.py"
    path.write_text(f"batch_size = __import__('pathlib').Path({str(marker)!r}).touch()\n")
    with pytest.raises(ConfigError, match="must be a literal"):
        read_config_file(str(path))
    assert not marker.exists()


def test_docstrings_and_comments_are_allowed(tmp_path):
    path = tmp_path / "ok.py"
    path.write_text('"""what this reproduces"""\n# a comment\nbatch_size = 2  # why\ndilated_rates = (1, 2)\n')
    assert read_config_file(str(path)) == {"batch_size": 2, "dilated_rates": (1, 2)}


def test_seq_len_not_a_multiple_of_segment_len_suggests_valid_values():
    config, _ = get_config(DEFAULTS, ["--attn=infini", "--segment_len=128", "--seq_len=1000"])
    expected = r"seq_len=1000 must be a multiple of segment_len=128.*try seq_len=896 or 1024"
    with pytest.raises(ConfigError, match=expected):
        check_config(config)
    for attn in ("full", "dilated"):  # no segments there
        check_config({**config, "attn": attn})


@pytest.mark.parametrize("argv, message", [
    (["--lerning_rate=0.1"], "error: unknown config key 'lerning_rate'; did you mean 'learning_rate'?"),
    (["--batch_size=big"], "error: batch_size='big' has the wrong type"),
    (["--attn=local", "--segment_len=100", "--seq_len=250"],
     "error: seq_len=250 must be a multiple of segment_len=100"),
    (["nonexistent_config"], "error: config file 'nonexistent_config' not found"),
    (["--dtype=float16"], "error: dtype='float16'"),
    (["--batch_size=0"], "error: batch_size=0 must be at least 1"),
])
def test_main_reports_config_mistakes_as_one_line(argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    text = str(e.value.code)
    assert text.startswith(message) and "\n" not in text


def test_help_lists_every_key(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert all(f"--{k}" in out for k in DEFAULTS)


@pytest.mark.parametrize("attn", ["full", "gca"])
def test_a_kind_without_sequence_parallelism_is_refused_before_anything_starts(attn):
    config, _ = get_config(DEFAULTS, [f"--attn={attn}", "--seq_parallel=2", "--dataset=tokens"])
    with pytest.raises(ConfigError, match=f"attn='{attn}' has no sequence-parallel mode"):
        check_config(config)


def test_the_quick_start_starts_each_layer_with_one_memory_head_and_three_local_ones():
    """The quick start's heads (docs/recall.md#how-surely-it-learns-seeds-and-threads): in every layer one head of 16
    reads ~95% from memory and three ~95% from local attention, which build the context the memory's keys need."""
    import torch
    from configurator import MODEL_KEYS
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=256, **{k: DEFAULTS[k] for k in MODEL_KEYS}))
    assert model.config.head_size == 16
    for block in model.blocks:
        assert torch.sigmoid(block.attn.gate).tolist() == pytest.approx([0.9526, 0.0474, 0.0474, 0.0474], abs=1e-4)


def test_gate_init_is_checked_only_where_there_are_gates_and_the_message_says_to_set_both():
    """The defaults' four gates (the quick start's) must not break a local/full/dilated config with 2 heads (the
    gates exist only for attn='infini'); an Infini model with 2 heads and four gates is told what to set."""
    check_config(get_config(DEFAULTS, ["--attn=local", "--n_head=2"])[0])
    with pytest.raises(ConfigError, match=r"n_head=2 must be a multiple .* set both, e\.g\. --n_head=2 --gate_init=\(3,-3\)"):
        check_config(get_config(DEFAULTS, ["--n_head=2"])[0])
