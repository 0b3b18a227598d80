"""model.py and train.py: the seed's module tree, learning, the run directory, resume, NaN and bad options."""

import argparse
import csv
import errno
import json
import platform
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import EVERY_CORE, ROOT, TINY_RUN, one_line_error, run_script, run_until, same_weights
from PIL import Image

import checkpoints
import cli
import data
import runtime
import train
from model import CNN

SEED_TREE = """\
CNN(
  (L1): Sequential(
    (0): Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    (1): ReLU()
    (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  )
  (L2): Sequential(
    (0): Conv2d(32, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    (1): ReLU()
    (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  )
  (L3): Linear(in_features=3136, out_features=1000, bias=True)
  (L4): Linear(in_features=1000, out_features=100, bias=True)
  (L5): Linear(in_features=100, out_features=10, bias=True)
)"""


def test_module_tree_is_the_seeds():
    assert str(CNN()) == SEED_TREE
    assert sum(p.numel() for p in CNN().parameters()) == 3_256_926


def test_forward_gives_logits_and_matches_the_plain_layer_order():
    model = CNN().eval()
    x = torch.randn(5, 1, 28, 28)
    reference = x
    for block in (model.L1, model.L2):  # conv -> ReLU -> pool, exactly as the tree prints
        reference = block(reference)
    reference = model.L5(F.relu(model.L4(F.relu(model.L3(reference.flatten(1))))))
    out = model(x)
    assert out.shape == (5, 10)
    assert torch.allclose(out, reference, atol=1e-6)


def test_dropout_acts_only_in_training_and_at_zero_draws_nothing():
    torch.manual_seed(0)
    dropped, plain = CNN(dropout=0.5), CNN()
    plain.load_state_dict(dropped.state_dict())
    assert str(dropped) == SEED_TREE
    x = torch.randn(8, 1, 28, 28)
    assert torch.equal(dropped.eval()(x), plain.eval()(x))
    dropped.train()
    plain.train()
    assert not torch.equal(dropped(x), dropped(x))
    rng = torch.get_rng_state()
    assert torch.equal(plain(x), plain(x))
    assert torch.equal(torch.get_rng_state(), rng)  # runs made before --dropout existed reproduce


def test_moving_average_follows_the_weights_at_its_decay():
    assert train.moving_average(CNN(), 0.0) is None
    model = CNN()
    averaged = train.moving_average(model, 0.1)  # below the warm-up's 2 / 11 at the second step
    first = {k: t.clone() for k, t in model.state_dict().items()}
    averaged.update_parameters(model)  # the first step copies the weights
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(1.0)
    averaged.update_parameters(model)
    for name, weight in averaged.module.state_dict().items():
        torch.testing.assert_close(weight, first[name] + 0.9)


def test_denormals_are_flushed_in_every_worker_thread():
    # In a fresh process set up as train.py is: torch's worker threads must take the setting too, or
    # Adam's decaying running means slow training down. 1 << 22 numbers are split between the threads.
    check = ("import train, runtime, torch; runtime.flush_denormals(); torch.set_num_threads(2); "
             "smallest = torch.ones(1 << 22, dtype=torch.int32).view(torch.float32); "
             "print(int((smallest * 1.0).view(torch.int32).count_nonzero()))")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0"]


def test_training_steps_lower_the_loss():
    torch.manual_seed(0)
    images = torch.zeros(64, 28, 28, dtype=torch.uint8)
    labels = torch.arange(64) % 10
    for i, label in enumerate(labels):
        images[i, 4:24, 2 + 2 * label:5 + 2 * label] = 255
    model = CNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = data.normalize(images)
    before = F.cross_entropy(model(x), labels).item()
    for _ in range(10):
        loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert F.cross_entropy(model(x), labels).item() < before / 2


def test_run_directory_holds_everything(trained_run):
    run_dir, result = trained_run
    for name in ["config.json", "history.csv", "last.pt", "best.pt", "accuracy.png", "loss.png"]:
        assert (run_dir / name).is_file(), name
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0]) == checkpoints.HISTORY_FIELDS
    assert checkpoints.read_history(run_dir / "history.csv")[1]["epoch"] == 2.0
    assert all(0 <= float(r["val_acc"]) <= 1 and float(r["seconds"]) > 0 for r in rows)
    # One cycle, annealed toward nothing: the last step's rate is the schedule's last, 3e-3 / 25 / 1e4 (the
    # scheduler's rate after that step lies past the cycle's end).
    assert float(rows[-1]["lr"]) == pytest.approx(1.2e-8) and float(rows[0]["lr"]) > 1e-3
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 2 and config["seed"] == 0 and config["torch"] == str(torch.__version__)
    assert config["clean_epochs"] == 1 and "2 epochs of batch 64, the last 1 without augmentation" in result.stdout
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert config["code"] in ((head, head + "+changes") if head else (None,))  # the commit it was trained with
    assert config["device_used"] == runtime.pick_device("auto").type and "torchvision" in config
    assert config["precision"] == "auto" and config["precision_used"] in ("fp32", "bf16")
    assert config["precision_reason"].startswith("auto: ")
    assert f"{config['precision_used']} ({config['precision_reason']})" in result.stdout
    assert "epoch  2/2" in result.stdout and "img/s" in result.stdout
    for name in ["accuracy.png", "loss.png"]:
        with Image.open(run_dir / name) as image:
            assert image.format == "PNG" and image.width > 500
    # Epoch lines report what history.csv holds.
    assert f"val loss {float(rows[1]['val_loss']):.4f} acc {float(rows[1]['val_acc']):.4f}" in result.stdout


def test_checkpoints_load_safely_and_hold_the_whole_state(trained_run):
    run_dir, _ = trained_run
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["format"] == checkpoints.FORMAT
    assert {"model", "optimizer", "scheduler", "rng", "config", "history", "best_val_acc"} <= set(last)
    best = checkpoints.load(run_dir / "best.pt")
    assert best["val_acc"] == best["best_val_acc"] == max(r["val_acc"] for r in last["history"])
    model = checkpoints.load_model(best)
    _, val = data.split_train_val(*data.load_split(last["config"]["data_dir"], fetch=False), 500, seed=0)
    # In the precision the run validated in (bf16 where `auto` picks it): fp32 may read an image otherwise.
    logits = runtime.logits_of(model, val[0][:256], last["config"]["precision_used"], dataset=data.MNIST)
    _, accuracy = train.loss_and_accuracy(logits, val[1][:256])
    assert accuracy == pytest.approx(best["history"][best["epoch"] - 1]["val_acc"], abs=1e-6)


def test_existing_run_is_not_overwritten_without_asking(trained_run, real_mnist_dir, tmp_path):
    # On a copy, and with a short run's options: were the guard gone, this would train over the folder.
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    before = (run_dir / "last.pt").stat().st_mtime_ns
    result = run_script("train.py", "--epochs", 1, *TINY_RUN, "--data-dir", real_mnist_dir, "--run-dir", run_dir)
    assert "--resume" in one_line_error(result)
    assert (run_dir / "last.pt").stat().st_mtime_ns == before


def test_a_run_whose_last_pt_was_deleted_is_still_not_overwritten(trained_run, real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    (run_dir / "last.pt").unlink()  # to save space, say; best.pt and the evaluation stay
    before = (run_dir / "best.pt").read_bytes()
    line = one_line_error(run_script("train.py", "--epochs", 1, *TINY_RUN, "--data-dir", real_mnist_dir,
                                     "--run-dir", run_dir))
    assert "already holds a run" in line and (run_dir / "best.pt").read_bytes() == before
    line = one_line_error(run_script("train.py", "--resume", "--data-dir", real_mnist_dir, "--run-dir", run_dir))
    assert "holds a run whose last.pt is gone" in line and "--overwrite" in line


def test_a_start_removes_leftover_temp_files_but_not_those_being_written(tmp_path):
    killed = [tmp_path / ".last.pt.k3j9.tmp", tmp_path / ".predictions.csv.x1.tmp"]  # a train.py, an evaluate.py
    for path in killed:
        path.write_bytes(b"")
    (tmp_path / "last.pt").write_bytes(b"")
    with data.atomic_write(tmp_path / "accuracy.png") as f:  # an evaluate.py redrawing the curves right now
        f.write(b"drawn")
        train.prepare_run_dir(argparse.Namespace(run_dir=tmp_path, resume=True, overwrite=False))
        assert len(list(tmp_path.glob(".accuracy.png.*.tmp"))) == 1
    assert not any(path.exists() for path in killed)
    assert (tmp_path / "accuracy.png").read_bytes() == b"drawn" and not list(tmp_path.glob(".*.tmp"))



def test_where_nothing_can_be_locked_runs_and_writes_go_on_unlocked(tmp_path, monkeypatch):
    with open(tmp_path / "a", "wb") as first, open(tmp_path / "a", "rb") as second:
        assert data.lock(first)
        with pytest.raises(BlockingIOError):  # what tells a run folder or a temp file in use
            data.lock(second, wait=False)

    def refused(*args):  # as on a network file system without locks
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(data.fcntl, "flock", refused)
    assert train.lock_folder(tmp_path) is None
    with data.atomic_write(tmp_path / "out.txt", "w") as f:
        f.write("written")
    assert (tmp_path / "out.txt").read_text() == "written"
    (tmp_path / ".out.txt.k3j9.tmp").write_bytes(b"")  # a writer at work or a leftover: it cannot be told
    data.remove_stale_temp_files(tmp_path)
    assert (tmp_path / ".out.txt.k3j9.tmp").exists()

@pytest.mark.parametrize("option, said", [
    (["--blur", "10"], "--blur: must be from 0 to 1, got 10"),
    (["--rotation", "400"], "--rotation: must be from 0 to 180"),
    (["--shear", "10"], "--shear: must be from 0 to 1"), (["--noise", "50"], "--noise: must be from 0 to 1"),
    (["--elastic", "100"], "--elastic: must be from 0 to 5"), (["--shift", "30"], "--shift: must be from 0 to 14"),
    (["--lr", "inf"], "--lr: must be greater than 0 and finite, got inf"),
    (["--clean-epochs", "-1"], "--clean-epochs: must be 0 or more, got -1"),
])
def test_augmentation_strengths_past_what_makes_sense_are_refused(option, said, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(option)
    assert said in capsys.readouterr().err


def test_the_ends_of_each_range_are_taken():
    args = train.parse_args(["--rotation", "180", "--blur", "1", "--shift", "0", "--weight-decay", "0",
                             "--label-smoothing", "0", "--seed", str(2**63 - 1)])
    assert (args.degrees, args.blur, args.shift, args.weight_decay, args.label_smoothing) == (180, 1, 0, 0, 0)
    assert args.seed == 2**63 - 1
    assert train.parse_args(["--target-acc", "1"]).target_acc == 1.0  # every validation image right


def test_seeds_outside_what_torch_and_numpy_take_are_refused_in_one_line(tmp_path):
    for seed in ("-1", str(2**64)):
        line = one_line_error(run_script("train.py", "--seed", seed, "--run-dir", tmp_path / "run"))
        assert f"--seed: must be from 0 to 2**63 - 1, got {seed}" in line
    assert not (tmp_path / "run").exists()


def test_accuracy_is_exact_so_a_target_is_reached_when_hit():
    labels = torch.arange(500) % 10
    logits = F.one_hot(labels, 10).float()
    logits[:20] = F.one_hot((labels[:20] + 1) % 10, 10).float()  # 480 of 500 right
    _, accuracy = train.loss_and_accuracy(logits, labels)
    assert accuracy == 0.96 and checkpoints.reached_target([{"val_acc": accuracy}], 0.96)


def test_commands_printed_for_a_folder_with_spaces_can_be_pasted(tmp_path):
    run_dir = tmp_path / "my runs" / "a"
    history = [{"epoch": 1, "val_acc": 0.9}]
    assert train.what_next(run_dir, history, "my data").endswith(
        f"Next: python evaluate.py --run-dir '{run_dir}' --data-dir 'my data'")
    (run_dir).mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"")
    assert train.how_to_resume(run_dir).endswith(f"python train.py --run-dir '{run_dir}' --resume")


def test_resume_refuses_options_that_would_change_the_run(trained_run, real_mnist_dir):
    run_dir, _ = trained_run
    before = {name: (run_dir / name).stat().st_mtime_ns for name in ("last.pt", "config.json")}
    # --batch-size 128 is the default typed out, and still not the run's 64.
    result = run_script("train.py", "--resume", "--epochs", 5, "--lr", 0.01, "--seed", 0, "--batch-size", 128,
                        "--data-dir", real_mnist_dir, "--run-dir", run_dir)
    line = one_line_error(result)
    assert "epochs 2 -> 5" in line and "lr 0.003 -> 0.01" in line and "batch_size 64 -> 128" in line
    assert "seed" not in line
    assert {name: (run_dir / name).stat().st_mtime_ns for name in before} == before


def test_resuming_a_finished_run_changes_nothing(trained_run, real_mnist_dir):
    run_dir, _ = trained_run
    kept = ("last.pt", "best.pt", "config.json", "history.csv")
    before = {name: (run_dir / name).stat().st_mtime_ns for name in kept}
    result = run_script("train.py", "--resume", "--data-dir", real_mnist_dir, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    assert f"nothing to resume: {run_dir} finished after epoch 2 of 2" in result.stdout
    assert "training on" not in result.stdout and "epoch  " not in result.stdout
    assert "Best validation accuracy" in result.stdout and "Next: python evaluate.py" in result.stdout
    assert {name: (run_dir / name).stat().st_mtime_ns for name in kept} == before


def test_resuming_a_finished_run_whose_history_csv_missed_its_last_epoch_mends_it(trained_run, real_mnist_dir,
                                                                                 tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    lines = (run_dir / "history.csv").read_text().splitlines()
    (run_dir / "history.csv").write_text("\n".join(lines[:2]) + "\n")  # killed after last.pt, before this file
    result = run_script("train.py", "--resume", "--data-dir", real_mnist_dir, "--run-dir", run_dir)
    assert result.returncode == 0 and "nothing to resume" in result.stdout, result.stderr
    assert [row["epoch"] for row in checkpoints.read_history(run_dir / "history.csv")] == [1.0, 2.0]


def test_resuming_a_folder_that_holds_no_run_says_so_and_makes_none(real_mnist_dir, tmp_path):
    line = one_line_error(run_script("train.py", "--resume", "--data-dir", real_mnist_dir, "--run-dir", tmp_path / "x"))
    assert line == (f"error: nothing to resume: {tmp_path / 'x'} has no last.pt (it holds no run); start it with: "
                    f"python train.py --run-dir {tmp_path / 'x'}")
    assert not (tmp_path / "x").exists()


def train_validated_as(monkeypatch, validation, data_dir, run_dir):
    """A tiny run of train.py in this process, one epoch for each (loss, accuracy) its validation is made
    to give. The process-wide settings train.py makes for speed are left as they are."""
    validation = iter(validation)
    monkeypatch.setattr(train, "loss_and_accuracy", lambda logits, labels: next(validation))
    monkeypatch.setattr(runtime, "flush_denormals", lambda: None)
    monkeypatch.setattr(runtime, "keep_freed_memory_mapped", lambda: None)
    args = train.parse_args([*map(str, TINY_RUN), "--epochs", "4", "--data-dir", str(data_dir), "--run-dir",
                             str(run_dir)])
    with train.locked_run_dir(args.run_dir):
        train.train(args, torch.device("cpu"), set())


def test_best_pt_holds_the_best_validation_epoch_and_the_later_of_a_tie(real_mnist_dir, tmp_path, monkeypatch):
    validation = [(0.3, 0.90), (0.2, 0.95), (0.2, 0.95), (0.25, 0.93)]
    train_validated_as(monkeypatch, validation, real_mnist_dir, tmp_path)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 3
    assert torch.load(tmp_path / "last.pt", weights_only=True)["best_val_acc"] == 0.95


def test_a_validation_loss_that_is_not_finite_stops_the_run_before_saving_it(real_mnist_dir, tmp_path, monkeypatch):
    with pytest.raises(FloatingPointError, match="^the validation loss became nan in epoch 2$"):
        train_validated_as(monkeypatch, [(0.3, 0.90), (float("nan"), 0.95)], real_mnist_dir, tmp_path)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 1
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1


def test_each_epoch_draws_its_own_shuffle_and_augmentation(monkeypatch):
    drawn, generator = [], data.epoch_generator
    monkeypatch.setattr(data, "epoch_generator", lambda *seed_and_epoch: drawn.append(seed_and_epoch)
                        or generator(*seed_and_epoch))
    args = train.parse_args(["--epochs", "2", "--seed", "7", "--batch-size", "32"])
    images, labels = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8), torch.arange(64) % 10
    model, optimizer, scheduler = train.build(args, len(images), torch.device("cpu"))
    for epoch in (1, 2):
        train.train_one_epoch(model, optimizer, scheduler, images, labels, args, epoch)
    assert drawn == [(7, 1), (7, 2)]


@pytest.mark.parametrize("status, expected", [("", "abc123"), (" M train.py\n", "abc123+changes")])
def test_the_code_version_says_whether_tracked_files_were_changed(monkeypatch, status, expected):
    answers = {"rev-parse": (0, "abc123\n"), "status": (0, status)}

    def git(command, **kwargs):
        code, out = answers[command[1]]
        return subprocess.CompletedProcess(command, code, out, "")

    monkeypatch.setattr(train.subprocess, "run", git)
    assert train.code_version() == expected
    answers["rev-parse"] = (128, "")  # not a git checkout (a copied folder, an unpacked archive)
    assert train.code_version() is None


def test_the_closing_line_names_the_data_and_says_when_the_evaluation_is_of_an_earlier_best(trained_run, tmp_path):
    history = [{"epoch": 1, "val_acc": 0.9}, {"epoch": 2, "val_acc": 0.95}]
    assert train.what_next(tmp_path, history, "data").endswith(f"Next: python evaluate.py --run-dir {tmp_path}")
    shutil.copy(trained_run[0] / "best.pt", tmp_path / "best.pt")
    best = checkpoints.load(tmp_path / "best.pt")
    evaluated = {"checkpoint": str(tmp_path / "best.pt"), "epoch": 1, "weights": checkpoints.weights_digest(best)}
    (tmp_path / "metrics.json").write_text(json.dumps(evaluated))
    assert train.what_next(tmp_path, history, "data").endswith(f"--run-dir {tmp_path}")  # of these very weights
    best["model"]["L5.bias"] += 1  # best.pt trained on (or the folder trained again) since the evaluation
    checkpoints.save(tmp_path / "best.pt", best)
    line = train.what_next(tmp_path, history, "/mnt/mnist")
    assert line.endswith(f"--run-dir {tmp_path} --data-dir /mnt/mnist (its results are of an earlier best.pt, epoch 1)")
    assert "(epoch 2)" in line
    del evaluated["weights"]  # by evaluate.py before results named their weights
    (tmp_path / "metrics.json").write_text(json.dumps(evaluated))
    assert train.what_next(tmp_path, history, "data").endswith(
        "(its results are from an evaluate.py that did not say whose weights they were of)")


def test_overwrite_into_a_folder_without_a_run_removes_nothing(real_mnist_dir, tmp_path):
    (tmp_path / "report.md").write_text("my own notes")
    (tmp_path / "metrics.json").write_text("{}")
    result = run_script("train.py", "--overwrite", "--epochs", 1, *TINY_RUN, "--data-dir", real_mnist_dir,
                        "--run-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 epoch of batch 64" in result.stdout  # not "1 epochs"
    assert (tmp_path / "report.md").read_text() == "my own notes" and (tmp_path / "metrics.json").exists()


def test_a_subset_larger_than_the_training_split_is_said_not_silently_cut(real_mnist_dir, capsys):
    args = train.parse_args(["--subset", "100000", "--val-size", "59000", "--data-dir", str(real_mnist_dir)])
    train_x, _, val_x, _ = train.load_data(args, torch.device("cpu"))
    assert len(train_x) == 1000 and len(val_x) == 59000
    assert capsys.readouterr().out == ("note: --subset 100000 is more than the 1000 images of the training split; "
                                       "training on all of them\n")


DEVICES = ["cpu"] + ["cuda"] * torch.cuda.is_available() + ["mps"] * torch.backends.mps.is_available()


@pytest.mark.parametrize("device", DEVICES)
def test_saved_random_state_brings_back_the_same_draws(device):
    device = torch.device(device)
    state = runtime.rng_state(device)
    assert set(state) == {"torch"} | ({device.type} - {"cpu"})  # a GPU's generator is its own
    first = torch.rand(5, device=device), torch.rand(5)
    torch.rand(3, device=device), torch.rand(3)
    runtime.set_rng_state(state, device)
    again = torch.rand(5, device=device), torch.rand(5)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_resume_after_a_kill_gives_bitwise_the_same_weights(real_mnist_dir, tmp_path):
    # With dropout, so the random state that masks draw from must come back too, and with a moving
    # average of the weights, which must come back beside the weights it follows.
    # On every core, as a user's runs are, not on a test worker's share of them.
    common = ["--epochs", 3, *TINY_RUN, "--dropout", 0.3, "--ema", 0.9, "--data-dir", real_mnist_dir]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_script("train.py", *common, "--run-dir", straight, env=EVERY_CORE).returncode == 0
    code, _, _ = run_until("train.py", *common, "--run-dir", killed, marker="epoch  1/3", sig=signal.SIGKILL,
                           env=EVERY_CORE)
    assert code == -signal.SIGKILL
    last = torch.load(killed / "last.pt", weights_only=True)
    assert last["epoch"] < 3
    last["config"]["code"] = "0" * 40  # as if the epochs so far had been trained by an earlier commit
    checkpoints.save(killed / "last.pt", last)
    resumed = run_script("train.py", "--resume", "--run-dir", killed, "--data-dir", real_mnist_dir, env=EVERY_CORE)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    config = json.loads((killed / "config.json").read_text())
    assert config["code"] == "0" * 40 and config["resumed_with_code"] == train.code_version()
    a, b = torch.load(straight / "last.pt", weights_only=True), torch.load(killed / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    assert [r["val_loss"] for r in a["history"]] == [r["val_loss"] for r in b["history"]]
    assert same_weights(straight / "last.pt", killed / "last.pt")
    assert all(torch.equal(t, b["trained"][k]) for k, t in a["trained"].items())
    assert not torch.equal(a["model"]["L5.weight"], a["trained"]["L5.weight"])  # "model" is the average


def test_the_moving_average_warms_up_so_a_short_run_is_not_averaged_with_its_start():
    model = nn.Linear(3, 2)
    averaged = train.moving_average(model, 0.999)
    averaged.update_parameters(model)  # the first step's weights
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    for _ in range(200):  # a plain average at 0.999 would still hold 82% of the first step's
        averaged.update_parameters(model)
    for p in averaged.module.parameters():
        assert torch.allclose(p, torch.ones_like(p), atol=1e-3)
    averaged.n_averaged.fill_(100_000)  # and once warm, each step moves it by 1 - decay
    with torch.no_grad():
        for p in averaged.module.parameters():
            p.zero_()
    averaged.update_parameters(model)
    for p in averaged.module.parameters():
        assert torch.allclose(p, torch.full_like(p, 0.001))


def test_an_epoch_trains_on_augmented_images_with_smoothed_labels_unless_told_not_to():
    plain = weights_after_an_epoch("--no-augment")
    assert torch.equal(weights_after_an_epoch("--no-augment"), plain)  # the same seed, the same weights
    assert not torch.equal(weights_after_an_epoch(), plain)  # the default warps what it trains on
    assert not torch.equal(weights_after_an_epoch("--no-augment", "--label-smoothing", "0"), plain)  # and smooths


def test_the_last_clean_epochs_train_on_the_images_as_they_are():
    for dataset in data.DATASETS:  # by default the last epoch of either dataset is clean, and only the last
        args = train.parse_args(["--dataset", dataset])
        assert train.augmentation(args, epoch=args.epochs) is None and train.augmentation(args, epoch=args.epochs - 1)
    last = weights_after_an_epoch(epoch=2)  # of 2
    assert torch.equal(last, weights_after_an_epoch("--no-augment", epoch=2))
    assert not torch.equal(weights_after_an_epoch("--clean-epochs", "0", epoch=2), last)
    # More than the run has: all but the first, which one epoch of MNIST needs warped
    assert torch.equal(weights_after_an_epoch("--clean-epochs", "5"), weights_after_an_epoch())
    assert torch.equal(weights_after_an_epoch("--clean-epochs", "5", epoch=2), last)
    one_epoch = train.parse_args(["--epochs", "1"])
    assert train.augmentation(one_epoch, epoch=1) == data.MNIST.augmentation


def test_a_run_from_before_clean_epochs_resumes_augmenting_every_epoch(tmp_path):
    args = train.parse_args([])
    train.restore_args(args, {"config": {"epochs": 6, "seed": 0}}, tmp_path, given=set())
    assert args.clean_epochs == 0


def weights_after_an_epoch(*options, epoch=1):
    """The weights after epoch `epoch` of 2 of train.py's epoch function, from the seed's start, on 64 images."""
    images = torch.zeros(64, 28, 28, dtype=torch.uint8)
    images[:, 6:22, 12:16] = 255
    args = train.parse_args(["--batch-size", "32", "--epochs", "2", *options])
    model, optimizer, scheduler = train.build(args, len(images), torch.device("cpu"))
    train.train_one_epoch(model, optimizer, scheduler, images, torch.arange(64) % 10, args, epoch)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_augmentation_options_reach_the_augmentation():
    def first_epochs(*options):
        return train.augmentation(train.parse_args(list(options)), epoch=1)

    assert first_epochs() == data.MNIST.augmentation
    chosen = first_epochs("--thickness", "0.3", "--blur", "0.5", "--shear", "0.2")
    assert (chosen.thickness, chosen.blur, chosen.shear) == (0.3, 0.5, 0.2)
    assert chosen.degrees == data.MNIST.augmentation.degrees  # the rest as the dataset has it
    geometry = first_epochs("--rotation", "15", "--scale", "0.2", "--shift", "3")
    assert (geometry.degrees, geometry.scale, geometry.shift) == (15, 0.2, 3)
    assert first_epochs("--dataset", "fashion-mnist", "--rotation", "5").flip
    fashion = first_epochs("--dataset", "fashion-mnist")
    assert fashion == data.FASHION_MNIST.augmentation and fashion.flip
    assert first_epochs("--no-augment", "--blur", "0.5") is None


def test_weight_decay_shrinks_the_weights_and_zero_is_plain_adam():
    def weights_after_a_step(*options):
        args = train.parse_args(["--epochs", "1", *options])
        model, optimizer, _ = train.build(args, 1000, torch.device("cpu"))
        for p in model.parameters():
            p.grad = torch.zeros_like(p)  # no gradient: only the decay moves a weight
        optimizer.step()
        return model.L3.weight.detach()

    before = train.build(train.parse_args(["--epochs", "1"]), 1000, torch.device("cpu"))[0].L3.weight
    plain = weights_after_a_step()
    decayed = weights_after_a_step("--weight-decay", "0.5")
    assert torch.equal(plain, before)
    assert decayed.abs().sum() < before.abs().sum()


def test_history_csv_that_is_missing_damaged_or_foreign_is_told_apart(tmp_path):
    path = tmp_path / "history.csv"
    assert checkpoints.read_history(path) == []
    path.write_text("epoch,val_acc,val_loss,seconds\n1,0.98,not a number,3.5\n")
    with pytest.raises(cli.RunError, match="history.csv is damaged"):
        checkpoints.read_history(path)
    path.write_text("epoch,accuracy\n1,0.98\n")
    with pytest.raises(cli.RunError, match="history.csv is from another version of train.py"):
        checkpoints.read_history(path)
    for cut in ("1,0.98\n", "1,0.98,0.1,3,7\n"):  # a row cut short, or run into the next
        path.write_text("epoch,val_acc,val_loss,seconds\n" + cut)
        with pytest.raises(cli.RunError, match="history.csv is damaged"):
            checkpoints.read_history(path)


def test_resuming_a_finished_run_rewrites_a_damaged_history_csv(tmp_path):
    history = [{"epoch": epoch, "train_loss": 0.1, "train_acc": 0.9, "val_loss": 0.1, "val_acc": 0.9 + epoch / 100,
                "lr": 1e-3, "seconds": 5.0} for epoch in (1, 2)]
    path = tmp_path / "history.csv"
    path.write_text("epoch,val_acc,val_loss,seconds\n1,0.91,not a number,5\n")
    train.mend_history(path, history)
    assert [row["epoch"] for row in checkpoints.read_history(path)] == [1.0, 2.0]


def test_a_checkpoint_missing_part_of_its_state_is_refused_in_one_line(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format": checkpoints.FORMAT, "model": CNN().state_dict()}, path)
    with pytest.raises(cli.RunError, match=r"last.pt is an incomplete checkpoint \(no best_val_acc, config, epoch, "
                                           r"history, optimizer, rng, scheduler, val_acc\)"):
        checkpoints.load(path)


def test_best_epoch_is_the_later_of_a_tie_as_best_pt_keeps_it():
    history = [{"epoch": 1, "val_acc": 0.98}, {"epoch": 2, "val_acc": 0.99}, {"epoch": 3, "val_acc": 0.99},
               {"epoch": 4, "val_acc": 0.985}]
    assert checkpoints.best_epoch(history)["epoch"] == 3


@pytest.mark.parametrize("amx, vendor, flags, expected", [
    (True, "GenuineIntel", "avx512f avx512_bf16 amx_bf16 amx_tile", "bf16"),
    (False, "AuthenticAMD", "avx2 avx512f avx512_bf16", "bf16"),  # Zen 4: bf16 dot products at twice the rate
    (False, "GenuineIntel", "avx2 avx512f avx512_bf16", "fp32"),  # a Xeon without AMX: bf16 slower
    (False, "AuthenticAMD", "avx2 fma", "fp32"),  # Zen 3 and before: no bf16 at all
])
def test_auto_precision_takes_bf16_where_the_cpu_runs_it_faster(monkeypatch, amx, vendor, flags, expected):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: "avx512_bf16" in flags)
    monkeypatch.setattr(runtime, "cpuinfo", lambda field: {"vendor_id": vendor}.get(field, ""))
    precision, reason = runtime.pick_precision("auto", "cpu")
    assert precision == expected and reason.startswith("auto: ") and ("AMX" in reason or "bf16" in reason)
    assert ("no native bf16" in reason) == ("avx512_bf16" not in flags)
    assert runtime.pick_precision("fp32", "cpu") == ("fp32", "asked for")
    if "avx512_bf16" in flags:  # asked for, bf16 is taken even where auto would not take it
        assert runtime.pick_precision("bf16", "cpu") == ("bf16", "asked for")


def test_an_arm_cpu_with_bf16_may_train_in_it(avx512_cpu_without_bf16, monkeypatch):
    # torch answers for Graviton 3 or Apple's M2 as for that Xeon (AVX512-BF16 and AMX are x86's), but their
    # BF16 extension is native, where the Xeon's mkldnn "yes" was emulation.
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert runtime.cpu_has_native_bf16()
    assert runtime.pick_precision("bf16", "cpu") == ("bf16", "asked for")


def test_cpu_fields_are_read_from_proc_cpuinfo(monkeypatch):
    listing = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
               "model name\t: AMD EPYC 9R14 96-Core Processor\nflags\t\t: fpu avx2 avx512_bf16\n\n"
               "processor\t: 1\nvendor_id\t: AuthenticAMD\n")
    monkeypatch.setattr(runtime.Path, "read_text", lambda path: listing if str(path) == "/proc/cpuinfo" else "")
    assert runtime.cpu_vendor() == "AuthenticAMD" and runtime.cpu_name() == "AMD EPYC 9R14 96-Core Processor"
    assert runtime.cpuinfo("flags") == "fpu avx2 avx512_bf16"

    def no_such_file(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(runtime.Path, "read_text", no_such_file)  # macOS, Windows
    assert runtime.cpu_vendor() == "" and runtime.cpu_name()


def test_bf16_on_a_cpu_without_bf16_is_refused_in_one_line(avx512_cpu_without_bf16):
    with pytest.raises(runtime.RunError, match="--precision auto or fp32"):
        runtime.pick_precision("bf16", "cpu")
    assert runtime.pick_precision("auto", "cpu") == ("fp32", "auto: this CPU has no native bf16")


def test_logits_of_many_pictures_are_computed_a_batch_at_a_time():
    torch.manual_seed(0)
    model = CNN().eval()
    batches = []
    model.register_forward_hook(lambda module, inputs, output: batches.append(len(inputs[0])))
    x = torch.randn(7, 1, 28, 28)
    logits = runtime.logits_of(model, x, batch_size=3)
    assert batches == [3, 3, 1]
    assert torch.allclose(logits, model(x), atol=1e-5)


def test_on_the_cpu_the_network_is_laid_out_channels_last():
    # in the default layout, oneDNN's convolutions made a training step 1.3-1.7 times as long (Zen 4, fp32 and bf16)
    args = train.parse_args(["--epochs", "1"])
    model, _, _ = train.build(args, 100, torch.device("cpu"))
    loaded = checkpoints.load_model({"model": CNN().state_dict()})
    for network in (model, loaded):
        assert network.L2[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert not network.L2[0].weight.is_contiguous()


def test_logits_are_of_the_model_in_eval_mode():
    # train.py validates straight after an epoch, with the model still in training mode: dropout must be off.
    torch.manual_seed(0)
    model = CNN(dropout=0.5).train()
    x = torch.randn(8, 1, 28, 28)
    logits = runtime.logits_of(model, x)
    assert not model.training and torch.equal(logits, runtime.logits_of(model.train(), x))
    assert torch.allclose(logits, model.eval()(x), atol=1e-5)


def test_bf16_inference_stays_close_to_fp32_and_returns_fp32():
    torch.manual_seed(0)
    model = CNN().eval()
    images = torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8)
    fp32 = runtime.logits_of(model, images, "fp32", dataset=data.MNIST)
    bf16 = runtime.logits_of(model, images, "bf16", dataset=data.MNIST)
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)  # autocast really ran in bf16
    assert torch.allclose(fp32, bf16, atol=0.05 * fp32.abs().max().item())
    computed_in = []
    model.L3.register_forward_hook(lambda module, inputs, output: computed_in.append(output.dtype))
    runtime.logits_of(model, images, "bf16", dataset=data.MNIST)
    runtime.logits_of(model, images, "fp32", dataset=data.MNIST)
    assert computed_in == [torch.bfloat16, torch.float32]  # bf16, not fp16, which would need a loss scaler
