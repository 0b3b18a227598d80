"""evaluate.py's metrics against a confusion matrix worked out by hand, and its report formatting."""

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_RUN, one_line_error, run_script
from PIL import Image, ImageDraw

import checkpoints
import data
import evaluate
import images
import plot
import runtime
import strokes
import train
from model import CNN


def test_metrics_match_a_hand_worked_confusion_matrix():
    # Digits 0, 1, 2 only. True/predicted pairs:
    #   0->0, 0->0, 0->1      (two of three zeros right)
    #   1->1, 1->1            (both ones right)
    #   2->2, 2->0, 2->2, 2->2 (three of four twos right)
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predictions = [0, 0, 1, 1, 1, 2, 0, 2, 2]
    m = evaluate.compute_metrics(labels, predictions)
    # Hand-worked: predicted 0 three times (two right), 1 three times (two right), 2 three times (all right).
    assert m["accuracy"] == pytest.approx(7 / 9)
    per = {c["class"]: c for c in m["per_class"]}
    assert [c["name"] for c in m["per_class"]] == [str(d) for d in range(10)]
    assert per[0]["precision"] == pytest.approx(2 / 3) and per[0]["recall"] == pytest.approx(2 / 3)
    assert per[1]["precision"] == pytest.approx(2 / 3) and per[1]["recall"] == pytest.approx(1.0)
    assert per[2]["precision"] == pytest.approx(1.0) and per[2]["recall"] == pytest.approx(3 / 4)
    assert per[2]["f1"] == pytest.approx(2 * 1.0 * 0.75 / 1.75)
    assert [per[d]["support"] for d in range(10)] == [3, 2, 4, 0, 0, 0, 0, 0, 0, 0]
    # The macro averages are over the three digits the labels hold, not all ten.
    assert m["precision_macro"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((2 / 3 + 1 + 3 / 4) / 3)
    assert m["recall_weighted"] == pytest.approx((3 * 2 / 3 + 2 * 1 + 4 * 3 / 4) / 9)
    assert m["precision_weighted"] == pytest.approx((3 * 2 / 3 + 2 * 2 / 3 + 4 * 1) / 9)  # by support, not pooled
    assert m["confusion_matrix"][0][:3] == [2, 1, 0]
    assert m["confusion_matrix"][1][:3] == [0, 2, 0]
    assert m["confusion_matrix"][2][:3] == [1, 0, 3]
    assert len(m["confusion_matrix"]) == 10 and all(len(row) == 10 for row in m["confusion_matrix"])


def test_macro_averages_are_over_the_classes_that_occur_where_each_is_defined():
    # A folder of 1s and 7s, one 7 read as a 3. Class 3 was predicted once, wrongly: its precision is 0
    # and counts; it holds no image, so it has no recall. The other seven classes never occur.
    m = evaluate.compute_metrics([1, 1, 7, 7], [1, 1, 7, 3])
    assert m["precision_macro"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["recall_macro"] == pytest.approx((1 + 1 / 2) / 2)
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    per = {c["class"]: c for c in m["per_class"]}
    assert (per[3]["precision"], per[3]["recall"], per[3]["f1"]) == (0.0, None, 0.0)
    assert (per[5]["precision"], per[5]["recall"], per[5]["f1"]) == (None, None, None)
    assert [c["class"] for c in evaluate.occurring(m["per_class"])] == [1, 3, 7]
    assert evaluate.compute_metrics([1, 7], [1, 7])["precision_macro"] == 1.0
    # A class no image was given as: its precision is undefined and left out, its recall is 0.
    m = evaluate.compute_metrics([0, 0, 1], [0, 0, 0])
    assert m["precision_macro"] == pytest.approx(2 / 3) and m["recall_macro"] == pytest.approx(1 / 2)
    text = evaluate.format_report(m)
    assert "—" in text and "undefined" in text
    json.dumps(m, allow_nan=False)  # JSON that every reader takes: no NaN


def test_report_lists_every_digit_and_the_matrix():
    m = evaluate.compute_metrics(list(range(10)) * 2, list(range(10)) * 2)
    text = evaluate.format_report(m)
    assert "accuracy            1.0000" in text
    assert text.count("\n") > 25
    assert "     9     0     0     0     0     0     0     0     0     0     2" in text


# --- evaluate.py and predict.py as a user runs them ------------------------------------------


@pytest.fixture(scope="module")
def evaluated_run(trained_run, real_mnist_dir, tmp_path_factory):
    # A copy: the shared run stays unevaluated (and uncalibrated) for the tests of other files, in any order.
    run_dir = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(trained_run[0], run_dir)
    result = run_script("evaluate.py", "--run-dir", run_dir, "--data-dir", real_mnist_dir)
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_metrics_json_and_predictions_csv_agree(evaluated_run):
    run_dir, result = evaluated_run

    def no_nan(constant):  # NaN and Infinity are Python's extension, which other JSON readers refuse
        raise AssertionError(f"metrics.json holds {constant}")

    metrics = json.loads((run_dir / "metrics.json").read_text(), parse_constant=no_nan)
    assert None in metrics["calibration"]["before"]["bins"]["accuracy"]  # a tiny run leaves some bins empty
    for key in ["accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted", "per_class", "confusion_matrix", "checkpoint", "epoch"]:
        assert key in metrics, key
    assert metrics["checkpoint"] == str(run_dir / "best.pt") and metrics["epoch"] in (1, 2)
    assert [set(c) for c in metrics["per_class"]] == [{"class", "name", "precision", "recall", "f1", "support"}] * 10
    assert metrics["dataset"] == "MNIST"
    # What the figures were computed on, and of which weights.
    assert metrics["device"] == "cpu" and metrics["precision"] == runtime.pick_precision("auto", "cpu")[0]
    assert metrics["weights"] == checkpoints.weights_digest(checkpoints.load(run_dir / "best.pt"))
    with open(run_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "label", "prediction", "confidence", "label_name", "prediction_name"]
    assert all(r["label_name"] == r["label"] and r["prediction_name"] == r["prediction"] for r in rows)
    assert len(rows) == 10000 and [int(r["index"]) for r in rows] == list(range(10000))
    labels = [int(r["label"]) for r in rows]
    predictions = [int(r["prediction"]) for r in rows]
    assert labels[:5] == [7, 2, 1, 0, 4]  # the real test set, in order
    assert sum(a == b for a, b in zip(labels, predictions)) / 10000 == pytest.approx(metrics["accuracy"])
    assert all(0.1 <= float(r["confidence"]) <= 1 for r in rows)  # a max of 10 probabilities
    matrix = metrics["confusion_matrix"]
    assert sum(map(sum, matrix)) == 10000
    assert matrix[7][2] == sum(1 for a, b in zip(labels, predictions) if (a, b) == (7, 2))
    assert [c["support"] for c in metrics["per_class"]] == [labels.count(d) for d in range(10)]
    assert f"accuracy            {metrics['accuracy']:.4f}" in result.stdout


FIGURES = ["accuracy.png", "loss.png", "confusion_matrix.png", "per_class.png", "misclassified.png",
           "reliability.png", "filters.png", "grad_cam.png", "feature_map.png"]


def test_every_plot_and_the_report_are_written(evaluated_run):
    run_dir, _ = evaluated_run
    for name in FIGURES:
        with Image.open(run_dir / name) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 400, name
            grey = np.asarray(image.convert("L"), dtype=float)
        assert grey.std() > 20 and (grey < 128).mean() > 0.01, f"{name} looks empty"
        assert f"]({name})" in (run_dir / "report.md").read_text()
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# MNIST test-set report") and report.count("\n| ") >= 12
    assert "## Calibration" in report and "| calibrated |" in report and "Grad-CAM" in report


def test_calibration_is_reported_kept_and_used_by_predict(evaluated_run, real_mnist_dir, tmp_path):
    run_dir, result = evaluated_run
    calibration = json.loads((run_dir / "metrics.json").read_text())["calibration"]
    assert calibration["fitted_on"].startswith("the run's validation split")
    for when in ("before", "after"):
        assert 0 <= calibration[when]["ece"] < 1 and calibration[when]["nll"] > 0
        assert sum(calibration[when]["bins"]["count"]) == 10000
    assert calibration["after"]["nll"] <= calibration["before"]["nll"] + 1e-6
    assert f"calibration (temperature {calibration['temperature']:.3f}" in result.stdout
    said = (f"Temperature {calibration['temperature']:.3f}, fitted on {calibration['fitted_on']}: a softmax "
            "temperature (Guo et al. 2017), which predict.py and serve.py apply.")
    assert said in (run_dir / "report.md").read_text()
    # Answering only when sure, counted again from predictions.csv (its confidences are the calibrated ones;
    # they are rounded to 6 decimals, which may move an image or two across a threshold).
    assert "answering only when sure (calibrated confidences)" in result.stdout
    with open(run_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for answered in calibration["after"]["answered"]:
        sure = [r for r in rows if float(r["confidence"]) >= answered["confidence"]]
        assert answered["share"] == pytest.approx(len(sure) / len(rows), abs=3e-4)
        right = [r["label"] == r["prediction"] for r in sure]
        assert answered["accuracy"] == (pytest.approx(np.mean(right), abs=3e-3) if right else None)
    kept = json.loads((run_dir / "temperature.json").read_text())
    assert kept["checkpoint"] == "best.pt" and kept["temperature"] == calibration["temperature"]
    # Fitted on the run's 500 validation images, in the precision evaluate.py picked, and not on the test set.
    checkpoint = checkpoints.load(run_dir / "best.pt")
    _, (val_x, val_y) = data.training_splits(real_mnist_dir, 500, 256, fetch=False)
    precision, _ = runtime.pick_precision("auto", "cpu")
    val_logits = runtime.logits_of(checkpoints.load_model(checkpoint), val_x, precision, dataset=data.MNIST)
    assert kept["temperature"] == pytest.approx(evaluate.fit_temperature(val_logits, val_y), rel=1e-4)
    # predict.py prints softmax(logits / T) for the same checkpoint.
    (tmp_path / "seven.png").write_bytes(png_of(strokes.render(7)))
    printed = run_script("predict.py", tmp_path / "seven.png", "--run-dir", run_dir, "--top", 1)
    assert "not calibrated" not in printed.stderr
    assert printed.returncode == 0
    model = checkpoints.load_model(checkpoints.load(run_dir / "best.pt"))
    with torch.inference_mode():
        logits = model(images.image_to_mnist(tmp_path / "seven.png")[None])[0]
    expected = (logits / kept["temperature"]).softmax(0)
    assert f"{int(expected.argmax())} ({expected.max().item():.1%})" in printed.stdout


def test_evaluating_another_checkpoint_leaves_the_runs_own_results(evaluated_run, real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated_run[0], run_dir)
    own = ("metrics.json", "temperature.json", "report.md", "predictions.csv", "confusion_matrix.png")
    before = {name: (run_dir / name).read_bytes() for name in own}
    result = run_script("evaluate.py", "--checkpoint", run_dir / "last.pt", "--data-dir", real_mnist_dir)
    assert result.returncode == 0, result.stderr
    assert {name: (run_dir / name).read_bytes() for name in own} == before
    last = run_dir / "evaluation-last"
    assert json.loads((last / "metrics.json").read_text())["checkpoint"] == str(run_dir / "last.pt")
    assert {name for name in own} <= {path.name for path in last.iterdir()}
    # Each checkpoint gets its own temperature where predict.py and serve.py look for it.
    for checkpoint, folder in (("best.pt", run_dir), ("last.pt", last)):
        kept = json.loads((folder / "temperature.json").read_text())
        assert kept["checkpoint"] == checkpoint
        assert checkpoints.open_trained(run_dir / checkpoint, "cpu", "fp32").temperature == kept["temperature"]


def test_overwrite_leaves_nothing_of_the_earlier_run(evaluated_run, real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated_run[0], run_dir)
    for digit in (3, 7):
        (tmp_path / "mine" / str(digit)).mkdir(parents=True)
        (tmp_path / "mine" / str(digit) / "a.png").write_bytes(png_of(strokes.render(digit)))
    assert run_script("evaluate.py", "--run-dir", run_dir, "--images", tmp_path / "mine").returncode == 0
    # Into evaluation-last/external-mine/: the folder of another checkpoint's results, made in seconds.
    assert run_script("evaluate.py", "--checkpoint", run_dir / "last.pt", "--images", tmp_path / "mine").returncode == 0
    (run_dir / "notes.txt").write_text("mine")
    before = {path.name for path in run_dir.iterdir()}
    assert {"metrics.json", "temperature.json", "report.md", "external-mine", "evaluation-last"} <= before
    result = run_script("train.py", "--overwrite", "--epochs", 1, *TINY_RUN, "--seed", 1, "--data-dir",
                        real_mnist_dir, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    # Exactly what the new run wrote, and the file that was not the earlier run's: whatever evaluate.py
    # writes must be in checkpoints.run_files, or it would be taken for the new run's.
    assert {path.name for path in run_dir.iterdir()} == {"config.json", "history.csv", "last.pt", "best.pt",
                                                         "accuracy.png", "loss.png", "notes.txt"}
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 1


def test_train_py_cannot_start_in_a_run_being_evaluated(trained_run, real_mnist_dir, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    tried = []
    fit = evaluate.fit_on_validation

    def train_meanwhile(*args):  # the moment evaluate.py is about to write its results
        for how in (["--overwrite"], ["--resume"]):
            tried.append(run_script("train.py", *how, "--epochs", 1, *TINY_RUN, "--data-dir", real_mnist_dir,
                                    "--run-dir", run_dir, timeout=120))
        return fit(*args)

    monkeypatch.setattr(evaluate, "fit_on_validation", train_meanwhile)
    evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(real_mnist_dir)])
    for result in tried:
        assert one_line_error(result) == (f"error: {run_dir} is in use by another train.py or by evaluate.py; "
                                          "wait for it to end (or stop it), or pass --run-dir for a new run")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert checkpoints.results_are_of(metrics, checkpoints.digest_of(run_dir / "best.pt"))
    os.close(train.lock_folder(run_dir))  # and once it has ended, train.py can have the folder


def test_evaluations_share_a_run_and_keep_train_py_out(tmp_path):
    first = checkpoints.lock_folder(tmp_path, shared=True)
    second = checkpoints.lock_folder(tmp_path, shared=True)  # two evaluate.py at once
    with pytest.raises(BlockingIOError):
        checkpoints.lock_folder(tmp_path)
    os.close(first)
    with pytest.raises(BlockingIOError):
        checkpoints.lock_folder(tmp_path)  # the one still going keeps it
    os.close(second)
    training = checkpoints.lock_folder(tmp_path)
    with pytest.raises(BlockingIOError):
        checkpoints.lock_folder(tmp_path, shared=True)
    os.close(training)


def test_a_run_in_training_can_be_evaluated(trained_run, real_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    folder = train.lock_folder(run_dir)  # as a train.py at work there holds it
    try:
        result = run_script("evaluate.py", "--run-dir", run_dir, "--data-dir", real_mnist_dir)
    finally:
        os.close(folder)
    assert result.returncode == 0, result.stderr
    assert (run_dir / "metrics.json").exists()


def test_evaluate_images_names_the_files_it_left_out(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(trained_run[0] / "best.pt", run_dir)  # evaluate.py writes beside it; the shared run stays as it is
    for digit in (3, 7):
        (tmp_path / "mine" / str(digit)).mkdir(parents=True)
        (tmp_path / "mine" / str(digit) / "a.png").write_bytes(png_of(strokes.render(digit)))
    (tmp_path / "mine" / "7" / "notes.png").write_text("not a picture")
    (run_dir / "external-mine").mkdir()
    (run_dir / "external-mine" / ".predictions.csv.k9x2.tmp").write_text("left by a killed evaluation")
    result = run_script("evaluate.py", "--run-dir", run_dir, "--images", tmp_path / "mine")
    assert result.returncode == 0, result.stderr
    assert not any((run_dir / "external-mine").glob(".*.tmp"))
    assert "on 2 images" in result.stdout and "1 could not be read" in result.stdout
    assert "7/notes.png" in result.stdout and "7/notes.png" in (run_dir / "external-mine" / "report.md").read_text()
    metrics = json.loads((run_dir / "external-mine" / "metrics.json").read_text())
    held = [c for c in metrics["per_class"] if c["support"]]
    assert [c["name"] for c in held] == ["3", "7"] and len(metrics["unreadable"]) == 1
    assert metrics["recall_macro"] == pytest.approx(sum(c["recall"] for c in held) / 2)
    # The same report as the test set's: F1 in the headline, and a row per class the folder holds.
    report = (run_dir / "external-mine" / "report.md").read_text()
    assert f"| 2 | {metrics['accuracy']:.2%} |" in report and f"| {metrics['f1_macro']:.4f} |" in report
    with open(run_dir / "external-mine" / "predictions.csv", newline="") as f:
        predicted = {row["path"]: row for row in csv.DictReader(f)}
    assert {Path(path).parent.name for path in predicted} == {"3", "7"}
    assert all(row["label_name"] == Path(path).parent.name for path, row in predicted.items())
    occurring = sorted({row[key] for row in predicted.values() for key in ("label_name", "prediction_name")})
    rows = [line for line in report.split("## Per class")[1].split("##")[0].splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows] == ["| class"] + [f"| {name}" for name in occurring]


def test_evaluate_images_does_not_replace_the_results_of_another_folder_of_the_same_name(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(trained_run[0] / "best.pt", run_dir)
    for where in ("first", "second"):
        for digit in (3, 7):
            (tmp_path / where / "mine" / str(digit)).mkdir(parents=True)
            (tmp_path / where / "mine" / str(digit) / "a.png").write_bytes(png_of(strokes.render(digit)))
    assert run_script("evaluate.py", "--run-dir", run_dir, "--images", tmp_path / "first" / "mine").returncode == 0
    kept = (run_dir / "external-mine" / "metrics.json").read_bytes()
    assert json.loads(kept)["folder"] == str(tmp_path / "first" / "mine")
    line = one_line_error(run_script("evaluate.py", "--run-dir", run_dir, "--images", tmp_path / "second" / "mine"))
    assert "holds the results of another folder called mine" in line and str(tmp_path / "first" / "mine") in line
    assert (run_dir / "external-mine" / "metrics.json").read_bytes() == kept


def test_predict_reads_digits_drawn_by_the_test(reader_run, real_mnist_dir, tmp_path):
    # Real test digits, blown up to 10x and printed dark on light, as a scan would give them.
    images, labels = data.load_split(real_mnist_dir, train=False, fetch=False)
    paths = []
    for i in range(10):
        path = tmp_path / f"test-{i}-label-{labels[i]}.png"
        Image.fromarray(255 - images[i].numpy()).resize((280, 280), Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    # And a '1' drawn as a single pen stroke.
    one = Image.new("L", (120, 160), 255)
    ImageDraw.Draw(one).line([(62, 20), (58, 140)], fill=0, width=10)
    one.save(tmp_path / "drawn-one.png")
    (tmp_path / "notes.txt").write_text("not a picture")  # a folder given is read for its images only
    Image.new("L", (10, 10)).save(tmp_path / "scan.pdf")  # Pillow writes PDF but cannot read it
    (tmp_path / "empty" / "sub").mkdir(parents=True)  # a folder's subfolders are not read
    one.save(tmp_path / "empty" / "sub" / "deeper.png")
    result = run_script("predict.py", tmp_path, "--run-dir", reader_run)
    assert result.returncode == 0, result.stderr
    assert "note: confidences as trained, not calibrated" in result.stderr  # evaluate.py has not run on it
    guesses = {line.split(": ")[0]: int(line.split(": ")[1][0]) for line in result.stdout.splitlines()}
    assert len(guesses) == 11, result.stdout
    assert list(guesses) == sorted(guesses)  # a folder's files by name, not in the order the folder lists them
    right = sum(guesses[str(p)] == int(labels[i]) for i, p in enumerate(paths))
    assert right >= 9, result.stdout
    assert guesses[str(tmp_path / "drawn-one.png")] == 1, result.stdout
    result = run_script("predict.py", tmp_path / "empty", paths[0], "--run-dir", reader_run, "--top", 20)
    assert result.returncode == 1 and "empty: error: no image files in this folder" in result.stderr
    assert result.stdout.startswith(f"{paths[0]}: ")
    assert result.stdout.count("%)") == 10  # --top beyond the classes lists them all


# --- calibration ------------------------------------------------------------------------------


def logits_from(probabilities):
    return torch.tensor(probabilities, dtype=torch.float64).log().float()


def top(p, at):
    """Ten probabilities: `p` at class `at`, the rest shared equally."""
    return [p if k == at else (1 - p) / 9 for k in range(10)]


def test_ece_nll_and_brier_match_hand_worked_values():
    # Two images at confidence 0.9 (one right, one wrong) and two at 0.62 (both right).
    logits = logits_from([top(0.9, 0), top(0.9, 0), top(0.62, 2), top(0.62, 2)])
    labels = torch.tensor([0, 1, 2, 2])
    result = evaluate.calibration(logits, labels)
    # ECE: half the images in the 0.9 bin (accuracy 0.5), half in the 0.62 bin (accuracy 1.0).
    assert result["ece"] == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.62), abs=1e-6)
    assert result["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.1 / 9) + 2 * math.log(0.62)) / 4, abs=1e-5)
    brier_right_09 = 0.1**2 + 9 * (0.1 / 9) ** 2
    brier_wrong_09 = 0.9**2 + (1 - 0.1 / 9) ** 2 + 8 * (0.1 / 9) ** 2
    brier_right_062 = 0.38**2 + 9 * (0.38 / 9) ** 2
    assert result["brier"] == pytest.approx((brier_right_09 + brier_wrong_09 + 2 * brier_right_062) / 4, abs=1e-5)
    bins = result["bins"]
    assert sum(bins["count"]) == 4 and bins["count"][13] == 2 and bins["count"][9] == 2  # (13/15, 14/15], (9/15, 10/15]
    assert bins["accuracy"][13] == 0.5 and bins["confidence"][9] == pytest.approx(0.62, abs=1e-6)


def test_the_weights_digest_changes_with_any_one_weight():
    torch.manual_seed(0)
    weights = CNN().state_dict()
    copy = {name: tensor.clone() for name, tensor in weights.items()}
    assert checkpoints.weights_digest({"model": weights}) == checkpoints.weights_digest({"model": copy})
    copy["L3.weight"][517, 2048] += 1e-6  # one weight of 3.26 million, in the middle of the largest tensor
    assert checkpoints.weights_digest({"model": weights}) != checkpoints.weights_digest({"model": copy})


def test_a_temperature_is_used_only_for_the_checkpoint_and_weights_it_was_fitted_for(tmp_path):
    best = tmp_path / "best.pt"
    fitted = {"epoch": 3, "model": CNN().state_dict()}
    checkpoints.save_temperature(best, fitted, 0.5, "a test")
    assert checkpoints.load_temperature(best, fitted) == 0.5
    # best.pt has moved on since, or the folder was trained again (even to as many epochs), or another run's copied in
    assert checkpoints.load_temperature(best, {"epoch": 3, "model": CNN().state_dict()}) is None
    saved = json.loads((tmp_path / "temperature.json").read_text())
    (tmp_path / "temperature.json").write_text(json.dumps({**saved, "checkpoint": "last.pt"}))
    assert checkpoints.load_temperature(best, fitted) is None  # another file's
    for unusable in (-1, 0, float("inf"), float("nan"), "hot"):  # a hand-edited file: json reads Infinity and NaN
        (tmp_path / "temperature.json").write_text(json.dumps({**saved, "temperature": unusable}))
        assert checkpoints.load_temperature(best, fitted) is None, unusable
    del saved["weights"]  # from before the weights were named: whose they are cannot be told
    (tmp_path / "temperature.json").write_text(json.dumps(saved))
    assert checkpoints.load_temperature(best, fitted) is None


def test_answering_only_when_sure_counts_the_answers_and_their_accuracy():
    # Two images at confidence 0.95 (one right), three at 0.62 (all right), one at 0.3 (wrong).
    logits = logits_from([top(0.95, 0)] * 2 + [top(0.62, 2)] * 3 + [top(0.3, 4)])
    result = evaluate.calibration(logits, torch.tensor([0, 1, 2, 2, 2, 5]))
    answered = {a["confidence"]: (a["share"], a["accuracy"]) for a in result["answered"]}
    assert answered[0.5] == pytest.approx((5 / 6, 4 / 5)) and answered[0.9] == pytest.approx((2 / 6, 1 / 2))
    assert answered[0.99] == (0.0, None)
    # "At least": a confidence of exactly 50% (a tie between two classes) is answered at 50%.
    tie = torch.full((1, 10), -math.inf)
    tie[0, :2] = 0
    assert evaluate.calibration(tie, torch.tensor([0]))["answered"][0] == {"confidence": 0.5, "share": 1.0,
                                                                          "accuracy": 1.0}


def test_a_perfectly_calibrated_set_has_zero_ece():
    # Confidence 0.8 and right four times out of five.
    logits = logits_from([top(0.8, 3)] * 5)
    result = evaluate.calibration(logits, torch.tensor([3, 3, 3, 3, 7]))
    assert result["ece"] == pytest.approx(0.0, abs=1e-6)


def test_temperature_fit_tames_an_over_confident_model():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=generator)
    # Right 80% of the time, but always with a margin of 8 logits: far too sure.
    guesses = torch.where(torch.rand(2000, generator=generator) < 0.8, labels, (labels + 1) % 10)
    logits = torch.randn(2000, 10, generator=generator) + 8 * F.one_hot(guesses, 10)
    temperature = evaluate.fit_temperature(logits, labels)
    nll = [F.cross_entropy(logits / t, labels).item() for t in (1.0, temperature, temperature * 1.1, temperature / 1.1)]
    assert temperature > 1.5
    assert nll[1] < 0.7 * nll[0] and nll[1] <= min(nll[2:])  # much better than as trained, and a minimum
    assert evaluate.calibration(logits / temperature, labels)["ece"] < evaluate.calibration(logits, labels)["ece"] / 2


def test_no_temperature_is_fitted_where_every_image_is_read_right():
    # All right: the NLL falls for ever as T shrinks, and a fit runs toward its bound, 0.05 (on a 1-image
    # split it gave 0.057, and the test set's calibration error went from 0.99% to 17.79%). A single
    # mistake gives it a minimum again.
    labels = torch.arange(10).repeat(3)
    logits = 4 * F.one_hot(labels, 10) + torch.randn(30, 10, generator=torch.Generator().manual_seed(0))
    assert (logits.argmax(1) == labels).all() and evaluate.fit_temperature(logits, labels) is None
    logits[0] = -logits[0]
    assert 0.05 < evaluate.fit_temperature(logits, labels) < 20
    why = "every one of the run's 30 validation images is read right"
    metrics = evaluate.compute_metrics(labels, logits.argmax(1))
    metrics["calibration"] = evaluate.calibration_with(logits, labels, None, why)
    assert f"no temperature fitted: {why}" in evaluate.format_report(metrics)
    assert f"No temperature fitted: {why}." in evaluate.calibration_table(metrics["calibration"])
    assert evaluate.trusted(metrics["calibration"]) == ("as trained", "before")


def png_of(image):
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_feature_map_keeps_its_size_and_shows_right_answers_when_mistakes_outnumber_it():
    features = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    few, many = np.arange(0, 120, 6), np.arange(90)  # 20 mistakes, then 90 (a barely trained model's share)
    indices, points = evaluate.feature_map(features, count=50, always=few)
    assert len(indices) == len(set(indices)) == 50 and points.shape == (50, 2)
    assert set(few) <= set(indices)
    indices, points = evaluate.feature_map(features, count=50, always=many)
    assert len(indices) == len(set(indices)) == 50 and points.shape == (50, 2)
    assert len(set(indices) & set(many)) == 25  # half the map mistakes, half right answers
    indices, points = evaluate.feature_map(features[:60], count=50, always=np.arange(50))  # 10 right answers
    assert len(indices) == len(set(indices)) == 50 and set(range(50, 60)) <= set(indices)  # all ten shown


# --- what the network learned ------------------------------------------------------------------


def test_grad_cam_maps_depend_on_the_class_asked_about():
    torch.manual_seed(0)
    model = CNN().eval()
    x = data.normalize(torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8))
    first, second = (evaluate.grad_cam(model, x, torch.full((4,), k)) for k in (3, 8))
    assert first.shape == (4, 28, 28) and 0 <= first.min() and first.amax((1, 2)).tolist() == pytest.approx([1] * 4)
    assert not torch.allclose(first, second)
    assert not model.L2[0]._forward_hooks  # the hook is gone


def test_the_second_grad_cam_column_is_of_the_true_class(monkeypatch, tmp_path):
    torch.manual_seed(0)
    labels = np.arange(40) % 10
    predictions = np.where(labels % 3 == 0, (labels + 1) % 10, labels)  # a mistake on every third image
    confidences = np.linspace(0.5, 0.99, 40)
    asked = []
    real = evaluate.grad_cam
    monkeypatch.setattr(evaluate, "grad_cam", lambda model, x, targets: asked.append(targets.tolist())
                        or real(model, x, targets))
    evaluate.explain(CNN().eval(), torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8), labels, predictions,
                     confidences, np.random.default_rng(0).normal(size=(40, 100)).astype(np.float32), data.MNIST,
                     tmp_path)
    worst, _ = plot.most_confident_mistakes(labels, predictions, confidences, 8)
    assert asked == [predictions[worst].tolist(), labels[worst].tolist()]
    assert (tmp_path / "grad_cam.png").is_file()


class Drawn(Exception):
    pass


def test_the_curves_of_an_earlier_best_pt_are_of_its_whole_run(trained_run, real_mnist_dir, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    checkpoint = checkpoints.load(run_dir / "last.pt")
    checkpoint["history"], checkpoint["epoch"] = checkpoint["history"][:1], 1
    checkpoints.save(run_dir / "best.pt", checkpoint)  # best.pt from epoch 1 of the run's 2
    (run_dir / ".predictions.csv.k9x.tmp").write_bytes(b"")  # left by an evaluation killed before
    drawn = []

    def plot_history(history, *args, **kwargs):
        drawn.append([int(row["epoch"]) for row in history])
        raise Drawn  # nothing after the curves is needed here

    monkeypatch.setattr(plot, "plot_history", plot_history)
    with pytest.raises(Drawn):
        evaluate.main(["--run-dir", str(run_dir), "--data-dir", str(real_mnist_dir), "--device", "cpu"])
    assert drawn == [[1, 2]]
    # Stopped before the end, evaluate.py left no metrics.json that plot.py would take for a whole evaluation.
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / ".predictions.csv.k9x.tmp").exists()


def test_the_curves_are_of_the_checkpoints_own_run(tmp_path):
    own = [{"epoch": 1, "val_acc": 0.95}, {"epoch": 2, "val_acc": 0.97}]
    checkpoint = {"history": own}
    rows = [{**row, "train_loss": 0.1, "train_acc": 0.9, "val_loss": 0.1, "lr": 1e-3, "seconds": 5} for row in own]
    checkpoints.write_history(tmp_path / "history.csv", rows + [{**rows[1], "epoch": 3}])
    assert len(evaluate.read_history(tmp_path, checkpoint)) == 3  # the whole run, of which best.pt is epoch 2
    # A checkpoint of another run, copied into this folder: its own history, not the folder's.
    other = {"history": [{"epoch": 1, "val_acc": 0.91}, {"epoch": 2, "val_acc": 0.93}]}
    assert evaluate.read_history(tmp_path, other) == other["history"]
    (tmp_path / "history.csv").write_text("epoch,val_acc\n1,0.9\n")  # from another version: the checkpoint's
    assert evaluate.read_history(tmp_path, checkpoint) == own

