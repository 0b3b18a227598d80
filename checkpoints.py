"""Checkpoints: one dict per file (model, optimizer, schedule, config, progress), saved atomically and
loaded safely (`weights_only=True`, then checked); the trained model made from one, and the softmax
temperature evaluate.py fits for it.
"""

import csv
import dataclasses
import hashlib
import json
import math
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

import data
import runtime
from cli import RunError, quoted
from model import CNN

FORMAT = "mnist-cnn-checkpoint-v1"
KEYS = {"format", "model", "optimizer", "scheduler", "epoch", "val_acc", "best_val_acc", "history", "config", "rng"}


def save(path, checkpoint):
    with data.atomic_write(path) as f:
        torch.save(checkpoint, f)


def load(path):
    """Load one of our checkpoints safely (weights_only) or raise RunError saying what is wrong."""
    path = Path(path)
    if not path.exists():
        if path.name in ("best.pt", "last.pt"):  # a run's: the run is not there (yet)
            raise RunError(f"no checkpoint at {path}; train one with `python train.py --run-dir "
                           f"{quoted(path.parent)}` or pass --checkpoint")
        raise RunError(f"no checkpoint at {path}; pass the path of a .pt file train.py wrote (a run's best.pt or "
                       "last.pt)")
    if not path.is_file():
        raise RunError(f"{path} is not a file; pass the path of a .pt checkpoint")
    problem = not_an_archive(path)
    if problem:
        raise RunError(f"{path} is not a checkpoint ({problem}); pass a .pt file train.py wrote, a run's best.pt "
                       "or last.pt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # "Unsupported global: GLOBAL x.y was not an allowed global", or "... GLOBAL posix.mkdir whose module
        # posix is blocked" for the modules that run commands
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f"it would import {found.group(1)}" if found else "it holds more than tensors and plain values"
        raise RunError(f"{path} is not a safe checkpoint ({what}); refusing to load it") from None
    except Exception as e:  # torch raises many kinds for a damaged file; the first line says enough
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise RunError(f"{path} is not a loadable checkpoint (corrupt or truncated: {reason})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise RunError(f"{path} is not a checkpoint written by this repo's train.py")
    missing = KEYS - set(checkpoint)
    if missing:
        raise RunError(f"{path} is an incomplete checkpoint (no {', '.join(sorted(missing))})")
    return checkpoint


def not_an_archive(path):
    """Why the file at `path` cannot be what torch.save writes (a zip archive), or None if it may be."""
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError as e:
        return f"it cannot be read: {e.strerror}"
    if not start:
        return "it is empty"
    if start != b"PK\x03\x04":
        return "it is not a file torch.save writes"
    if not zipfile.is_zipfile(path):  # the archive's index is at its end
        return "it was cut short or damaged"
    return None


def load_weights(model, checkpoint):
    """Put a checkpoint's weights into `model`; RunError if they are not this CNN's."""
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        reason = str(e).strip().splitlines()[0][:160]
        raise RunError(f"the checkpoint holds a different model than model.py's CNN ({reason})") from None
    return model


def best_epoch(history):
    """The history row of the epoch best.pt holds: the best validation accuracy, the later of equals."""
    return max(reversed(history), key=lambda row: row["val_acc"])


def reached_target(history, target_acc):
    """Whether the last epoch's validation accuracy reached --target-acc, if one was set (where train.py stops)."""
    return bool(history) and target_acc is not None and history[-1]["val_acc"] >= target_acc


def dataset_of(checkpoint, asked=None):
    """The data.Dataset the checkpoint was trained on; RunError if `asked` (a --dataset) names another."""
    name = checkpoint["config"].get("dataset", data.MNIST.name)  # before --dataset, every run was MNIST
    if name not in data.DATASETS:
        raise RunError(f"the checkpoint was trained on {name!r}, which this version does not know")
    if asked is not None and asked != name:
        raise RunError(f"the checkpoint was trained on {name}, so it cannot be used on {asked}; drop --dataset "
                       f"or pass a checkpoint trained with --dataset {asked}")
    return data.DATASETS[name]


HISTORY_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
NEEDED_HISTORY = {"epoch", "val_acc", "val_loss", "seconds"}  # what every version of train.py wrote


def write_history(path, history):
    """history.csv: a row per epoch, as train.py keeps them."""
    with data.atomic_write(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)


def read_history(path):
    """history.csv's rows, values as floats; [] where there is none yet. RunError if it is damaged or from
    another version of train.py."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not NEEDED_HISTORY <= set(reader.fieldnames or ()):
                raise RunError(f"{path} is from another version of train.py")
            return [{key: float(value) for key, value in row.items()} for row in reader]
    except FileNotFoundError:
        return []
    except (ValueError, TypeError):
        raise RunError(f"{path} is damaged") from None


# A run folder: train.py's files, then evaluate.py's beside the best.pt it evaluated (results_dir), with
# the results of `evaluate.py --images DIR` in external-<DIR's name>/ (external_dir). All of it belongs to
# the run, and `train.py --overwrite` removes it (run_files); any other file in the folder is the user's.
# A file evaluate.py adds must join EVALUATION_FILES: test_overwrite_leaves_nothing_of_the_earlier_run fails
# until it does.
TRAINING_FILES = ("config.json", "history.csv", "last.pt", "best.pt", "accuracy.png", "loss.png")
EVALUATION_FILES = ("metrics.json", "predictions.csv", "temperature.json", "report.md", "confusion_matrix.png",
                    "per_class.png", "misclassified.png", "reliability.png", "filters.png", "grad_cam.png",
                    "feature_map.png")
EVALUATION_PREFIX, EXTERNAL_PREFIX = "evaluation-", "external-"


def results_dir(path):
    """Where evaluate.py writes its results for the checkpoint at `path`: beside a run's best.pt, those of
    the run itself; for any other checkpoint a folder of its own beside it (evaluation-last/ for last.pt),
    so that evaluating one checkpoint never replaces another's results or temperature."""
    path = Path(path)
    return path.parent if path.name == "best.pt" else path.parent / f"{EVALUATION_PREFIX}{path.stem}"


def external_dir(results, name):
    """Where evaluate.py --images writes its results for an images folder called `name`, in a `results` folder."""
    return Path(results) / f"{EXTERNAL_PREFIX}{name}"


def read_results(path):
    """The evaluate.py metrics.json at `path` as a dict; {} if there is none or it cannot be read."""
    try:
        metrics = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def weights_digest(checkpoint):
    """A fingerprint of the checkpoint's weights. evaluate.py's results and temperature carry the one of the
    weights they are of: a name and an epoch can be another run's (a folder trained again, a copied file)."""
    digest = hashlib.sha256()
    for name, tensor in checkpoint["model"].items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def digest_of(path):
    """weights_digest of the checkpoint at `path`; None if there is none that loads."""
    try:
        return weights_digest(load(path))
    except RunError:
        return None


def results_are_of(metrics, weights):
    """Whether evaluate.py's `metrics` (from read_results) are of the weights whose weights_digest is
    `weights` (None, where there is no checkpoint: of no weights)."""
    return weights is not None and metrics.get("weights") == weights


def evaluated_epoch(metrics):
    """The epoch of the best.pt whose results `metrics` (from read_results) are; None if they are none, or
    those of another checkpoint."""
    try:
        if Path(metrics["checkpoint"]).name == "best.pt":
            return int(metrics["epoch"])
    except (KeyError, TypeError, ValueError):
        pass
    return None


def images_folder(metrics):
    """The images folder whose evaluate.py --images results `metrics` (from read_results) are; None if they do
    not say (none, or from before the folder was recorded)."""
    return None if metrics.get("folder") is None else str(metrics["folder"])


def external_results(results):
    """{the images folder's name: its metrics.json} for each `evaluate.py --images` run in `results`."""
    return {metrics.parent.name.removeprefix(EXTERNAL_PREFIX): metrics
            for metrics in sorted(Path(results).glob(f"{EXTERNAL_PREFIX}*/metrics.json"))}


def run_files(run_dir):
    """What train.py and evaluate.py have written in `run_dir`: the files, then the folders."""
    run_dir = Path(run_dir)
    files = [run_dir / name for name in (*TRAINING_FILES, *EVALUATION_FILES) if (run_dir / name).is_file()]
    folders = [folder for prefix in (EVALUATION_PREFIX, EXTERNAL_PREFIX) for folder in run_dir.glob(f"{prefix}*")
               if folder.is_dir()]
    return files, folders


def lock_folder(path, shared=False):
    """An open descriptor of the run folder `path` holding a lock on it: train.py's exclusive one, or a
    `shared` one for evaluate.py, which writes its results there. None where it cannot be locked (Windows,
    some network file systems, a folder that can be written but not read); BlockingIOError if another
    process holds a lock that excludes this one."""
    try:
        folder = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if data.lock(folder, wait=False, shared=shared):
            return folder
    except BlockingIOError:
        os.close(folder)
        raise
    os.close(folder)
    return None


def temperature_path(path):
    return results_dir(path) / "temperature.json"


def save_temperature(path, checkpoint, temperature, fitted_on):
    """Keep the softmax temperature evaluate.py fitted for the checkpoint at `path`, beside it."""
    data.write_json(temperature_path(path), {"checkpoint": Path(path).name, "epoch": int(checkpoint["epoch"]),
                                             "weights": weights_digest(checkpoint), "temperature": temperature,
                                             "fitted_on": fitted_on})


def load_temperature(path, checkpoint):
    """The temperature fitted for this very checkpoint (same file name and weights), or None."""
    try:
        saved = json.loads(temperature_path(path).read_text())
        if saved["checkpoint"] == Path(path).name and saved["weights"] == weights_digest(checkpoint):
            temperature = float(saved["temperature"])
            return temperature if math.isfinite(temperature) and temperature > 0 else None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def load_model(checkpoint, device="cpu"):
    """The CNN with the checkpoint's weights, in eval mode, on `device` in its preferred memory layout."""
    return load_weights(CNN(), checkpoint).to(device, memory_format=runtime.memory_format(device)).eval()


@dataclasses.dataclass
class Trained:
    """A checkpoint made ready to use: its model on the device, its dataset, precision and temperature."""

    path: Path
    checkpoint: dict
    model: torch.nn.Module
    dataset: data.Dataset
    device: torch.device
    precision: str
    temperature: float | None  # fitted by evaluate.py for this checkpoint; None until it has run


def open_trained(path, device="auto", precision="auto", dataset=None):
    """The checkpoint at `path` ready to use, as evaluate, predict and serve need it (`device` and
    `precision` as the options name them; `dataset`, if given, must be the checkpoint's own).
    Raises RunError, one line, for anything wrong."""
    device = runtime.pick_device(device)
    precision, _ = runtime.pick_precision(precision, device)
    checkpoint = load(path)
    dataset = dataset_of(checkpoint, dataset)
    return Trained(Path(path), checkpoint, load_model(checkpoint, device), dataset, device, precision,
                   load_temperature(path, checkpoint))
