"""Faults inflicted on the real scripts, run as a user runs them: nothing is lost, nothing runs that shouldn't.

Kills at any moment, Ctrl-C and SIGTERM, corrupt data, hostile checkpoints, bad options and paths, a
full disk, numerical blow-ups and bad images. conftest.py counts these tests and prints
`faults: N tried, M survived` at the end of the run.
"""

import argparse
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_RUN, RunsCode, damaged_palette_bmp, one_line_error, run_script, run_until, same_weights
from PIL import Image, ImageDraw

import checkpoints
import cli
import data
import train

OFFLINE = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}  # pip can reach no package index


def assert_every_checkpoint_loads(run_dir):
    for path in Path(run_dir).glob("*.pt"):
        checkpoints.load_model(checkpoints.load(path))


# --- 1. kill -9 ------------------------------------------------------------------------------


def start_training(args, run_dir):
    resume = ["--resume"] if (run_dir / "last.pt").exists() else []
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, args), "--run-dir", str(run_dir),
                             *resume], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(process, condition, timeout=120):
    """SIGKILL the process the moment `condition()` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if condition():
            process.kill()
            process.wait()
            return True
        time.sleep(0.001)
    process.wait()
    return False


def test_kill_9_mid_epoch_and_mid_checkpoint_write_loses_nothing(real_mnist_dir, tmp_path):
    args = ["--epochs", 4, *TINY_RUN, "--data-dir", real_mnist_dir]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_script("train.py", *args, "--run-dir", straight).returncode == 0

    def writing_last():
        return any(killed.glob(".last.pt.*.tmp"))

    def epochs_done(n):
        return lambda: (killed / "history.csv").exists() and len((killed / "history.csv").read_text().split()) > n

    moments = [("inside the first write of last.pt", writing_last),
               ("in the middle of epoch 2", epochs_done(1)),
               ("inside a later write of last.pt", writing_last)]
    for moment, condition in moments:
        assert kill_when(start_training(args, killed), condition), f"the run ended before the kill {moment}"
        if condition is writing_last:
            assert any(killed.glob(".last.pt.*.tmp")), "the kill did not land inside a write"
        assert_every_checkpoint_loads(killed)
    finished = run_script("train.py", *args, "--run-dir", killed, "--resume")
    assert finished.returncode == 0, finished.stderr
    assert not any(killed.glob(".*.tmp")), "stale temp files were not cleaned up"
    assert same_weights(straight / "last.pt", killed / "last.pt")
    assert same_weights(straight / "best.pt", killed / "best.pt")


# --- 2. SIGINT and SIGTERM ---------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_cleanly_and_says_how_to_resume(sig, real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--epochs", 3, *TINY_RUN, "--data-dir", real_mnist_dir, "--run-dir", run_dir]
    code, _, err = run_until("train.py", *args, marker="epoch  1/3", sig=sig)
    assert code == 128 + sig
    assert "Traceback" not in err
    assert f"stopped by {sig.name}" in err and f"python train.py --run-dir {run_dir} --resume" in err
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] >= 1
    assert_every_checkpoint_loads(run_dir)
    resumed = run_script("train.py", "--resume", "--run-dir", run_dir, "--data-dir", real_mnist_dir)
    assert resumed.returncode == 0 and torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 3


def test_ctrl_c_while_the_curves_are_drawn_says_the_training_finished(real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    # The signal lands inside plot_history, at the one moment a timed kill cannot be sure to hit.
    interrupt_the_plots = ("import os, signal, sys, time; import cli, plot, train; "
                           "plot.plot_history = lambda *_, **__: (os.kill(os.getpid(), signal.SIGINT), "
                           "time.sleep(60)); "
                           "cli.run(train.main)")
    result = subprocess.run([sys.executable, "-c", interrupt_the_plots, "--epochs", "1", *map(str, TINY_RUN),
                             "--data-dir", str(real_mnist_dir), "--run-dir", str(run_dir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr
    assert "while drawing the training curves" in result.stderr
    assert f"python evaluate.py --run-dir {run_dir}" in result.stderr  # which draws them too
    assert torch.load(run_dir / "best.pt", weights_only=True)["epoch"] == 1


def test_ctrl_c_while_last_pt_loads_is_a_stop_not_a_damaged_checkpoint(monkeypatch, tmp_path):
    torch.save({"format": checkpoints.FORMAT}, tmp_path / "last.pt")

    def interrupted(*args, **kwargs):
        cli.stop_on_signal(signal.SIGINT, None)

    monkeypatch.setattr(torch, "load", interrupted)
    with pytest.raises(cli.Stopped):  # which train.py turns into "stopped by SIGINT" and how to resume
        checkpoints.load(tmp_path / "last.pt")


def test_stopping_evaluate_is_one_line_and_leaves_whole_files(trained_run, real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    # The report is printed just before the results are written: the signal lands among the writes. (SIGTERM,
    # as `kill` or a cluster's time limit sends it; Ctrl-C takes the same way out, by cli.run.)
    returned, _, err = run_until("evaluate.py", "--run-dir", run_dir, "--data-dir", real_mnist_dir,
                                 marker="test images", sig=signal.SIGTERM)
    assert returned == 143 and "Traceback" not in err
    assert err.strip().splitlines() == ["stopped by SIGTERM"]
    for path in run_dir.glob("*.json"):
        json.loads(path.read_text())
    assert not any(run_dir.rglob(".*.tmp"))


def test_every_script_ends_ctrl_c_and_sigterm_in_one_line_with_code_130_and_143(capsys):
    def interrupted():
        raise KeyboardInterrupt

    def terminated():
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(SystemExit) as stopped:
        cli.run(interrupted)
    assert stopped.value.code == 130 and capsys.readouterr().err.strip() == "stopped by Ctrl-C"
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stopped:
            cli.run(terminated)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert stopped.value.code == 143 and capsys.readouterr().err.strip() == "stopped by SIGTERM"
    scripts = ["train.py", "evaluate.py", "predict.py", "serve.py", "plot.py", "make_external.py",
               "benchmarks/bench.py", "benchmarks/serve_load.py"]
    for script in scripts:  # each runs its main() through cli.run
        entry = (ROOT / script).read_text().split('if __name__ == "__main__":')[1]
        assert "cli.run(main)" in entry, script


def run_into_a_closed_pipe(script, *args):
    """Run a script as `python script ... | true` runs it: its stdout a pipe that no one reads any more, and
    buffered as a user's is (PYTHONUNBUFFERED set, the first print fails instead)."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=env,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)


def test_a_closed_output_pipe_stops_train_py_in_one_line_with_the_way_back(real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = run_into_a_closed_pipe("train.py", "--epochs", 2, *TINY_RUN, "--data-dir", real_mnist_dir,
                                    "--run-dir", run_dir)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "Exception" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"stopped: the output pipe was closed; the last completed epoch is in {run_dir / 'last.pt'}. "
        f"Resume with: python train.py --run-dir {run_dir} --resume"]
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 1


def test_a_closed_output_pipe_stops_predict_py_in_one_line(trained_run, tmp_path):
    image = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(image).line([(50, 15), (50, 85)], fill=0, width=8)
    image.save(tmp_path / "one.png")
    result = run_into_a_closed_pipe("predict.py", tmp_path / "one.png", "--run-dir", trained_run[0])
    assert result.returncode == 1
    # (after the note that the shared run, never evaluated, is not calibrated)
    assert result.stderr.strip().splitlines()[-1:] == ["stopped: the output pipe was closed"]
    assert "Traceback" not in result.stderr


# --- 3. corrupt data ---------------------------------------------------------------------------


def damage_truncate(raw):
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1_000_000])
    return path


def damage_label_length(raw):
    path = raw / "train-labels-idx1-ubyte"
    labels = np.frombuffer(path.read_bytes()[8:], dtype=np.uint8)[:-1]
    data.write_idx(path, labels)  # a valid IDX file, one label short
    return path


def damage_flip_bytes(raw):
    path = raw / "t10k-images-idx3-ubyte"
    blob = bytearray(path.read_bytes())
    blob[5000:5010] = bytes(255 - b for b in blob[5000:5010])
    path.write_bytes(bytes(blob))
    return path


def damage_missing(raw):
    path = raw / "t10k-labels-idx1-ubyte"
    path.unlink()
    return path


def damage_bad_gz(raw):
    path = raw / "train-labels-idx1-ubyte"
    path.unlink()
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b this is not gzip")
    return path


def copy_mnist(real_mnist_dir, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(data.raw_dir(real_mnist_dir), data.raw_dir(data_dir))
    return data_dir


@pytest.mark.parametrize("damage", [damage_truncate, damage_label_length, damage_flip_bytes, damage_missing,
                                    damage_bad_gz])
def test_corrupt_data_is_detected_and_replaced_before_training(damage, real_mnist_dir, tmp_path):
    data_dir = copy_mnist(real_mnist_dir, tmp_path)
    path = damage(data.raw_dir(data_dir))
    result = run_script("train.py", "--epochs", 1, *TINY_RUN, "--data-dir", data_dir, "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "need replacing" in result.stderr and path.name in result.stderr
    assert data.file_hash(path) == data.MNIST.checksums[path.name]


@pytest.mark.parametrize("damage", [damage_truncate, damage_bad_gz])
def test_corrupt_data_with_no_good_source_is_one_clear_error(damage, real_mnist_dir, tmp_path):
    data_dir = copy_mnist(real_mnist_dir, tmp_path)
    damage(data.raw_dir(data_dir))
    run_dir = tmp_path / "run"
    result = run_script("train.py", "--epochs", 1, *TINY_RUN, "--data-dir", data_dir, "--run-dir", run_dir,
                        env=OFFLINE)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not get MNIST") and str(data.raw_dir(data_dir)) in last
    assert not list(run_dir.glob("*.pt")), "a model was trained on missing data"


# --- 4. hostile checkpoints --------------------------------------------------------------------


def hostile_checkpoint(kind, path, good):
    """Write a bad checkpoint of `kind` at `path`; `good` is a real checkpoint file to start from."""
    if kind == "runs-code":
        torch.save({"format": checkpoints.FORMAT, "model": RunsCode(path.parent / "code-ran")}, path)
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "other-architecture":
        checkpoint = torch.load(good, weights_only=True)
        checkpoint["model"] = torch.nn.Linear(784, 10).state_dict()
        torch.save(checkpoint, path)
    elif kind == "not-ours":
        torch.save(torch.nn.Linear(784, 10).state_dict(), path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()


HOSTILE = ["runs-code", "random-bytes", "truncated", "other-architecture", "not-ours", "empty", "directory"]


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "predict.py"])
def test_hostile_checkpoints_are_refused_in_one_line(script, kind, trained_run, real_mnist_dir, tmp_path):
    good_run, _ = trained_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoint = run_dir / ("last.pt" if script == "train.py" else "best.pt")
    hostile_checkpoint(kind, checkpoint, good_run / "last.pt")
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(image)
    args = {"train.py": ["--resume", "--data-dir", real_mnist_dir], "evaluate.py": ["--data-dir", real_mnist_dir],
            "predict.py": [image]}[script]
    result = run_script(script, *args, "--run-dir", run_dir, timeout=120)
    line = one_line_error(result)
    assert str(checkpoint) in line or "different model" in line
    assert not (run_dir / "code-ran").exists(), "the checkpoint's code ran"
    assert sorted(p.name for p in run_dir.iterdir()) == [checkpoint.name], "something was written"


def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is(trained_run, tmp_path):
    good = (trained_run[0] / "last.pt").read_bytes()
    for content, problem in [(b'{"epochs": 6}', "it is not a file torch.save writes"),  # config.json, say
                             (good[: len(good) // 2], "it was cut short or damaged"), (b"", "it is empty")]:
        (tmp_path / "bad.pt").write_bytes(content)
        with pytest.raises(cli.RunError) as refused:
            checkpoints.load(tmp_path / "bad.pt")
        assert str(refused.value) == (f"{tmp_path / 'bad.pt'} is not a checkpoint ({problem}); pass a .pt file "
                                      "train.py wrote, a run's best.pt or last.pt")


def test_each_kind_of_bad_checkpoint_is_told_for_what_it_is(tmp_path):
    def refusal(path):
        with pytest.raises(cli.RunError) as refused:
            checkpoints.load(path)
        return str(refused.value)

    code = tmp_path / "code.pt"
    hostile_checkpoint("runs-code", code, None)
    assert refusal(code) == (f"{code} is not a safe checkpoint (it would import {os.mkdir.__module__}.mkdir); "
                             "refusing to load it")
    assert not (tmp_path / "code-ran").exists()
    # torch words a class it does not allow otherwise than a module it blocks
    torch.save({"format": checkpoints.FORMAT, "config": argparse.Namespace(epochs=6)}, tmp_path / "args.pt")
    assert "(it would import argparse.Namespace)" in refusal(tmp_path / "args.pt")
    hostile_checkpoint("not-ours", tmp_path / "linear.pt", None)  # a Linear's state_dict
    torch.save({key: 0 for key in checkpoints.KEYS} | {"format": "mnist-cnn-checkpoint-v2"}, tmp_path / "later.pt")
    for path in (tmp_path / "linear.pt", tmp_path / "later.pt"):  # the second has every key, in a later format
        assert refusal(path) == f"{path} is not a checkpoint written by this repo's train.py"
    folder = tmp_path / "folder.pt"
    hostile_checkpoint("directory", folder, None)
    assert refusal(folder) == f"{folder} is not a file; pass the path of a .pt checkpoint"
    # A run's last.pt that is not there: the run has not saved an epoch yet, and training it makes one.
    assert refusal(tmp_path / "last.pt") == (f"no checkpoint at {tmp_path / 'last.pt'}; train one with `python "
                                             f"train.py --run-dir {tmp_path}` or pass --checkpoint")


@pytest.mark.parametrize("script", ["evaluate.py", "predict.py", "serve.py"])
def test_a_run_with_no_checkpoint_says_how_to_train_it(script, tmp_path):
    run_dir = tmp_path / "nothere"
    line = one_line_error(run_script(script, *(["digit.png"] if script == "predict.py" else []), "--run-dir", run_dir))
    assert line == (f"error: no checkpoint at {run_dir / 'best.pt'}; train one with `python train.py --run-dir "
                    f"{run_dir}` or pass --checkpoint")
    assert not run_dir.exists()


def test_a_checkpoint_file_name_that_is_not_there_is_not_answered_with_a_run_to_train(tmp_path):
    # Training into the folder that holds it would make no nope.pt (and the folder may be a run already).
    with pytest.raises(cli.RunError) as refused:
        checkpoints.load(tmp_path / "nope.pt")
    assert str(refused.value) == (f"no checkpoint at {tmp_path / 'nope.pt'}; pass the path of a .pt file train.py "
                                  "wrote (a run's best.pt or last.pt)")


@pytest.mark.parametrize("part", ["optimizer", "rng"])
def test_a_training_state_that_does_not_fit_is_refused_in_one_line(part, trained_run, real_mnist_dir, tmp_path):
    good_run, _ = trained_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoint = torch.load(good_run / "last.pt", weights_only=True)
    checkpoint[part] = {"optimizer": torch.optim.Adam(torch.nn.Linear(784, 10).parameters()).state_dict(),
                        "rng": {"torch": torch.zeros(3, dtype=torch.uint8)}}[part]
    torch.save(checkpoint, run_dir / "last.pt")
    before = (run_dir / "last.pt").read_bytes()
    result = run_script("train.py", "--resume", "--run-dir", run_dir, "--data-dir", real_mnist_dir, timeout=120)
    line = one_line_error(result)
    assert str(run_dir / "last.pt") in line and "does not fit" in line and "--overwrite" in line
    assert sorted(p.name for p in run_dir.iterdir()) == ["last.pt"], "something was written"
    assert (run_dir / "last.pt").read_bytes() == before


# --- 5. bad options and paths ------------------------------------------------------------------


@pytest.mark.parametrize("option", [
    ["--epochs", "0"], ["--epochs", "-3"], ["--batch-size", "0"], ["--lr", "-0.1"], ["--lr", "nan"],
    ["--epochs", "two"], ["--device", "tpu"], ["--target-acc", "1.5"],
])
def test_bad_options_are_refused_in_one_line(option, tmp_path):
    result = run_script("train.py", *option, "--run-dir", tmp_path / "run", timeout=60)
    assert result.returncode == 2
    assert option[0] in one_line_error(result)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("script", ["evaluate.py", "predict.py"])
def test_bad_options_of_the_other_scripts_are_refused_in_one_line(script, tmp_path):
    args = ["--batch-size", "0"] if script == "evaluate.py" else ["x.png", "--top", "-1"]
    assert "must be greater than 0" in one_line_error(run_script(script, *args, timeout=60))


def test_a_run_and_a_checkpoint_both_given_are_refused_not_one_ignored(tmp_path):
    line = one_line_error(run_script("predict.py", "x.png", "--run-dir", tmp_path, "--checkpoint", "b.pt", timeout=60))
    assert "argument --checkpoint: not allowed with argument --run-dir" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused(tmp_path):
    result = run_script("train.py", "--device", "cuda", "--run-dir", tmp_path / "run", timeout=60)
    assert "--device cuda" in one_line_error(result)
    assert not (tmp_path / "run").exists()


def test_validation_split_larger_than_the_data_is_refused(real_mnist_dir, tmp_path):
    run_dir = tmp_path / "runs" / "big-val"
    result = run_script("train.py", "--val-size", 60000, "--data-dir", real_mnist_dir, "--run-dir", run_dir)
    assert "--val-size must be between 1 and 59999" in one_line_error(result)
    assert not (tmp_path / "runs").exists(), "the folders made for the run were left behind"


def read_only_dir(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root ignores permissions; sysfs refuses new entries even to root
        return Path("/sys/mnist-run")
    return folder / "run"


def test_run_dir_that_cannot_be_written_is_refused(real_mnist_dir, tmp_path):
    run_dir = read_only_dir(tmp_path)
    result = run_script("train.py", *TINY_RUN, "--data-dir", real_mnist_dir, "--run-dir", run_dir, timeout=60)
    assert "cannot write to --run-dir" in one_line_error(result)
    assert not run_dir.exists()


def test_a_second_run_into_a_folder_in_use_is_refused(real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    first = start_training(["--epochs", 500, *TINY_RUN, "--data-dir", real_mnist_dir], run_dir)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "config.json").exists():  # written once the first run holds the folder
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.05)
        for how in ([], ["--overwrite"], ["--resume"]):
            second = run_script("train.py", *TINY_RUN, "--seed", 1, "--data-dir", real_mnist_dir, "--run-dir",
                                run_dir, *how, timeout=60)
            assert "is in use by another train.py" in one_line_error(second)
        assert first.poll() is None, "the first run ended before the second was tried"
    finally:
        first.kill()
        first.wait()
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 0, "the second run wrote into the first's"
    again = run_script("train.py", "--epochs", 1, *TINY_RUN, "--data-dir", real_mnist_dir, "--run-dir", run_dir,
                       "--overwrite", timeout=120)
    assert again.returncode == 0, again.stderr  # the killed run's lock went with it


@pytest.mark.parametrize("script", ["plot.py", "make_external.py", "benchmarks/bench.py"])
@pytest.mark.parametrize("where", ["read-only", "a file"])
def test_an_out_folder_that_cannot_be_written_is_refused_before_the_work(script, where, trained_run, tmp_path):
    args = {"plot.py": [trained_run[0]], "benchmarks/bench.py": ["--quick"]}.get(script, [])
    if where == "a file":
        folder = tmp_path / "results.txt"
        folder.write_text("not a folder")
    else:
        folder = read_only_dir(tmp_path)
    out = folder / "results.json" if script == "benchmarks/bench.py" else folder
    result = run_script(script, *args, "--out", out, timeout=60)
    error = one_line_error(result)
    assert str(folder) in error and ("is a file" if where == "a file" else "cannot write to") in error
    assert "--out" in error and result.stdout == ""
    assert folder.is_file() or not folder.exists()


@pytest.mark.parametrize("images", [False, True])
def test_evaluate_refuses_a_checkpoint_whose_folder_it_cannot_write_to(images, trained_run, tmp_path):
    run_dir, _ = trained_run
    with open(run_dir / "best.pt", "rb") as checkpoint:
        # The checkpoint, read through its open file: /proc/PID/fd takes no new file, even from root.
        path = Path(f"/proc/{os.getpid()}/fd/{checkpoint.fileno()}")
        result = run_script("evaluate.py", "--checkpoint", path, *(["--images", tmp_path] if images else []))
    error = one_line_error(result)
    assert f"cannot write to the checkpoint's folder {path.parent}" in error and "copy it to a folder" in error
    assert result.stdout == ""


def test_serve_refuses_a_port_out_of_range():
    assert "--port: must be a port from 0 to 65535" in one_line_error(run_script("serve.py", "--port", 70000))


def file_size_limit(limit):
    """For subprocess's preexec_fn: no file may grow past `limit` bytes, as if the disk were full there."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past it fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_keeps_the_last_epoch_and_says_how_to_resume(real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    common = [*TINY_RUN, "--data-dir", real_mnist_dir, "--run-dir", run_dir]
    code, _, _ = run_until("train.py", "--epochs", 3, *common, marker="epoch  1/3", sig=signal.SIGINT)
    assert code == 128 + signal.SIGINT
    before = {path.name: path.read_bytes() for path in run_dir.glob("*.pt")}
    full = run_script("train.py", "--resume", *common, preexec_fn=file_size_limit(len(before["last.pt"]) // 2))
    error = one_line_error(full)
    assert "could not write" in error and "File too large" in error
    assert f"python train.py --run-dir {run_dir} --resume" in error
    assert {path.name: path.read_bytes() for path in run_dir.glob("*.pt")} == before
    assert not any(run_dir.glob(".*.tmp")), "the half-written checkpoint was left behind"
    resumed = run_script("train.py", "--resume", *common)
    assert resumed.returncode == 0 and torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 3


def test_a_full_disk_in_the_first_epoch_leaves_no_checkpoint_without_a_run(tmp_path, monkeypatch):
    def save_with_the_disk_full_at_last_pt(path, checkpoint):
        if path.name == "last.pt":
            raise data.DataError(f"could not write {path} (No space left on device)")
        torch.save(checkpoint, path)

    monkeypatch.setattr(checkpoints, "save", save_with_the_disk_full_at_last_pt)
    with pytest.raises(cli.RunError, match="no epoch was saved.*run the same command again"):
        train.save_epoch(tmp_path, {"epoch": 1}, [], is_best=True)
    assert list(tmp_path.iterdir()) == [], "a best.pt that evaluate.py would take for a run"
    # Later, the epoch before's last.pt is there to resume from, and the new best.pt is what resuming remakes.
    torch.save({"epoch": 1}, tmp_path / "last.pt")
    with pytest.raises(cli.RunError, match="Resume with"):
        train.save_epoch(tmp_path, {"epoch": 2}, [], is_best=True)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 2
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_a_full_disk_at_history_csv_says_how_to_resume_from_the_epoch_just_saved(tmp_path, monkeypatch):
    def history_with_the_disk_full(path, history):
        raise data.DataError(f"could not write {path}: No space left on device; it was left as it was")

    monkeypatch.setattr(checkpoints, "write_history", history_with_the_disk_full)
    with pytest.raises(cli.RunError) as stopped:
        train.save_epoch(tmp_path, {"epoch": 3}, [{"epoch": 3}], is_best=False)
    assert str(stopped.value).endswith(f"Resume with: python train.py --run-dir {tmp_path} --resume")
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 3  # a plain rerun is refused: resume it


def test_a_full_disk_while_mending_a_finished_runs_history_says_how_to_go_on(trained_run, real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    lines = (run_dir / "history.csv").read_text().splitlines()
    (run_dir / "history.csv").write_text("\n".join(lines[:2]) + "\n")  # killed after last.pt, before this file
    before = (run_dir / "history.csv").read_bytes()
    full = run_script("train.py", "--resume", "--data-dir", real_mnist_dir, "--run-dir", run_dir,
                      preexec_fn=file_size_limit(len(before)))
    error = one_line_error(full)
    assert "could not write" in error and "history.csv" in error
    assert error.endswith(f"Resume with: python train.py --run-dir {run_dir} --resume")
    assert (run_dir / "history.csv").read_bytes() == before
    mended = run_script("train.py", "--resume", "--data-dir", real_mnist_dir, "--run-dir", run_dir)
    assert mended.returncode == 0 and "nothing to resume" in mended.stdout, mended.stderr
    assert len(checkpoints.read_history(run_dir / "history.csv")) == len(lines) - 1


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("not a folder")
    run_dir = tmp_path / "run"
    result = run_script("train.py", *TINY_RUN, "--data-dir", not_a_folder, "--run-dir", run_dir, timeout=60)
    assert "is a file" in one_line_error(result)
    assert not run_dir.exists() and not_a_folder.read_text() == "not a folder"


# --- 6. numerical faults -----------------------------------------------------------------------


def test_nan_weights_stop_the_run_and_keep_the_last_good_checkpoint(real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    common = [*TINY_RUN, "--data-dir", real_mnist_dir, "--run-dir", run_dir]
    result = run_script("train.py", "--epochs", 3, *common, "--target-acc", 0.0001)
    assert result.returncode == 0 and "reached --target-acc 0.0001: stopping after epoch 1 of 3" in result.stdout
    good = (run_dir / "best.pt").read_bytes()
    # Stopped at its target, the run is finished: resuming it changes nothing.
    config = (run_dir / "config.json").read_bytes()
    result = run_script("train.py", "--resume", *common)
    assert result.returncode == 0 and f"nothing to resume: {run_dir} finished after epoch 1 of 3" in result.stdout
    assert (run_dir / "config.json").read_bytes() == config
    # Poison the weights in last.pt, as an overflow would, and let training carry on from it.
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    checkpoint["model"]["L5.bias"][0] = float("nan")
    checkpoint["config"]["target_acc"] = None
    torch.save(checkpoint, run_dir / "last.pt")
    result = run_script("train.py", "--resume", *common)
    assert result.returncode != 0
    assert "became nan" in result.stderr and "lower --lr" in result.stderr
    assert (run_dir / "best.pt").read_bytes() == good
    checkpoints.load_model(checkpoints.load(run_dir / "best.pt"))


def test_huge_learning_rate_is_stopped_with_advice(real_mnist_dir, tmp_path):
    result = run_script("train.py", "--epochs", 2, *TINY_RUN, "--lr", 1e12, "--weight-decay", 0.1,
                        "--data-dir", real_mnist_dir, "--run-dir", tmp_path / "run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the training loss became")
    assert "Try a lower --lr (now 1000000000000.0) or --weight-decay (now 0.1)." in last
    assert "no epoch had completed, so nothing was saved" in last and not (tmp_path / "run" / "best.pt").exists()


# --- 7. bad images for predict.py --------------------------------------------------------------


def digit_array(size):
    canvas = np.zeros((size, size), dtype=np.float32)
    canvas[size // 5: size * 4 // 5, size * 9 // 20: size * 11 // 20] = 1.0  # a '1'
    return canvas


def write_bad_images(folder):
    folder.mkdir()
    files = {}
    files["empty.png"] = b""
    files["text.png"] = b"this is not a picture\n"
    for name, path in files.items():
        (folder / name).write_bytes(path)
    Image.new("L", (1, 1), 128).save(folder / "one-pixel.png")
    Image.new("RGB", (64, 64), "white").save(folder / "blank.png")
    Image.fromarray((digit_array(4000) * 255).astype(np.uint8)).save(folder / "huge.png")
    Image.fromarray((digit_array(64) * 65535).astype(np.uint16)).save(folder / "sixteen-bit.png")
    Image.fromarray((255 - digit_array(64) * 255).astype(np.uint8)).convert("CMYK").save(folder / "cmyk.jpg")
    # Cut short: Pillow warns about its metadata, then refuses it; the warning must not add lines.
    tiff = io.BytesIO()
    Image.new("L", (64, 64), 200).save(tiff, "TIFF")
    (folder / "truncated.tiff").write_bytes(tiff.getvalue()[:100])
    (folder / "palette.bmp").write_bytes(damaged_palette_bmp())
    for name, value in [("nan.tiff", np.nan), ("inf.tiff", np.inf)]:  # a scientific picture with a bad pixel
        pixels = digit_array(64)
        pixels[0, 0] = value
        Image.fromarray(pixels).save(folder / name)
    os.mkfifo(folder / "pipe.png")  # which nothing writes to: reading it would wait for ever
    # One pixel tall, ink in the middle: such a picture once sent images.py round a loop for ever.
    Image.fromarray(np.repeat(np.uint8([230, 20, 230]), 40)[None]).save(folder / "one-row.png")
    return sorted(folder.iterdir())


def test_predict_survives_bad_images_and_classifies_the_rest(trained_run, tmp_path):
    run_dir, _ = trained_run
    (tmp_path / "no-images").mkdir()
    (tmp_path / "no-images" / "notes.txt").write_text("not a picture")
    paths = write_bad_images(tmp_path / "images") + [tmp_path / "missing.png", tmp_path / "no-images"]
    good = tmp_path / "good.png"
    image = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(image).line([(50, 15), (50, 85)], fill=0, width=8)
    image.save(good)
    result = run_script("predict.py", good, *paths, "--run-dir", run_dir, "--top", 3, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    out = result.stdout.splitlines()
    err = [line for line in result.stderr.splitlines() if not line.startswith("note: confidences as trained")]
    assert len(out) + len(err) == len(paths) + 1, "every file gets exactly one line"
    for path in paths + [good]:
        assert sum(line.startswith(f"{path}: ") for line in out + err) == 1, path
    for name in ["empty.png", "text.png", "one-pixel.png", "blank.png", "truncated.tiff", "palette.bmp", "nan.tiff",
                 "inf.tiff", "pipe.png"]:
        assert any(line.startswith(f"{tmp_path / 'images' / name}: error: ") for line in err), name
    # the file system's reason, without its repeating the path the line starts with
    assert f"{tmp_path / 'missing.png'}: error: cannot read image: No such file or directory" in err
    assert f"{tmp_path / 'no-images'}: error: no image files in this folder" in err
    for path in [good, *(tmp_path / "images" / n for n in ["huge.png", "sixteen-bit.png", "cmyk.jpg"])]:
        line = next(line for line in out if line.startswith(f"{path}: "))
        assert len(line.split("%)")) == 4, line  # three guesses, each 'digit (p%)'
