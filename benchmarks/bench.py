"""How close training and evaluation come to this machine's limit, and how far ahead of the usual tutorial.

    python benchmarks/bench.py            # everything (about 2 minutes on a 2-core CPU)
    python benchmarks/bench.py --quick    # no full runs of train.py and evaluate.py, single measurements

The floor is the rate of a large matrix product in each precision the CPU runs natively (fp32, and
bf16 where it has AVX512-BF16 or AMX); training is measured against the floor of the precision that
train.py's `--precision auto` picks here. Prints a table and writes benchmarks/results.json. Raw
seconds depend on the machine; the ratios (to the floor, to the tutorial baseline) carry over.
"""

import functools
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import cli  # noqa: E402
import data  # noqa: E402
import images  # noqa: E402
import runtime  # noqa: E402
import train  # noqa: E402  (the training step it measures)
from model import CNN  # noqa: E402

EPOCH_IMAGES = 55_000
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TEST_IMAGES = 10_000
# train.py's augmentation options at the strengths tried for photographed digits (docs/results.md), all at once.
EVERY_EFFECT = ["--elastic", "1", "--shear", "0.3", "--thickness", "0.5", "--blur", "0.7", "--noise", "0.2"]


def forward_flops_per_image(model):
    """Multiply-adds of one forward pass, counted from the conv and linear layers' shapes, times two."""
    macs = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            macs.append(output[0].numel() * module.in_channels * math.prod(module.kernel_size))
        elif isinstance(module, torch.nn.Linear):
            macs.append(module.in_features * module.out_features)

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return 2 * sum(macs)


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def matmul_gflops(dtype=torch.float32, n=2048, repeats=7):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats) / 1e9


def native_precisions():
    """The precisions this CPU multiplies with instructions of its own: fp32, and bf16 where it has
    AVX512-BF16 or AMX (elsewhere bf16 would be emulated, and no floor at all)."""
    return ["fp32", "bf16"] if runtime.cpu_has_native_bf16() else ["fp32"]


def seed_forward(model, x):
    """The network run in its printed order (conv, ReLU, pool), as a tutorial would run it."""
    x = model.L2(model.L1(x)).flatten(1)
    return model.L5(F.relu(model.L4(F.relu(model.L3(x)))))


def tutorial_images_per_second(data_dir, dataset, steps=150):
    """The same network fed the usual way: torchvision transforms, a DataLoader of batch 64, plain Adam."""
    import torchvision
    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((dataset.mean,), (dataset.std,))])
    training_set = getattr(torchvision.datasets, dataset.folder)(data_dir, train=True, download=False,
                                                                 transform=transform)
    loader = torch.utils.data.DataLoader(training_set, batch_size=64, shuffle=True)
    model = CNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    seen, started = 0, None
    for step, (x, y) in enumerate(loader):
        if step == 10:  # after warm-up
            started, seen = time.perf_counter(), 0
        loss = F.cross_entropy(seed_forward(model, x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(y)
        if step == steps + 10:
            break
    return seen / (time.perf_counter() - started)


def our_training(data_dir, dataset, precision, subset=12_800, repeats=3):
    """Images per second of train.py's own epoch function with its default options (augmentation on)."""
    runtime.keep_freed_memory_mapped()
    # The schedule must last every repeat.
    args = train.parse_args(["--epochs", str(repeats + 1), "--subset", str(subset), "--data-dir", str(data_dir),
                             "--dataset", dataset.name])
    train_x, train_y, _, _ = train.load_data(args, torch.device("cpu"))
    model, optimizer, scheduler = train.build(args, len(train_x), torch.device("cpu"))

    def epoch():
        train.train_one_epoch(model, optimizer, scheduler, train_x, train_y, args, 1, precision)

    epoch()  # warm-up
    seconds = median_seconds(epoch, repeats)

    def batching(augmentation):
        for _ in data.batches(train_x, train_y, args.batch_size, data.epoch_generator(0, 1), augmentation, dataset):
            pass

    plain = median_seconds(lambda: batching(None), repeats)
    every_effect = train.augmentation(train.parse_args([*EVERY_EFFECT, "--dataset", dataset.name]), 1)
    shares = {name: (median_seconds(functools.partial(batching, augmentation), repeats) - plain) / seconds
              for name, augmentation in (("default", train.augmentation(args, 1)), ("every effect", every_effect))}
    return subset / seconds, shares


def evaluation_seconds(data_dir, dataset, precision, repeats=3):
    runtime.keep_freed_memory_mapped()
    test_images, _ = data.load_split(data_dir, train=False, fetch=False, dataset=dataset)
    model = CNN().eval().to(memory_format=runtime.memory_format("cpu"))
    runtime.logits_of(model, test_images, precision, 500, dataset)
    return median_seconds(lambda: runtime.logits_of(model, test_images, precision, 500, dataset), repeats)


def preparation_ms(folder, repeats=3):
    """Milliseconds per picture that images.py takes to make the network's input from the picture files
    in `folder`'s class folders (read into memory first), or None if the folder is not there."""
    blobs = [path.read_bytes() for path in sorted(Path(folder).glob("*/*")) if images.is_picture_file(path)]
    if not blobs:
        return None

    def prepare_all():
        for blob in blobs:
            images.to_input(blob)

    return median_seconds(prepare_all, repeats) / len(blobs) * 1000


def timed(script, *options):
    """Wall seconds of one of the repo's scripts, run in a child process as a user runs it."""
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / script), *map(str, options)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def timed_training_and_evaluation(data_dir, *options):
    """train.py with `options`, then evaluate.py on its best.pt, each in a child process.

    Returns (training wall seconds, peak RSS of training in MB, test accuracy, evaluate.py wall seconds).
    """
    with tempfile.TemporaryDirectory() as run_dir:
        train_seconds = timed("train.py", "--data-dir", data_dir, "--run-dir", run_dir, *options)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        evaluate_seconds = timed("evaluate.py", "--data-dir", data_dir, "--run-dir", run_dir)
        accuracy = json.loads((Path(run_dir) / "metrics.json").read_text())["accuracy"]
    return train_seconds, peak_mb, accuracy, evaluate_seconds


def measure(data_dir, dataset, quick):
    """Every figure of the benchmark, as results.json keeps them."""
    precision, why = runtime.pick_precision("auto", "cpu")
    results = {"machine": f"{runtime.cpu_name()}, {torch.get_num_threads()} threads", "dataset": dataset.name,
               "torch": str(torch.__version__), "precision": precision, "precision_reason": why}
    flops = forward_flops_per_image(CNN())
    gflops = {name: matmul_gflops(DTYPES[name]) for name in native_precisions()}
    # Backward costs about twice the forward.
    floor_epoch = {name: 3 * flops * EPOCH_IMAGES / (rate * 1e9) for name, rate in gflops.items()}
    floor_eval = flops * TEST_IMAGES / (gflops[precision] * 1e9)
    repeats = 1 if quick else 3
    tutorial = tutorial_images_per_second(data_dir, dataset, steps=50 * repeats)
    ours, augment_shares = our_training(data_dir, dataset, precision, repeats=repeats)
    eval_seconds = evaluation_seconds(data_dir, dataset, precision, repeats=repeats)
    external = Path(data_dir) / "external"
    preparation = {name: preparation_ms(external / name, repeats) for name in ("heldout", "uci-heldout")
                   if dataset is data.MNIST}  # the external sets are digits
    results.update({
        "matmul_gflops": gflops, "train_mflop_per_image": 3 * flops / 1e6, "floor_epoch_seconds": floor_epoch,
        "train_images_per_second": ours, "epoch_seconds": EPOCH_IMAGES / ours,
        "train_fraction_of_floor": floor_epoch[precision] / (EPOCH_IMAGES / ours),
        "augment_share_of_step": augment_shares,
        "tutorial_images_per_second": tutorial, "speedup_over_tutorial": ours / tutorial,
        "eval_seconds": eval_seconds, "floor_eval_seconds": floor_eval, "eval_over_floor": eval_seconds / floor_eval,
        "preparation_ms_per_picture": preparation,
    })
    if not quick:
        seconds, peak_mb, accuracy, evaluate_seconds = timed_training_and_evaluation(
            data_dir, "--epochs", 2, "--dataset", dataset.name)
        results.update({"fast_recipe": "--epochs 2", "fast_recipe_seconds": seconds,
                        "fast_recipe_test_acc": accuracy, "train_peak_rss_mb": peak_mb,
                        "evaluate_py_seconds": evaluate_seconds})
    return results


def report(results, external):
    """The screen's (what, value, note) rows, from the results alone; `external`: where the photos were."""
    precision, ours, shares = results["precision"], results["train_images_per_second"], results["augment_share_of_step"]
    rows = [(f"{name} matmul (2048²)", f"{rate:.0f} GFLOP/s",
             f"floor: an epoch of 55k in {results['floor_epoch_seconds'][name]:.1f} s"
             + (" (in use)" if name == precision else ""))
            for name, rate in results["matmul_gflops"].items()]
    rows += [
        ("training step", f"{results['train_mflop_per_image']:.1f} MFLOP per image",
         f"{precision}: {results['precision_reason']}"),
        ("our training", f"{ours:.0f} img/s = {results['epoch_seconds']:.1f} s/epoch",
         f"{results['train_fraction_of_floor']:.0%} of the {precision} floor's rate "
         "(target on AVX2-only CPUs: >= 70%)"),
        ("  augmentation", f"{shares['default']:.1%} of a step", "target < 15%"),
        ("  ... every effect on", f"{shares['every effect']:.1%} of a step", " ".join(EVERY_EFFECT)),
        ("tutorial baseline", f"{results['tutorial_images_per_second']:.0f} img/s",
         f"ours is {results['speedup_over_tutorial']:.1f}x faster (target >= 3x)"),
        ("model on 10k test", f"{results['eval_seconds']:.2f} s",
         f"{results['eval_over_floor']:.1f}x its floor of {results['floor_eval_seconds']:.2f} s (target <= 2x)"),
    ]
    rows += [(f"preparing {name}", f"{ms:.1f} ms a picture" if ms else "-",
              f"images.py on {external / name}" + ("" if ms else " (python make_external.py writes it)"))
             for name, ms in results["preparation_ms_per_picture"].items()]
    if "fast_recipe_seconds" in results:
        goal = " (target: 99% in < 45 s)" if results["dataset"] == data.MNIST.name else ""
        rows += [("train.py --epochs 2", f"{results['fast_recipe_seconds']:.0f} s",
                  f"reached {results['fast_recipe_test_acc']:.2%} on the test set{goal}"),
                 ("peak memory, training", f"{results['train_peak_rss_mb']:.0f} MB", "target < 1 GB"),
                 ("evaluate.py, all of it", f"{results['evaluate_py_seconds']:.1f} s",
                  "metrics, calibration and every figure (target < 15 s)")]
    return rows


def main():
    p = cli.Parser(__doc__)
    cli.add_dataset_option(p, default="mnist")
    cli.add_data_dir_option(p)
    p.add_argument("--quick", action="store_true",
                   help="skip the full runs of train.py and evaluate.py (train.py --epochs 2 with its test "
                        "accuracy, memory, evaluation time) and measure each figure once")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"),
                   help="where to write the results (default: benchmarks/results.json)")
    args = p.parse_args()
    runtime.flush_denormals()  # as train.py does, before torch starts its worker threads
    dataset = data.DATASETS[args.dataset]
    try:
        cli.writable_folder(Path(args.out).parent, "the folder of --out")
        data.ensure_dataset(args.data_dir, dataset)
    except (cli.RunError, data.DataError) as e:
        sys.exit(f"error: {e}")

    results = measure(args.data_dir, dataset, args.quick)
    print(f"\n{results['machine']}, torch {results['torch']}, {dataset.name}; ratios carry over between machines, "
          "seconds do not\n")
    for name, value, note in report(results, Path(args.data_dir) / "external"):
        print(f"{name:<24}{value:<34}{note}")
    data.write_json(args.out, results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    cli.run(main)
