"""benchmarks/bench.py: the FLOP count that every ratio to the floor rests on, and a quick run."""

import json
import sys
from pathlib import Path

import pytest
from conftest import one_line_error, run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench  # noqa: E402

import strokes  # noqa: E402
from model import CNN  # noqa: E402


def test_forward_flops_are_counted_from_the_layers():
    # By hand: conv1 28*28*32*(1*9), conv2 14*14*64*(32*9), then 3136*1000, 1000*100, 100*10 multiply-adds.
    macs = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 3136 * 1000 + 1000 * 100 + 100 * 10
    assert bench.forward_flops_per_image(CNN()) == 2 * macs == 14_150_928


def test_quick_benchmark_runs_and_writes_its_results(real_mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    result = run_script("benchmarks/bench.py", "--quick", "--data-dir", real_mnist_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    assert results["train_mflop_per_image"] == pytest.approx(3 * 14.150928)
    for key in ["train_images_per_second", "tutorial_images_per_second", "eval_seconds"]:
        assert results[key] > 0, key
    # A floor for every precision the CPU runs natively, and the rate measured against the one in use.
    assert results["matmul_gflops"]["fp32"] > 0 and results["precision"] in results["matmul_gflops"]
    floor = results["floor_epoch_seconds"][results["precision"]]
    assert results["train_fraction_of_floor"] == pytest.approx(floor / results["epoch_seconds"])
    assert results["speedup_over_tutorial"] == pytest.approx(
        results["train_images_per_second"] / results["tutorial_images_per_second"])
    assert f"of the {results['precision']} floor's rate" in result.stdout and "ratios carry over" in result.stdout
    # Picture preparation, timed on the external sets where make_external.py has written them, else said.
    for name, ms in results["preparation_ms_per_picture"].items():
        written = (Path(real_mnist_dir) / "external" / name).is_dir()
        assert (ms > 0) if written else (ms is None and "(python make_external.py writes it)" in result.stdout)
    assert sorted(results["preparation_ms_per_picture"]) == ["heldout", "uci-heldout"]


def test_the_report_is_made_from_the_results_alone(tmp_path):
    results = {"machine": "a CPU, 2 threads", "dataset": "mnist", "torch": "2", "precision": "bf16",
               "precision_reason": "auto: native bf16", "matmul_gflops": {"fp32": 200.0, "bf16": 400.0},
               "train_mflop_per_image": 42.45, "floor_epoch_seconds": {"fp32": 11.7, "bf16": 5.8},
               "train_images_per_second": 4000.0, "epoch_seconds": 13.75, "train_fraction_of_floor": 0.42,
               "augment_share_of_step": {"default": 0.047, "every effect": 0.187},
               "tutorial_images_per_second": 1600.0, "speedup_over_tutorial": 2.5, "eval_seconds": 0.6,
               "floor_eval_seconds": 0.35, "eval_over_floor": 1.7,
               "preparation_ms_per_picture": {"heldout": 8.5, "uci-heldout": None}}
    rows = {name: (value, note) for name, value, note in bench.report(results, tmp_path)}
    assert rows["bf16 matmul (2048²)"] == ("400 GFLOP/s", "floor: an epoch of 55k in 5.8 s (in use)")
    assert rows["fp32 matmul (2048²)"][1] == "floor: an epoch of 55k in 11.7 s"
    assert rows["our training"] == ("4000 img/s = 13.8 s/epoch",
                                    "42% of the bf16 floor's rate (target on AVX2-only CPUs: >= 70%)")
    assert rows["tutorial baseline"][1] == "ours is 2.5x faster (target >= 3x)"
    assert rows["preparing uci-heldout"] == ("-", f"images.py on {tmp_path / 'uci-heldout'} "
                                                  "(python make_external.py writes it)")
    assert "train.py --epochs 2" not in rows  # a --quick run has no full runs to show
    results.update({"fast_recipe_seconds": 34.2, "fast_recipe_test_acc": 0.9936, "train_peak_rss_mb": 884.4,
                    "evaluate_py_seconds": 13.04})
    rows = {name: (value, note) for name, value, note in bench.report(results, tmp_path)}
    assert rows["train.py --epochs 2"] == ("34 s", "reached 99.36% on the test set (target: 99% in < 45 s)")
    assert rows["peak memory, training"][0] == "884 MB" and rows["evaluate.py, all of it"][0] == "13.0 s"


def test_no_floor_is_measured_for_an_emulated_precision(avx512_cpu_without_bf16):
    assert bench.native_precisions() == ["fp32"]


def test_preparation_is_timed_per_picture_of_a_folder(tmp_path):
    (tmp_path / "3").mkdir()
    strokes.draw(strokes.DIGITS[3], 160, 12).save(tmp_path / "3" / "three.png")
    (tmp_path / "3" / "notes.txt").write_text("not a picture")
    assert bench.preparation_ms(tmp_path, repeats=1) > 0
    assert bench.preparation_ms(tmp_path / "missing") is None


def test_serve_load_benchmark_runs_and_reports(reader_run):
    result = run_script("benchmarks/serve_load.py", "--run-dir", reader_run, "--requests", 120, "--clients", 4)
    assert result.returncode == 0, result.stderr
    rows = {line[:22].strip(): line[22:].split() for line in result.stdout.splitlines() if line[:22].strip()}
    assert float(rows["requests per second"][0]) > 0
    assert rows["errors"][0] == "0"
    assert "MB after 100" in result.stdout
    refused = run_script("benchmarks/serve_load.py", "--run-dir", reader_run, "--requests", 1)
    assert one_line_error(refused) == ("error: --requests must be at least 2 (the latency percentiles need two), "
                                       "got 1 (see serve_load.py --help)")
    refused = run_script("benchmarks/serve_load.py", "--checkpoint", reader_run / "config.json")
    assert one_line_error(refused).startswith(f"error: {reader_run / 'config.json'} is not a checkpoint (")
