"""Fashion-MNIST as a drop-in: the dataset switch, its sources tried in order, and the scripts on its real data."""

import functools
import gzip
import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_mnist, one_line_error, run_script
from PIL import Image, ImageDraw

import checkpoints
import cli
import data
import evaluate
import images
import runtime

FASHION = data.FASHION_MNIST


def test_each_dataset_reads_its_own_files_and_statistics(tmp_path):
    mnist_sums = make_tiny_mnist(tmp_path, seed=0)
    fashion_sums = make_tiny_mnist(tmp_path, seed=1, dataset=FASHION)
    assert data.raw_dir(tmp_path, FASHION) == tmp_path / "FashionMNIST" / "raw"
    assert mnist_sums != fashion_sums  # different noise, different files
    mnist = data.load_split(tmp_path, train=True, fetch=False)
    fashion = data.load_split(tmp_path, train=True, fetch=False, dataset=FASHION)
    assert not torch.equal(mnist[0], fashion[0]) and len(fashion[0]) == 64
    white = torch.full((1, 28, 28), 255, dtype=torch.uint8)
    assert data.normalize(white, FASHION).max().item() == pytest.approx((1 - 0.2860) / 0.3530)
    assert data.normalize(white).max().item() == pytest.approx((1 - 0.1307) / 0.3081)


def test_fashion_warp_mirrors_and_shifts_but_never_rotates():
    x = torch.zeros(256, 1, 28, 28)
    x[:, :, 10:18, 4:8] = 1.0  # a block on the left
    warped = data.random_warp(x, torch.Generator().manual_seed(0), FASHION.augmentation)
    on_right = warped[..., 14:].sum((1, 2, 3)) > warped[..., :14].sum((1, 2, 3))
    assert 0.35 < on_right.float().mean().item() < 0.65  # mirrored about half the time
    # Shifted by whole-pixel-ish amounts, not turned: the block stays 8 rows tall and upright.
    rows_inked = (warped.sum(3) > 0.5).sum((1, 2))
    assert rows_inked.float().mean().item() == pytest.approx(8, abs=1.0)
    # A level line 20 pixels long stays level: turned by even 5 degrees it would cross three rows.
    line = torch.zeros(256, 1, 28, 28)
    line[:, :, 14, 4:24] = 1.0
    warped = data.random_warp(line, torch.Generator().manual_seed(0), FASHION.augmentation)
    assert (warped.sum(3) > 0.05).sum((1, 2)).max().item() <= 2


@pytest.fixture
def debian_copy(tmp_path):
    """A stand-in for the Debian package's folder: the tiny files, gzipped, as the package ships them."""
    source = tmp_path / "source"
    checksums = make_tiny_mnist(source, seed=2, dataset=FASHION)
    package = tmp_path / "usr-share-datasets-fashion-mnist"
    package.mkdir()
    for name in checksums:
        (package / f"{name}.gz").write_bytes(gzip.compress((data.raw_dir(source, FASHION) / name).read_bytes()))
    return package, checksums


def failing_source(raw):
    raise data.DataError("unreachable")


def test_sources_are_tried_in_order_and_checked(debian_copy, tmp_path):
    package, checksums = debian_copy
    debian = ("debian", functools.partial(data.fetch_from_debian, package_dir=package))
    data_dir = tmp_path / "data"
    # Missing: the dead mirror fails, the Debian copy is unpacked and verified.
    assert data.ensure_dataset(data_dir, FASHION, [("mirror", failing_source), debian], checksums) == "debian"
    raw = data.raw_dir(data_dir, FASHION)
    assert {name: data.file_hash(raw / name) for name in checksums} == checksums
    # Corrupt, with the .gz it came from beside it: remade from that, nothing fetched.
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\0" * 10)
    assert data.ensure_dataset(data_dir, FASHION, [("mirror", failing_source)], checksums) == f"verified files in {raw}"
    assert data.file_hash(raw / "t10k-labels-idx1-ubyte") == checksums["t10k-labels-idx1-ubyte"]
    # A source that gives files with the wrong md5 is passed over for the next.
    for path in raw.glob("t10k-labels-idx1-ubyte*"):  # the file and the .gz kept beside it
        path.unlink()

    def wrong_files(raw):
        (raw / "t10k-labels-idx1-ubyte").write_bytes(b"not the real file")

    assert data.ensure_dataset(data_dir, FASHION, [("wrong", wrong_files), debian], checksums) == "debian"


def test_a_debian_package_without_all_its_files_is_passed_over_whole(debian_copy, tmp_path):
    package, _ = debian_copy
    (package / "t10k-labels-idx1-ubyte.gz").unlink()  # half-installed, or a package that names its files otherwise
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(data.DataError, match="sudo apt-get install dataset-fashion-mnist"):
        data.fetch_from_debian(raw, package_dir=package)
    assert list(raw.iterdir()) == []


def test_no_source_at_all_says_where_to_put_the_files(tmp_path):
    missing = ("debian", functools.partial(data.fetch_from_debian, package_dir=tmp_path / "not-installed"))
    with pytest.raises(data.DataError) as error:
        data.ensure_dataset(tmp_path / "data", FASHION, [missing])
    message = str(error.value)
    assert "could not get FashionMNIST" in message and str(data.raw_dir(tmp_path / "data", FASHION)) in message
    assert "\n" not in message


def test_debians_real_copy_is_byte_exact(real_fashion_dir):
    raw = data.raw_dir(real_fashion_dir, FASHION)
    assert {name: data.file_hash(raw / name) for name in FASHION.checksums} == FASHION.checksums
    images, labels = data.load_split(real_fashion_dir, train=True, fetch=False, dataset=FASHION)
    assert images.shape == (60000, 28, 28) and torch.bincount(labels).tolist() == [6000] * 10
    pixels = images.float() / 255
    assert pixels.mean().item() == pytest.approx(0.2860, abs=1e-4)
    assert pixels.std().item() == pytest.approx(0.3530, abs=1e-4)


# --- the scripts on real Fashion-MNIST --------------------------------------------------------


def test_evaluate_and_predict_take_the_dataset_from_the_checkpoint(fashion_run, real_fashion_dir, tmp_path):
    assert json.loads((fashion_run / "config.json").read_text())["dataset"] == "fashion-mnist"
    result = run_script("evaluate.py", "--run-dir", fashion_run, "--data-dir", real_fashion_dir)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((fashion_run / "metrics.json").read_text())
    assert metrics["dataset"] == "FashionMNIST" and metrics["accuracy"] > 0.6
    assert [c["name"] for c in metrics["per_class"]] == list(FASHION.classes)
    assert "Ankle boot" in result.stdout and "# FashionMNIST test-set report" in (fashion_run / "report.md").read_text()
    first = (fashion_run / "predictions.csv").read_text().splitlines()[1].split(",")
    assert first[1] == "9" and first[4] == "Ankle boot"  # the test set's first image is an ankle boot
    # A trouser drawn dark on white, as a product photo is: read by its class name.
    photo = Image.new("L", (300, 400), 255)
    ImageDraw.Draw(photo).polygon([(90, 40), (210, 40), (230, 370), (165, 370), (150, 150), (135, 370), (70, 370)],
                                  fill=30)
    photo.save(tmp_path / "trousers.png")
    predicted = run_script("predict.py", tmp_path / "trousers.png", "--run-dir", fashion_run, "--top", 3)
    assert predicted.returncode == 0, predicted.stderr
    names = [part.split(" (")[0] for part in predicted.stdout.split(": ", 1)[1].split("  ")]
    # The photo prepared as Fashion-MNIST's images were (light on black, trimmed, longer side 28), not as a digit.
    model = checkpoints.load_model(checkpoints.load(fashion_run / "best.pt"))
    precision, _ = runtime.pick_precision("auto", "cpu")
    logits = runtime.logits_of(model, images.image_to_fashion(tmp_path / "trousers.png")[None], precision)[0]
    assert names == [FASHION.classes[k] for k in logits.topk(3).indices]


def test_evaluate_images_reads_fashion_folders_by_class_name_or_number(tmp_path):
    photo = Image.new("L", (300, 400), 255)
    ImageDraw.Draw(photo).polygon([(90, 40), (210, 40), (230, 370), (165, 370), (150, 150), (135, 370), (70, 370)],
                                  fill=30)
    for folder in ("Trouser", "9"):
        (tmp_path / "photos" / folder).mkdir(parents=True)
        photo.save(tmp_path / "photos" / folder / "a.png")
    inputs, labels, paths, problems = evaluate.read_image_folder(tmp_path / "photos", FASHION)
    read = {Path(path).parent.name: (label, x) for path, label, x in zip(paths, labels.tolist(), inputs)}
    assert {folder: label for folder, (label, _) in read.items()} == {"Trouser": 1, "9": 9} and not problems
    assert torch.equal(read["Trouser"][1], images.image_to_fashion(tmp_path / "photos" / "Trouser" / "a.png"))


@pytest.mark.parametrize("script", ["evaluate.py", "predict.py"])
def test_a_checkpoint_of_one_dataset_is_refused_on_the_other(fashion_run, trained_run, real_fashion_dir, script,
                                                             tmp_path):
    mnist_run, _ = trained_run
    image = tmp_path / "x.png"
    Image.new("L", (28, 28), 255).save(image)
    extra = [image] if script == "predict.py" else ["--data-dir", real_fashion_dir]
    line = one_line_error(run_script(script, *extra, "--run-dir", mnist_run, "--dataset", "fashion-mnist"))
    assert "trained on mnist" in line and "fashion-mnist" in line
    line = one_line_error(run_script(script, *extra, "--run-dir", fashion_run, "--dataset", "mnist"))
    assert "trained on fashion-mnist" in line


def test_a_checkpoint_of_a_dataset_this_version_does_not_know_is_refused():
    with pytest.raises(cli.RunError, match="^the checkpoint was trained on 'kmnist', which this version does not"):
        checkpoints.dataset_of({"config": {"dataset": "kmnist"}})
    assert checkpoints.dataset_of({"config": {}}) is data.MNIST  # from before --dataset
