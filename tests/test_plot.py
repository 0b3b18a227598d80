"""plot.py as a script: comparing run folders the test writes, and refusing the broken ones one line each."""

import csv
import json

import pytest
import torch
from conftest import one_line_error, run_script
from PIL import Image

import checkpoints
import evaluate
import plot

RECIPE = {"epochs": 3, "batch_size": 256, "lr": 0.003, "label_smoothing": 0.1, "val_size": 5000, "subset": None,
          "augment": True, "elastic": 0.0, "target_acc": None, "precision_used": "fp32", "dataset": "mnist"}


def write_run(folder, seed, val_accs, test_acc=None, **changes):
    """A run folder as train.py (and evaluate.py, given test_acc) leave it."""
    folder.mkdir(parents=True)
    config = {**RECIPE, **changes, "seed": seed, "device": "auto", "data_dir": "data", "run_dir": str(folder),
              "torch": "2.14.1", "command": "train.py", "precision_reason": "auto: ..."}
    (folder / "config.json").write_text(json.dumps(config))
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                                               "seconds"])
        writer.writeheader()
        for epoch, acc in enumerate(val_accs, 1):
            writer.writerow({"epoch": epoch, "train_loss": 0.1, "train_acc": acc, "val_loss": 1 - acc,
                             "val_acc": acc, "lr": 0.001, "seconds": 10.0 * epoch})
    best_pt(folder, weights=hash(str(folder)) % 1000)
    if test_acc is not None:
        evaluated(folder, test_acc)
    return folder


def best_pt(folder, weights):
    """A best.pt in `folder` that loads, whose one weight is `weights` (the network itself is not needed)."""
    checkpoint = {key: None for key in checkpoints.KEYS}
    checkpoints.save(folder / "best.pt", {**checkpoint, "format": checkpoints.FORMAT,
                                          "model": {"weight": torch.tensor([float(weights)])}})


def evaluated(folder, accuracy, where="metrics.json", weights=None):
    """A metrics.json as evaluate.py writes it into run `folder` (or `where` in it, external-NAME/metrics.json
    for --images), of the weights in the run's best.pt as it is now unless `weights` names others."""
    (folder / where).parent.mkdir(exist_ok=True)
    (folder / where).write_text(json.dumps({"accuracy": accuracy, "checkpoint": str(folder / "best.pt"),
                                            "weights": weights or checkpoints.digest_of(folder / "best.pt")}))


@pytest.fixture
def runs(tmp_path):
    return [write_run(tmp_path / "a0", 0, [0.98, 0.990, 0.989], test_acc=0.995),
            write_run(tmp_path / "a1", 1, [0.97, 0.992, 0.993], test_acc=0.996),
            write_run(tmp_path / "a2", 2, [0.98, 0.988, 0.991], test_acc=0.991),
            write_run(tmp_path / "slow", 0, [0.95, 0.97, 0.98], lr=0.001)]


def test_runs_are_labelled_by_what_differs_and_seeds_are_grouped(runs):
    text = plot.comparison_markdown([plot.read_run(folder) for folder in runs])
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[1] == "| a0 | lr=0.003, seed=0 | 3 | 99.00% | 60 s | 99.50% |"
    assert rows[4] == "| slow | lr=0.001, seed=0 | 3 | 98.00% | 60 s |  |"
    group = rows[-1]
    # By hand: best validation 0.990, 0.993, 0.991 -> mean 0.99133, sample std 0.00153;
    # test 0.995, 0.996, 0.991 -> mean 0.994, sample std sqrt((1e-6 + 4e-6 + 9e-6) / 2) = 0.00265.
    assert group == "| 3 seeds (0, 1, 2) | lr=0.003 | 3 | 99.13% ± 0.15 | 60 s | 99.40% ± 0.26 |"


def test_the_script_writes_the_table_and_the_curves_and_skips_bad_folders(runs, tmp_path):
    bad = tmp_path / "bad"
    (bad / "no-config").mkdir(parents=True)
    (write_run(bad / "killed-early", 3, []) / "history.csv").unlink()  # train.py writes it after epoch 1
    torn = write_run(bad / "torn-config", 4, [0.9])
    (torn / "config.json").write_text('{"epochs": 3, "se')
    old = write_run(bad / "old-version", 5, [0.9])
    (old / "history.csv").write_text("epoch,accuracy\n1,0.9\n")
    out = tmp_path / "out"
    result = run_script("plot.py", *runs, *sorted(bad.iterdir()), bad / "mistyped", "--out", out)
    assert result.returncode == 0, result.stderr
    skipped = result.stderr.strip().splitlines()
    assert len(skipped) == 5 and all(line.startswith("skipped: ") for line in skipped), result.stderr
    assert "Traceback" not in result.stderr
    for name, words in [("no-config", "no config.json"), ("killed-early", "no completed epoch"),
                        ("torn-config", "cannot be read"), ("old-version", "another version"),
                        ("mistyped", "no such folder")]:
        assert any(name in line and words in line for line in skipped), (name, skipped)
    written = (out / "comparison.md").read_text()
    assert "99.40% ± 0.26" in written and written.strip() in result.stdout
    with Image.open(out / "curves.png") as image:
        assert image.width >= 1200 and image.height >= 900


def test_a_group_says_how_many_of_its_runs_a_mean_is_over(runs):
    (runs[2] / "metrics.json").unlink()  # a2 not evaluated yet
    text = plot.comparison_markdown([plot.read_run(folder) for folder in runs])
    assert "| 3 seeds (0, 1, 2) | lr=0.003 | 3 | 99.13% ± 0.15 | 60 s | 99.55% ± 0.07 (n=2) |" in text


def test_a_run_resumed_with_newer_code_keeps_its_recipe(runs):
    config = json.loads((runs[1] / "config.json").read_text())
    (runs[1] / "config.json").write_text(json.dumps({**config, "code": "abc", "resumed_with_code": "def"}))
    text = plot.comparison_markdown([plot.read_run(folder) for folder in runs])
    assert "| 3 seeds (0, 1, 2) | lr=0.003 |" in text and "resumed" not in text


def test_the_most_confident_mistakes_come_first():
    worst, wrong = plot.most_confident_mistakes([0, 1, 2, 3], [1, 1, 0, 3], [0.6, 0.9, 0.8, 0.99], 2)
    assert list(worst) == [2, 0] and wrong == 2  # 0.8, then 0.6; the right answers (0.9, 0.99) are no mistakes


def test_the_reliability_diagram_has_a_panel_for_each_set_of_confidences(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(plot, "save", lambda fig, path: drawn.append(fig))
    logits = torch.randn(200, 10, generator=torch.Generator().manual_seed(0)) * 3
    labels = logits.argmax(1).roll(1)
    before, after = evaluate.calibration(logits, labels), evaluate.calibration(logits / 1.5, labels)
    plot.plot_reliability(before, after, 1.5, tmp_path / "reliability.png")
    plot.plot_reliability(before, None, None, tmp_path / "reliability.png")  # no temperature fitted
    titles = [[ax.get_title() for ax in fig.axes if ax.get_title()] for fig in drawn]
    assert [len(fig.axes) for fig in drawn] == [4, 2]
    assert titles[0][0].startswith("softmax as trained") and titles[0][1].startswith("temperature 1.50")
    assert len(titles[1]) == 1


def test_a_figure_that_fails_to_save_leaves_the_png_before(tmp_path):
    (tmp_path / "curves.png").write_bytes(b"the earlier figure")

    class Failing:
        def savefig(self, f, **options):
            f.write(b"half a PNG")
            raise OSError("the disk went away")

    with pytest.raises(OSError):
        plot.save(Failing(), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes() == b"the earlier figure"
    assert [path.name for path in tmp_path.iterdir()] == ["curves.png"]


def test_a_run_stopped_early_is_said_to_be_and_is_no_seed_sample(runs, tmp_path):
    stopped = write_run(tmp_path / "a3", 3, [0.90], test_acc=0.97)  # Ctrl-C after epoch 1 of 3, then evaluated
    reached = write_run(tmp_path / "a4", 4, [0.97, 0.993], test_acc=0.994, target_acc=0.993)  # stopped on target
    text = plot.comparison_markdown([plot.read_run(run) for run in [*runs, stopped, reached]])
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[5] == "| a3 | lr=0.003, seed=3, target-acc=default | 1 of 3 | 90.00% | 10 s | 97.00% |"
    assert rows[6].startswith("| a4 | lr=0.003, seed=4, target-acc=0.993 | 2 |")
    assert "a3 stopped after 1 of its 3 epochs, so it is in no group." in text
    assert rows[-1].startswith("| 3 seeds (0, 1, 2) |")  # a4's recipe differs (its target), a3 is left out


def test_a_run_folder_is_no_place_for_the_comparison(runs):
    line = one_line_error(run_script("plot.py", *runs, "--out", runs[0]))
    assert f"--out {runs[0]} is a run folder of train.py" in line
    assert not (runs[0] / "comparison.md").exists()


def test_a_run_given_twice_counts_once(runs, tmp_path):
    result = run_script("plot.py", *runs, f"{runs[0]}/", runs[1], "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "| 3 seeds (0, 1, 2) | lr=0.003 |" in result.stdout and "# Comparison of 4 runs" in result.stdout
    # `plot.py runs/*` again, once the comparison folder is among runs/*: it is not taken for a run
    result = run_script("plot.py", *runs, tmp_path / "out", "--out", tmp_path / "out")
    assert result.returncode == 0 and "skipped" not in result.stderr, result.stderr


def test_a_copy_of_a_run_is_one_sample_not_two(runs, tmp_path):
    copy = write_run(tmp_path / "a0-copy", 0, [0.5, 0.5, 0.5], test_acc=0.5)  # a0's recipe and seed again
    text = plot.comparison_markdown([plot.read_run(folder) for folder in [*runs, copy]])
    assert "| 3 seeds (0, 1, 2) | lr=0.003 | 3 | 99.13% ± 0.15 | 60 s | 99.40% ± 0.26 |" in text
    assert "a0-copy repeats a0 (the same recipe and seed), so it is counted once." in text
    assert "| a0-copy |" in text  # still listed as a run


def test_nothing_to_compare_is_one_line(tmp_path):
    result = run_script("plot.py", tmp_path / "nothing-here", "--out", tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no run to compare")


def test_external_accuracies_get_a_column_and_their_own_mean(runs):
    for folder, accuracy in zip(runs[:3], (0.97, 0.98, 0.96)):
        evaluated(folder, accuracy, "external-heldout/metrics.json")
    text = plot.comparison_markdown([plot.read_run(folder) for folder in runs])
    header = next(line for line in text.splitlines() if line.startswith("| run"))
    assert header.endswith("| test acc | heldout acc |")
    assert "| a1 | lr=0.003, seed=1 | 3 | 99.30% | 60 s | 99.60% | 98.00% |" in text
    assert text.splitlines()[-1].endswith("| 99.40% ± 0.26 | 97.00% ± 1.00 |")  # by hand: mean 0.97, std 0.01


def test_external_sets_of_the_same_name_from_other_folders_are_not_mixed(runs):
    for folder, accuracy, images in zip(runs[:2], (0.97, 0.5), ("/data/external/heldout", "/tmp/heldout")):
        evaluated(folder, accuracy, "external-heldout/metrics.json")
        metrics = json.loads((folder / "external-heldout" / "metrics.json").read_text())
        (folder / "external-heldout" / "metrics.json").write_text(json.dumps({**metrics, "folder": images}))
    text = plot.comparison_markdown([plot.read_run(folder) for folder in runs])
    header = next(line for line in text.splitlines() if line.startswith("| run"))
    assert header.endswith("| test acc | /data/external/heldout acc | /tmp/heldout acc |")
    assert "| a1 | lr=0.003, seed=1 | 3 | 99.30% | 60 s | 99.60% |  | 50.00% |" in text


def test_results_of_other_weights_are_not_shown_as_best_pts(runs, tmp_path, capsys):
    a0, a1, a2 = runs[:3]
    best_pt(a0, weights=-1)  # evaluated, then the run went on to a better best.pt (or the folder was trained again)
    evaluated(a1, 0.8, "external-heldout/metrics.json")
    best_pt(a1, weights=-2)  # the same for an images folder
    evaluated(a1, 0.97, "external-tune/metrics.json")  # evaluated since
    evaluated(a1, 0.9, weights="of another checkpoint")  # a copied metrics.json, say
    (a2 / "best.pt").unlink()  # evaluated, then its best.pt removed
    read = [plot.read_run(folder) for folder in (a0, a1, a2)]
    assert [run.test_acc for run in read] == [None, None, None]
    assert read[1].external == {"tune": 0.97}
    old, gone = write_run(tmp_path / "old", 0, [0.98]), write_run(tmp_path / "gone", 0, [0.98])
    for folder in (old, gone):  # from an evaluate.py that did not record the weights
        (folder / "metrics.json").write_text(json.dumps({"accuracy": 0.99, "checkpoint": str(folder / "best.pt"),
                                                         "epoch": 1}))
    (gone / "best.pt").unlink()  # no weights on either side is no match
    assert plot.read_run(gone).test_acc is None
    plot.main([str(a0), str(a2), str(old), str(gone), str(runs[3]), "--out", str(tmp_path / "out")])  # 3: no results
    again = "`python evaluate.py --run-dir {}` gives its test accuracy"
    assert capsys.readouterr().err.splitlines() == [
        f"note: {a0}: its metrics.json is of other weights than its best.pt's now; {again.format(a0)}",
        f"note: {a2}: its best.pt is gone (or does not load), so its metrics.json is of nothing there",
        f"note: {old}: its metrics.json is from an evaluate.py that did not say whose weights it was of; "
        f"{again.format(old)}",
        f"note: {gone}: its best.pt is gone (or does not load), so its metrics.json is of nothing there"]


def test_options_are_named_as_train_py_takes_them(tmp_path):
    runs = [write_run(tmp_path / "warped", 0, [0.99], degrees=15.0, label_smoothing=0.05, precision_used="bf16"),
            write_run(tmp_path / "plain", 0, [0.99], degrees=None, label_smoothing=0.1, augment=False)]
    text = plot.comparison_markdown([plot.read_run(folder) for folder in runs])
    # In config.json: augment, degrees, label_smoothing, precision_used.
    assert "| warped | augmented, rotation=15.0, label-smoothing=0.05, precision=bf16 |" in text
    assert "| plain | no-augment, rotation=default, label-smoothing=0.1, precision=fp32 |" in text


def test_a_run_from_before_an_option_existed_counts_as_its_old_behaviour(runs):
    older = runs[0]
    config = json.loads((older / "config.json").read_text())
    del config["dataset"], config["elastic"], config["precision_used"]  # train.py had none of them yet
    config["device_used"] = "cpu"
    (older / "config.json").write_text(json.dumps(config))
    groups = plot.seed_groups([plot.read_run(folder) for folder in runs])
    assert [len(group) for group in groups] == [3]  # still one recipe with a0, a1 and a2


@pytest.mark.parametrize("epochs", [1, 2, 30])
def test_the_training_curves_mark_whole_epochs_only(epochs):
    history = [{"epoch": e, "train_acc": 0.9, "val_acc": 0.95, "train_loss": 0.3, "val_loss": 0.2}
               for e in range(1, epochs + 1)]
    axis = plot._curve(history, "acc", "accuracy (%)", "Accuracy while training", 0.99, percent=True).axes[0]
    low, high = axis.get_xlim()
    ticks = [tick for tick in axis.xaxis.get_major_locator()() if low <= tick <= high]
    assert ticks and all(tick == int(tick) for tick in ticks), ticks  # one epoch drew 0.945, 0.960, ... 1.050
    plot.plt.close("all")


def test_the_confusion_matrix_names_the_images_it_counts(monkeypatch):
    monkeypatch.setattr(plot, "save", lambda fig, path: fig)  # the figure itself, not its PNG
    digits = [str(d) for d in range(10)]
    tune = plot.plot_confusion_matrix([[5] * 10] * 10, digits, "unused.png", "tune, 540 images")
    assert tune.axes[0].get_title() == "Confusion matrix (tune, 540 images)"  # was "(test set)" for any folder
    assert plot.plot_confusion_matrix([[5] * 10] * 10, digits, "unused.png").axes[0].get_title() == (
        "Confusion matrix (test set)")
    plot.plt.close("all")


def test_the_test_accuracy_on_the_curves_names_the_checkpoint_it_is_of(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plot, "save", lambda fig, path: figures.append(fig) or path)
    history = [{"epoch": e, "train_acc": 0.9, "val_acc": 0.9, "train_loss": 0.3, "val_loss": 0.3} for e in (1, 2)]
    plot.plot_history(history, tmp_path, 0.9512, "last.pt, epoch 2", run="seed3")
    labels = [text.get_text() for text in figures[0].axes[0].get_legend().get_texts()]
    assert "test (last.pt, epoch 2): 95.12%" in labels
    assert [fig.axes[0].get_title() for fig in figures] == ["Accuracy while training (seed3)",
                                                            "Loss while training (seed3)"]
