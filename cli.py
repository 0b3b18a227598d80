"""The small command-line pieces every script shares: one-line errors, argument types, common options."""

import argparse
import math
import os
import shlex
import signal
import sys
import tempfile
from pathlib import Path

import data

DEFAULT_RUN_DIR = "runs/default"
DEFAULT_DATA_DIR = "data"
# train.py's options that only say where and how to run; all the others define a run (and are kept on resume).
RUNTIME_OPTIONS = {"device", "data_dir", "run_dir", "resume", "overwrite"}
# train.py's options added after runs had been made: a run whose config lacks one ran with this value.
ADDED_LATER = {"dataset": "mnist", "elastic": 0.0, "shear": 0.0, "thickness": 0.0, "blur": 0.0, "noise": 0.0,
               "weight_decay": 0.0, "dropout": 0.0, "degrees": None, "scale": None, "shift": None,
               "ema": 0.0, "clean_epochs": 0}


class RunError(RuntimeError):
    """A problem the user can fix; scripts print it as one line and exit non-zero."""


class Stopped(BaseException):
    """A signal to stop arrived; carries its number. A BaseException, as KeyboardInterrupt is, so that no
    `except Exception` on the way (one that reports a damaged file, say) takes it for an error, and every
    file being written is cleaned up on the way out."""


def stop_on_signal(signum, frame):
    raise Stopped(signum)


def exit_stopped(stopped, how=""):
    """End the script as the signal `stopped` carries would (exit code 128 + its number), saying `how`."""
    signum = stopped.args[0]
    print(f"\nstopped by {signal.Signals(signum).name}{how}", file=sys.stderr)
    sys.exit(128 + signum)


def run(main):
    """Call a script's `main()`; Ctrl-C, SIGTERM (`kill`, `timeout`, a cluster's time limit) or a closed pipe
    (`python predict.py photos/ | head`) ends it with one line, not a traceback from wherever it landed.
    Nothing is left half-written: every file the scripts write replaces the old one whole, or not at all."""
    signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        try:
            main()
        finally:
            sys.stdout.flush()  # a pipe closed early fails here, where it is caught, not in Python's exit
    except KeyboardInterrupt:
        print("\nstopped by Ctrl-C", file=sys.stderr)
        sys.exit(130)
    except Stopped as e:
        exit_stopped(e)
    except BrokenPipeError:
        stop_printing()
        sys.exit("stopped: the output pipe was closed")


def stop_printing():
    """After a BrokenPipeError: send whatever stdout still holds nowhere, or Python fails again on exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def options_given(parser, argv=None):
    """The options `argv` sets (by their argparse names), whatever their values: a default typed out counts."""
    not_given = object()
    # argparse fills in a default only where the namespace it is given lacks the attribute
    unset = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), not_given))
    return {name for name, value in vars(parser.parse_args(argv, namespace=unset)).items() if value is not not_given}


class Parser(argparse.ArgumentParser):
    """argparse, but a bad option gets one line naming it, not the whole usage text."""

    def __init__(self, doc):
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _parse(kind, text):
    """`text` as an int or a float, or the ArgumentTypeError argparse turns into one line."""
    try:
        return kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive(kind):
    """An argparse type: an int or float greater than 0 (and finite)."""
    def parse(text):
        value = _parse(kind, text)
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be greater than 0{' and finite' * (kind is float)}, got {text}")
        return value
    return parse


def non_negative(kind):
    """An argparse type: an int or float of 0 or more (and finite)."""
    def parse(text):
        value = _parse(kind, text)
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
        return value
    return parse


def between(low, high):
    """An argparse type: a number from `low` to `high`. Beyond what makes sense is a typo, not a recipe."""
    def parse(text):
        value = _parse(float, text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}, got {text}")
        return value
    return parse


def fraction(text):
    """An argparse type: a number in [0, 1)."""
    value = _parse(float, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def seed(text):
    """An argparse type: a random seed, 0 to 2**63 - 1 (what torch and numpy both take)."""
    value = _parse(int, text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**63 - 1, got {text}")
    return value


def quoted(path):
    """`path` as a shell command line needs it: a folder with spaces in its name is one word."""
    return shlex.quote(str(path))


def port(text):
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    value = _parse(int, text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text}")
    return value


def writable_folder(folder, option, fix="pass a folder you can write to"):
    """Create `folder` if need be and make a file in it, so that a path the outputs cannot go to is refused
    before the work rather than after it; a RunError naming `option` and the `fix` if not."""
    if Path(folder).exists() and not Path(folder).is_dir():
        raise RunError(f"{option} {folder} is a file; pass a folder path")
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise RunError(f"cannot write to {option} {folder} ({e.strerror}); {fix}") from None


def add_device_option(parser, what="run"):
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help=f"where to {what} (default: auto = cuda, then mps, then cpu)")


def add_precision_option(parser):
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="arithmetic of the forward pass (default: auto = bf16 where the hardware runs it "
                             "natively and faster: CUDA, CPUs with AMX, AMD CPUs with AVX512-BF16; fp32 elsewhere)")


def add_dataset_option(parser, default=None):
    """--dataset: for train.py a choice (default mnist); for the scripts that read a checkpoint, a check."""
    names = list(data.DATASETS)
    if default:
        parser.add_argument("--dataset", default=default, choices=names, help=f"what to train on (default: {default})")
    else:
        parser.add_argument("--dataset", default=None, choices=names,
                            help="the dataset (default: the one the checkpoint was trained on; another is refused)")


def add_data_dir_option(parser):
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="where the datasets are kept (default: ./data; fetched if missing)")


def add_checkpoint_options(parser, use="use"):
    """--run-dir or --checkpoint, for the scripts that read a trained model (both given, one would be ignored)."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run-dir", default=DEFAULT_RUN_DIR,
                       help=f"run whose best.pt to {use} (default: {DEFAULT_RUN_DIR})")
    which.add_argument("--checkpoint", default=None, help="a checkpoint file to use instead of a run's best.pt")


def checkpoint_path(args):
    """The checkpoint the user asked for: --checkpoint, else the run's best.pt."""
    return Path(args.checkpoint) if args.checkpoint else Path(args.run_dir) / "best.pt"
