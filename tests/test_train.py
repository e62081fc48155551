"""train.py end to end on CPU with tiny models: loss falls, exact resume, DDP, atomic checkpoints, clear errors.
Each run is in-process through train.main(argv) (a subprocess only for torchrun); data is written to tmp_path."""
import json
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "the cat sat on a mat and the dog ran far away from home while the birds sang".split()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine torch's worker threads make each step
    ~100x slower (measured: 8 ms vs 1 s). Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny byte-level corpus in the CONTRACTS format: 6 books per split of a few thousand bytes each."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split in ("train", "validation", "test"):
        books = [np.array(list((" ".join(rng.choice(WORDS, size=600)) + ".").encode()) + [0], dtype=np.uint16)
                 for _ in range(6)]
        np.concatenate(books).tofile(d / f"{split}.bin")
        np.save(d / f"{split}_books.npy", np.cumsum([0] + [len(b) for b in books]).astype(np.int64))
    (d / "meta.json").write_text(json.dumps({"tokenizer": "byte", "vocab_size": 256, "eot": 0, "source": "test",
                                             "splits": {}}))
    return str(d)


def tiny(data_dir, out_dir, *extra):
    return [f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--dataset=tokens", "--n_layer=2", "--n_head=2",
            "--gate_init=(3,-3)", "--n_embd=32",
            "--segment_len=16", "--seq_len=64", "--batch_size=4", "--max_iters=20", "--eval_interval=10",
            "--eval_iters=2", "--warmup_iters=2", "--learning_rate=3e-3", "--min_lr=3e-4", *extra]


def losses(out_dir):
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "log.jsonl"))]
    return [(r["iter"], r.get("loss"), r.get("val_loss")) for r in rows]


@pytest.mark.parametrize("attn", ["infini", "local", "dilated"])
def test_twenty_cpu_steps_lower_the_loss(data_dir, tmp_path, attn):
    extra = ["--dilated_segments=(16, 32, 64)", "--dilated_rates=(1, 2, 4)"] if attn == "dilated" else []
    result = train.main(tiny(data_dir, tmp_path, f"--attn={attn}", *extra))
    rows = losses(tmp_path)
    train_losses = [loss for _, loss, _ in rows if loss is not None]
    val_losses = [val for _, _, val in rows if val is not None]
    assert len(train_losses) == 20 and len(val_losses) == 3  # evals at steps 0, 10, 20
    assert np.mean(train_losses[-5:]) < train_losses[0] - 0.5
    assert val_losses[-1] < val_losses[0] - 0.5
    assert result["checkpoint"] == os.path.join(tmp_path, "ckpt.pt") and result["iter_num"] == 20
    header = open(tmp_path / "log.csv").readline().strip().split(",")
    assert header[:3] == ["iter", "loss", "val_loss"]
    # the checkpoint holds what passkey/sample/eval need, and loads with weights_only=True
    model, ckpt = load_model(result["checkpoint"])
    assert ckpt["tokenizer"] == "byte" and ckpt["model_args"]["attn"] == attn and ckpt["iter_num"] == 20
    assert ckpt["config"]["seq_len"] == 64 and model.config.n_layer == 2


def test_gate_parameters_get_gate_lr_and_no_weight_decay(data_dir, tmp_path):
    train.main(tiny(data_dir, tmp_path, "--max_iters=2", "--gate_lr=0.05", "--learning_rate=1e-3"))
    ckpt = load_checkpoint(os.path.join(tmp_path, "ckpt.pt"))
    groups = ckpt["optimizer"]["param_groups"]
    gate_groups = [g for g in groups if g["lr_scale"] != 1.0]
    assert len(gate_groups) == 1 and gate_groups[0]["weight_decay"] == 0.0
    assert gate_groups[0]["lr_scale"] == pytest.approx(50.0)
    assert len(gate_groups[0]["params"]) == 2  # one β vector per layer


def test_interrupted_then_resumed_run_matches_an_uninterrupted_one_bit_for_bit(data_dir, tmp_path, monkeypatch):
    args = ["--max_iters=10", "--lr_decay_iters=10", "--eval_interval=4", "--dropout=0.1"]  # dropout: RNG resumes too
    train.main(tiny(data_dir, tmp_path / "straight", *args))

    # Ctrl-C during step 5: the step finishes, a checkpoint is written at step 6, the run exits with 128 + SIGINT.
    real_get_lr = train.get_lr

    def get_lr_then_ctrl_c(it, cfg):
        if it == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real_get_lr(it, cfg)

    monkeypatch.setattr(train, "get_lr", get_lr_then_ctrl_c)
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as e:
        train.main(tiny(data_dir, tmp_path / "split", *args))
    assert e.value.code == 128 + signal.SIGINT
    assert load_checkpoint(os.path.join(tmp_path, "split", "ckpt.pt"))["iter_num"] == 6
    monkeypatch.setattr(train, "get_lr", real_get_lr)
    assert signal.getsignal(signal.SIGINT) is handler_before  # train.py put the handler back

    train.main(tiny(data_dir, tmp_path / "split", *args, "--init_from=resume"))
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")  # exact equality: same floats


def interrupt_at_step(monkeypatch, step):
    """Make train.py receive Ctrl-C during `step` (it saves at step + 1 and exits); returns the undo."""
    real_get_lr = train.get_lr

    def get_lr_then_ctrl_c(it, cfg):
        if it == step:
            os.kill(os.getpid(), signal.SIGINT)
        return real_get_lr(it, cfg)

    monkeypatch.setattr(train, "get_lr", get_lr_then_ctrl_c)
    return lambda: monkeypatch.setattr(train, "get_lr", real_get_lr)


def test_resume_keeps_the_checkpoints_training_settings_unless_overridden(data_dir, tmp_path, monkeypatch, capsys):
    """Resuming without the original --max_iters used to switch to the default schedule. Now a bare
    --init_from=resume continues the run that was stopped, and a command-line override is named in one line."""
    args = ["--max_iters=10", "--eval_interval=4", "--dropout=0.1", "--learning_rate=2e-3", "--warmup_iters=3"]
    train.main(tiny(data_dir, tmp_path / "straight", *args))
    undo = interrupt_at_step(monkeypatch, 5)
    with pytest.raises(SystemExit):
        train.main(tiny(data_dir, tmp_path / "split", *args))
    undo()
    capsys.readouterr()
    bare = [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'split'}", "--init_from=resume"]
    train.main(bare)
    out = capsys.readouterr().out
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")  # exact: the same schedule and batches
    line = next(line for line in out.splitlines() if line.startswith("resume "))
    assert "kept the checkpoint's" in line and "max_iters=10 (not 2200)" in line and "changed" not in line
    train.main(bare + ["--max_iters=12", "--eval_interval=4"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("resume "))
    assert line.endswith("; changed on the command line: max_iters 10 -> 12")
    assert load_checkpoint(os.path.join(tmp_path, "split", "ckpt.pt"))["config"]["max_iters"] == 12


def test_threads_key_sets_torchs_threads_and_auto_is_measured_once_per_run(data_dir, tmp_path, monkeypatch, capsys):
    train.main(tiny(data_dir, tmp_path / "asked", "--max_iters=2", "--threads=1"))
    assert torch.get_num_threads() == 1 and "1 thread (threads=1)" in capsys.readouterr().out
    torch.set_num_threads(2)  # 'auto' chooses between 1 and torch's current count
    train.main(tiny(data_dir, tmp_path / "auto", "--max_iters=2"))
    assert "(auto: a forward+backward pass took" in capsys.readouterr().out
    measured = load_checkpoint(os.path.join(tmp_path, "auto", "ckpt.pt"))["config"]["threads"]
    assert measured in ("1", "2") and torch.get_num_threads() == int(measured)

    def no_second_measurement(*args, **kwargs):
        raise AssertionError("a resumed run must use the thread count of the run it continues")

    monkeypatch.setattr(train, "time_passes", no_second_measurement)
    torch.set_num_threads(2)
    train.main(tiny(data_dir, tmp_path / "auto", "--max_iters=4", "--init_from=resume"))
    assert torch.get_num_threads() == int(measured)
    for bad in ("-1", "many", "1.5"):
        with pytest.raises(SystemExit, match=r"^error: threads=.* use 'auto' \(or 0\)"):
            train.main(tiny(data_dir, tmp_path / "bad", f"--threads={bad}"))


@pytest.mark.parametrize("pass_on_two, expected", [(0.5, 2), (0.95, 1), (30.0, 1)])
def test_auto_threads_keeps_more_threads_only_when_clearly_faster(monkeypatch, pass_on_two, expected):
    timed = []

    def fake_time_passes(model, x, autocast, threads, passes, give_up=float("inf")):
        seconds = [1.0 if threads == 1 else pass_on_two] * passes
        if seconds[0] > give_up:  # a pass far slower than one thread's: the rest is skipped
            seconds = seconds[:1]
        timed.append((threads, len(seconds)))
        return seconds

    monkeypatch.setattr(train, "time_passes", fake_time_passes)
    torch.set_num_threads(2)
    model = train.GPT(train.GPTConfig(vocab_size=256, n_layer=1, n_head=2, n_embd=32, segment_len=16))
    threads, how = train.choose_threads({"threads": "auto"}, model, 2, 32, train.nullcontext(), "cpu", 1)
    assert threads == expected == torch.get_num_threads() and how.startswith("auto: ")
    assert timed[-1] == (2, 1 if pass_on_two > 2 else 3)  # given up after the first pass on 2 threads


def test_a_failed_start_leaves_no_empty_out_dir(tmp_path):
    (tmp_path / "existing").mkdir()
    for out_dir in (tmp_path / "new" / "nested", tmp_path / "existing"):
        with pytest.raises(SystemExit, match="prepare.py"):
            train.main(tiny(tmp_path / "no_data", out_dir))
    assert sorted(os.listdir(tmp_path)) == ["existing"]  # the folder that was there before stays


def test_resume_after_a_finished_run_continues_to_a_larger_max_iters(data_dir, tmp_path):
    args = ["--lr_decay_iters=8", "--eval_interval=4"]
    train.main(tiny(data_dir, tmp_path / "straight", *args, "--max_iters=8"))
    train.main(tiny(data_dir, tmp_path / "split", *args, "--max_iters=4"))
    train.main(tiny(data_dir, tmp_path / "split", *args, "--max_iters=8", "--init_from=resume"))
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")


def torchrun(out_dir, data_dir, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(REPO, "train.py"), *tiny(data_dir, out_dir, "--gradient_accumulation_steps=2",
                                                  "--eval_interval=2", "--lr_decay_iters=4", *extra)]
    proc = subprocess.run(cmd, env=env, cwd=out_dir.parent, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_two_process_gloo_ddp_run_and_its_exact_resume(data_dir, tmp_path):
    out = torchrun(tmp_path / "straight", data_dir, "--max_iters=4")
    assert "2 processes" in out and out.count("done: 4 steps") == 1  # rank 0 alone reports
    ckpt = load_checkpoint(os.path.join(tmp_path, "straight", "ckpt.pt"))
    assert ckpt["iter_num"] == 4 and len(ckpt["data_rng"]) == 2  # each rank's window generator, for resume
    assert not torch.equal(ckpt["data_rng"][0], ckpt["data_rng"][1])
    assert all(np.isfinite(loss) for _, loss, _ in losses(tmp_path / "straight") if loss is not None)
    # 2 steps, then resume to 4: every rank continues its own windows, so the losses are the same floats
    torchrun(tmp_path / "split", data_dir, "--max_iters=2")
    torchrun(tmp_path / "split", data_dir, "--max_iters=4", "--init_from=resume")
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")


def test_two_process_sequence_parallel_run_matches_one_process(data_dir, tmp_path):
    # seq_parallel=2: both processes hold halves of the same windows (drawn with the single process's seed), so the
    # logged train and val losses are those of one process training on whole windows, up to float32 rounding
    args = ["--attn=infini", "--max_iters=5"]
    out = torchrun(tmp_path / "seqpar", data_dir, "--seq_parallel=2", *args)
    assert "2 per window" in out and out.count("done: 5 steps") == 1
    train.main(tiny(data_dir, tmp_path / "single", "--gradient_accumulation_steps=2", "--eval_interval=2",
                    "--lr_decay_iters=4", *args))
    seqpar, single = losses(tmp_path / "seqpar"), losses(tmp_path / "single")
    assert [r[0] for r in seqpar] == [r[0] for r in single] and len(seqpar) == 6
    for (_, *a), (_, *b) in zip(seqpar, single):
        for u, v in zip(a, b):
            assert (u is None) == (v is None)
            assert u is None or (np.isfinite(u) and abs(u - v) < 1e-5), (seqpar, single)


def test_gradient_accumulation_steps_must_split_over_processes(data_dir, tmp_path, monkeypatch):
    # checked before the process group starts, so no second process is needed to see the message
    monkeypatch.setattr(train.dist, "init_process_group", lambda **kw: None)
    monkeypatch.setattr(train.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(train.dist, "get_world_size", lambda: 2)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="gradient_accumulation_steps=3 is the total over all 2 processes"):
        train.main(tiny(data_dir, tmp_path, "--gradient_accumulation_steps=3"))


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(data_dir, tmp_path, monkeypatch):
    train.main(tiny(data_dir, tmp_path, "--max_iters=4"))
    path = os.path.join(tmp_path, "ckpt.pt")
    before = load_checkpoint(path)
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):  # a full disk in the middle of the write
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(SystemExit) as e:
        train.main(tiny(data_dir, tmp_path, "--max_iters=8", "--eval_interval=2", "--init_from=resume"))
    message = str(e.value.code)
    assert message.startswith(f"error: could not write checkpoint {path}: ") and "No space left on device" in message
    assert "previous checkpoint is intact" in message
    monkeypatch.setattr(torch, "save", real_save)
    after = load_checkpoint(path)
    assert after["iter_num"] == before["iter_num"] == 4
    assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])
    # no temp file left behind (loss.png too where matplotlib is installed: the test passes with and without it)
    assert sorted(set(os.listdir(tmp_path)) - {"loss.png"}) == ["ckpt.pt", "log.csv", "log.jsonl"]


def test_save_checkpoint_is_atomic_and_loads_with_weights_only(tmp_path):
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "model_args": {"n_layer": 1}, "rng": (1, [2, 3], None)})
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["model"]["w"], torch.ones(2)) and ckpt["rng"] == (1, [2, 3], None)
    with pytest.raises(CheckpointError, match="could not write checkpoint"):
        save_checkpoint(str(tmp_path / "no_such_dir" / "c.pt"), {"model": {}})


def test_missing_or_corrupt_checkpoint_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    save_checkpoint(str(tmp_path / "good.pt"), {"model": {"w": torch.ones(1000)}, "model_args": {}})
    good = (tmp_path / "good.pt").read_bytes()
    files = {"junk.pt": b"not a checkpoint", "random.pt": np.random.default_rng(0).bytes(4096), "empty.pt": b"",
             "truncated.pt": good[:len(good) // 2], "pickle.pt": pickle.dumps({"model": {1, 2}, "model_args": {}}),
             "no_model.pt": None}
    torch.save({"weights": torch.ones(2)}, tmp_path / "no_model.pt")  # a tensor file, but not train.py's
    for name, data in files.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        path = str(tmp_path / name)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        # never torch's advice to load with weights_only=False (it would run whatever code the file holds)
        assert str(e.value) == f"not a checkpoint written by train.py, or damaged: {path}", name


def test_checkpoint_of_another_architecture_is_a_clear_error(data_dir, tmp_path):
    train.main(tiny(data_dir, tmp_path / "a", "--max_iters=2"))
    ckpt_path = os.path.join(tmp_path, "a", "ckpt.pt")
    # fine-tuning (weights only) into a deeper model
    with pytest.raises(SystemExit) as e:
        train.main(tiny(data_dir, tmp_path / "b", "--n_layer=3", f"--init_from={ckpt_path}"))
    assert str(e.value.code) == (f"error: checkpoint {ckpt_path} holds another architecture "
                                 f"(n_layer: checkpoint 2, model 3)")
    # resuming with a config of another kind
    with pytest.raises(SystemExit, match=r"error: cannot resume from .*attn: checkpoint 'infini', config 'local'"):
        train.main(tiny(data_dir, tmp_path / "a", "--attn=local", "--init_from=resume"))
    # a missing checkpoint
    with pytest.raises(SystemExit, match=r"error: checkpoint .*missing.pt not found"):
        train.main(tiny(data_dir, tmp_path / "c", f"--init_from={tmp_path / 'missing.pt'}"))
    # load_model on a checkpoint whose weights do not fit its own model_args
    ckpt = load_checkpoint(ckpt_path)
    ckpt["model_args"]["n_embd"] = 64
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"holds another architecture \(size mismatch for wte.weight"):
        load_model(str(tmp_path / "bad.pt"))
    ckpt["model_args"]["attn"] = "gca_v9"
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="cannot be built by this model.py: attn='gca_v9'"):
        load_model(str(tmp_path / "bad.pt"))


def test_fine_tuning_starts_from_the_weights_with_a_fresh_optimizer(data_dir, tmp_path):
    train.main(tiny(data_dir, tmp_path / "pre", "--max_iters=6"))
    pre = os.path.join(tmp_path, "pre", "ckpt.pt")
    result = train.main(tiny(data_dir, tmp_path / "ft", "--max_iters=2", f"--init_from={pre}", "--dropout=0.1"))
    ft = load_checkpoint(result["checkpoint"])
    assert ft["iter_num"] == 2 and ft["model_args"]["dropout"] == 0.1
    assert all(int(s["step"]) == 2 for s in ft["optimizer"]["state"].values())  # fresh AdamW: 2 steps, not 8
    # starts from the trained weights: its first val loss is the pretrained run's last (same val windows)
    assert losses(tmp_path / "ft")[0][2] == losses(tmp_path / "pre")[-1][2]
    with pytest.raises(SystemExit, match="would overwrite it"):
        train.main(tiny(data_dir, tmp_path / "pre", f"--init_from={pre}"))


def test_a_fine_tune_takes_the_model_keys_it_does_not_set_from_the_checkpoint(data_dir, tmp_path):
    """--n_head=2 without --gate_init: checked against the checkpoint's two gates, not the defaults' four."""
    train.main(tiny(data_dir, tmp_path / "pre", "--max_iters=2"))
    pre = os.path.join(tmp_path, "pre", "ckpt.pt")
    args = [a for a in tiny(data_dir, tmp_path / "ft", "--max_iters=2", f"--init_from={pre}")
            if not a.startswith("--gate_init")]
    ft = load_checkpoint(train.main(args)["checkpoint"])
    assert ft["model_args"]["n_head"] == 2 and tuple(ft["model_args"]["gate_init"]) == (3.0, -3.0)


def test_a_fine_tune_can_widen_the_segments(data_dir, tmp_path):
    """No weight depends on segment_len (RoPE counts positions inside a segment), so a fine-tune may change it, as
    configs/recall_infini_seg128.py does: the weights load and the new checkpoint has the new segments."""
    train.main(tiny(data_dir, tmp_path / "pre", "--max_iters=2"))
    pre = load_checkpoint(os.path.join(tmp_path, "pre", "ckpt.pt"))
    tiny_steps = ["--learning_rate=1e-6", "--min_lr=1e-7", "--gate_lr=1e-6"]  # so the weights stay where they began
    result = train.main(tiny(data_dir, tmp_path / "ft", "--max_iters=1", *tiny_steps,
                             f"--init_from={tmp_path / 'pre' / 'ckpt.pt'}", "--segment_len=32"))
    ft = load_checkpoint(result["checkpoint"])
    assert pre["model_args"]["segment_len"] == 16 and ft["model_args"]["segment_len"] == 32
    assert all(torch.allclose(ft["model"][k], v, atol=1e-5) for k, v in pre["model"].items())  # from those weights


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(data_dir, tmp_path):
    train.main(tiny(data_dir, tmp_path, "--max_iters=4"))
    # an infinite learning rate turns every weight into inf/nan in one step: step 4 is fine, step 5 is nan
    with pytest.raises(SystemExit) as e:
        train.main(tiny(data_dir, tmp_path, "--max_iters=8", "--eval_interval=100", "--learning_rate=1e999",
                        "--init_from=resume"))
    message = str(e.value.code)
    ckpt_path = os.path.join(tmp_path, "ckpt.pt")
    assert message.startswith("error: training loss is nan at step 5")
    assert f"Last good checkpoint: {ckpt_path} (step 4)" in message
    assert message.endswith("Try a lower learning_rate, resuming from it with --init_from=resume --learning_rate=N.")
    assert load_checkpoint(ckpt_path)["iter_num"] == 4  # nothing was saved after the blow-up
    # from scratch, with no checkpoint yet: nothing to resume from, and the message does not suggest it
    with pytest.raises(SystemExit) as e:
        train.main(tiny(data_dir, tmp_path / "fresh", "--eval_interval=100", "--learning_rate=1e999"))
    assert str(e.value.code).endswith("Last good checkpoint: none (no checkpoint was written yet). "
                                      "Try a lower learning_rate.")


def test_unwritable_out_dir_is_one_line(data_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        train.main(tiny(data_dir, blocker / "out"))
    assert str(e.value.code).startswith(f"error: cannot write to out_dir='{blocker / 'out'}'")


def test_missing_data_dir_names_the_prepare_command(tmp_path):
    with pytest.raises(SystemExit, match="prepare.py"):
        train.main(tiny(tmp_path / "no_data", tmp_path / "out"))


def test_loss_plot_without_matplotlib_is_one_warning(tmp_path, monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert train.plot_losses([{"iter": 0, "loss": 5.0, "val_loss": 5.1}], str(tmp_path / "loss.png"), "t") is None
    assert capsys.readouterr().out.count("warning: matplotlib is not installed") == 1
    assert not (tmp_path / "loss.png").exists()


def test_loss_plot_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"iter": 0, "loss": 5.0, "val_loss": 5.1}, {"iter": 1, "loss": 4.0}, {"iter": 2, "val_loss": 3.5}]
    path = train.plot_losses(rows, str(tmp_path / "loss.png"), "tiny")
    assert path and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_passkey_fine_tuning_uses_generated_examples_in_the_checkpoints_tokenizer(data_dir, tmp_path):
    train.main(tiny(data_dir, tmp_path / "pre", "--max_iters=2"))
    pre = os.path.join(tmp_path, "pre", "ckpt.pt")
    ft = ["--dataset=passkey", f"--init_from={pre}", "--eval_interval=2"]
    result = train.main(tiny("unused", tmp_path / "ft", *ft, "--max_iters=2", "--seq_len=512"))
    assert result["iter_num"] == 2 and np.isfinite(result["val_loss"])
    with pytest.raises(SystemExit, match=r"^error: seq_len=64 is too short for a passkey example"):
        train.main(tiny("unused", tmp_path / "ft2", *ft))


def test_recall_from_scratch_on_generated_passkeys_logs_the_memory_gates(tmp_path, capsys):
    """dataset='passkey' without a checkpoint (byte tokens), passkey_loss='all', gates started apart: every eval
    row of log.jsonl holds sigmoid(β) per layer and head, and the end of the run names the memory heads."""
    out = tmp_path / "recall"
    result = train.main(["configs/recall_infini.py", f"--out_dir={out}", "--max_iters=4", "--eval_interval=2",
                         "--eval_iters=1", "--batch_size=2", "--device=cpu", "--n_head=4",
                         "--gate_init=(3.0, -3.0)"])
    assert result["iter_num"] == 4 and np.isfinite(result["val_loss"])
    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    gates = [r["gates"] for r in rows if r.get("val_loss") is not None]
    assert len(gates) == 3 and all(len(g) == 2 and len(g[0]) == 4 for g in gates)  # 2 layers x 4 heads
    assert gates[0][0] == pytest.approx([0.9526, 0.0474] * 2, abs=1e-4)  # sigmoid(+-3) before any step
    assert "heads reading mostly from memory: L1H0" in capsys.readouterr().out


def test_bad_passkey_settings_are_one_line(tmp_path):
    for bad, says in (("--passkey_loss=some", "passkey_loss='some'"), ("--tokenizer=bpe", "tokenizer='bpe'"),
                      ("--gate_init=(1.0, 2.0)", "gate_init"), ("--passkey_end_share=1.5", "in \\[0, 1\\]")):
        with pytest.raises(SystemExit, match=says):
            train.main(["configs/recall_infini.py", f"--out_dir={tmp_path}", bad])


def test_a_fresh_run_does_not_replace_a_checkpoint_in_out_dir_unless_told(data_dir, tmp_path):
    train.main(tiny(data_dir, tmp_path, "--max_iters=6"))
    path, log = os.path.join(tmp_path, "ckpt.pt"), os.path.join(tmp_path, "log.jsonl")
    before, log_before = open(path, "rb").read(), open(log).read()
    for init_from in ("scratch", os.path.join(tmp_path, "other.pt")):
        if init_from != "scratch":
            save_checkpoint(init_from, load_checkpoint(path))
        with pytest.raises(SystemExit, match=r"ckpt\.pt exists .* --init_from=resume.* --overwrite=True"):
            train.main(tiny(data_dir, tmp_path, "--max_iters=2", f"--init_from={init_from}"))
        assert open(path, "rb").read() == before and open(log).read() == log_before  # nothing touched
    result = train.main(tiny(data_dir, tmp_path, "--max_iters=2", "--overwrite=True"))
    assert load_checkpoint(result["checkpoint"])["iter_num"] == 2


def test_more_threads_than_cores_and_a_folder_as_checkpoint_are_one_line(data_dir, tmp_path):
    from sample import cpu_cores
    with pytest.raises(SystemExit, match=rf"threads={cpu_cores() + 1} is more than the {cpu_cores()} CPU cores"):
        train.main(tiny(data_dir, tmp_path / "a", f"--threads={cpu_cores() + 1}"))
    train.main(tiny(data_dir, tmp_path / "pre", "--max_iters=2"))
    with pytest.raises(SystemExit, match=r"is a folder, not a checkpoint: did you mean .*pre/ckpt\.pt\?"):
        train.main(tiny(data_dir, tmp_path / "ft", f"--init_from={tmp_path / 'pre'}"))
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint: pass the path of a ckpt.pt file"):
        load_checkpoint(str(tmp_path))


def test_the_seed_sets_both_the_initial_weights_and_the_generated_examples(tmp_path, monkeypatch):
    """--seed is the one knob for a seed sweep (scripts/convergence.py): the same seed gives the same start and the
    same training and validation examples, another seed changes both."""
    from passkey import PasskeyData
    real_init, real_sample = train.init_model, PasskeyData.sample_batch
    seen = {}

    def init_model(*args, **kwargs):
        model = real_init(*args, **kwargs)
        seen['weights'] = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
        return model

    def sample_batch(self, batch_size, seq_len, generator):
        batch = real_sample(self, batch_size, seq_len, generator)
        if batch_size == 2:  # not load_data's one-example length check, which is the same for every seed
            seen['batches'].append(batch[0].clone())
            seen['offsets'].add(self.offsets)
        return batch

    monkeypatch.setattr(train, "init_model", init_model)
    monkeypatch.setattr(PasskeyData, "sample_batch", sample_batch)
    runs = []
    for i, seed in enumerate((1, 1, 2)):
        seen['batches'], seen['offsets'] = [], set()
        train.main([f"--out_dir={tmp_path / str(i)}", f"--seed={seed}", "--max_iters=1", "--batch_size=2",
                    "--eval_iters=1", "--threads=1", "--device=cpu"])
        runs.append((seen['weights'], seen['batches']))
    assert seen['offsets'] == {32}  # the answer at each of the 32 positions of the quick start's segments
    (w1, b1), (w1_again, b1_again), (w2, b2) = runs
    assert torch.equal(w1, w1_again) and all(torch.equal(a, b) for a, b in zip(b1, b1_again))
    assert len(b1) == len(b2) >= 2  # training and validation examples
    assert not torch.equal(w1, w2) and not any(torch.equal(a, b) for a, b in zip(b1, b2))


def test_passkey_one_offset_iters_put_the_answer_at_one_position_first_also_after_a_resume(tmp_path, monkeypatch):
    """The curriculum: the first passkey_one_offset_iters steps train on examples that end with the answer (one
    position in its segment), the rest on the answer at every position; validation asks at every position always.
    The switch is read from the step, so a run resumed in the middle draws what an unbroken run would. While the
    answer sits at one position, each evaluation also logs the val loss there (val_loss_one_offset)."""
    from passkey import PasskeyData
    real_sample = PasskeyData.sample_batch
    seen = []

    def sample_batch(self, batch_size, seq_len, generator):
        if batch_size == 2:  # not load_data's one-example length check
            seen.append((self.loss, self.offsets))
        return real_sample(self, batch_size, seq_len, generator)

    monkeypatch.setattr(PasskeyData, "sample_batch", sample_batch)
    args = [f"--out_dir={tmp_path}", "--batch_size=2", "--eval_iters=1", "--eval_interval=100", "--threads=1",
            "--device=cpu", "--passkey_one_offset_iters=2"]
    train.main(args + ["--max_iters=1"])
    train.main(args + ["--max_iters=4", "--init_from=resume"])
    assert [offsets for loss, offsets in seen if loss == 'all'] == [1, 1, 32, 32]  # training: steps 0 | 1, 2, 3
    # validation: at steps 0 and 1 (the end of the first run) at every position, then at the trained one; at 4 at every
    assert [offsets for loss, offsets in seen if loss == 'answer'] == [32, 1, 32, 1, 32]
    rows = [r for r in map(json.loads, open(tmp_path / "log.jsonl")) if r.get("val_loss") is not None]
    assert [(r["iter"], "val_loss_one_offset" in r) for r in rows] == [(0, True), (4, False)]
    with pytest.raises(SystemExit, match="passkey_one_offset_iters=-1 must be >= 0"):
        train.main(args + ["--passkey_one_offset_iters=-1"])
