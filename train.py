"""Train the seed's CNN on MNIST (or Fashion-MNIST) and keep everything a run needs to be trusted and resumed.

    python train.py                      # the default recipe, into runs/default
    python train.py --epochs 2           # a quick model (about 99% on the test set)
    python train.py --resume             # continue the run in --run-dir after a crash or Ctrl-C
    python train.py --dataset fashion-mnist --run-dir runs/fashion

The run directory gets config.json, history.csv, last.pt (every epoch), best.pt (best validation
accuracy) and the accuracy and loss plots. Checkpoints are chosen on a validation split carved from
the training set; the test set is left to evaluate.py.
"""

import contextlib
import dataclasses
import importlib.metadata
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import checkpoints
import cli
import data
import runtime
from model import CNN

AUGMENTATION_OPTIONS = ("degrees", "scale", "shift", "elastic", "shear", "thickness", "blur", "noise")


def build_parser():
    p = cli.Parser(__doc__)
    p.add_argument("--epochs", type=cli.positive(int), default=6, help="passes over the training split (default: 6)")
    p.add_argument("--batch-size", type=cli.positive(int), default=128, help="images per step (default: 128)")
    p.add_argument("--lr", type=cli.positive(float), default=3e-3,
                   help="peak learning rate of the one-cycle schedule (default: 3e-3)")
    p.add_argument("--label-smoothing", type=cli.fraction, default=0.1,
                   help="label smoothing of the training loss, in [0, 1) (default: 0.1)")
    p.add_argument("--weight-decay", type=cli.non_negative(float), default=0.0,
                   help="decoupled weight decay (AdamW) per unit of learning rate (default: 0, plain Adam)")
    p.add_argument("--dropout", type=cli.fraction, default=0.0,
                   help="fraction of the first two linear layers' inputs dropped at random in training "
                        "(default: 0, none)")
    p.add_argument("--ema", type=cli.fraction, default=0.0,
                   help="keep an exponential moving average of the weights, with this decay per step once "
                        "warmed up (e.g. 0.999); validation, best.pt and so evaluate.py use the average (default: "
                        "0, none)")
    p.add_argument("--seed", type=cli.seed, default=0, help="seed for weights, shuffling and augmentation (default: 0)")
    p.add_argument("--val-size", type=cli.positive(int), default=5000,
                   help="training images held out for validation (default: 5000)")
    p.add_argument("--subset", type=cli.positive(int), default=None,
                   help="train on only this many images (and validate on at most as many): quick trials and tests")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="train on the images as they are (by default each is varied at random: MNIST: "
                        "rotation, scale and shift; Fashion-MNIST: shift and mirroring; and the options below)")
    p.add_argument("--rotation", dest="degrees", metavar="DEGREES", type=cli.between(0, 180), default=None,
                   help="largest rotation in degrees, up to 180 (default: the dataset's, MNIST 10, Fashion-MNIST 0)")
    p.add_argument("--scale", type=cli.fraction, default=None,
                   help="largest enlargement or shrinking, as a fraction (default: the dataset's, MNIST 0.1, "
                        "Fashion-MNIST 0)")
    p.add_argument("--shift", type=cli.between(0, 14), default=None,
                   help="largest shift in pixels, each way, up to 14 (default: the dataset's, 2 for both)")
    p.add_argument("--elastic", type=cli.between(0, 5), default=0.0,
                   help="RMS size in pixels, up to 5, of the smooth random distortion added to each training "
                        "image (Simard et al. 2003; default: 0, none)")
    p.add_argument("--shear", type=cli.between(0, 1), default=0.0,
                   help="largest slant, x moved by this fraction of y, up to 1 (default: 0, none)")
    p.add_argument("--thickness", type=cli.fraction, default=0.0,
                   help="largest thickening or thinning of the strokes, as a fraction of a 3x3 dilation or "
                        "erosion (default: 0, none)")
    p.add_argument("--blur", type=cli.between(0, 1), default=0.0,
                   help="largest blur, as a fraction (up to 1) of a 3x3 Gaussian's (default: 0, none)")
    p.add_argument("--noise", type=cli.between(0, 1), default=0.0,
                   help="largest standard deviation of the noise added to the ink, up to 1 (default: 0, none)")
    p.add_argument("--clean-epochs", type=cli.non_negative(int), default=1,
                   help="how many of the last epochs train on the images as they are, unaugmented, so that the "
                        "network ends on images as they come; never the first epoch (default: 1)")
    p.add_argument("--target-acc", type=float, default=None,
                   help="stop once validation accuracy reaches this fraction, e.g. 0.99")
    cli.add_dataset_option(p, default="mnist")
    cli.add_device_option(p, "train")
    cli.add_precision_option(p)
    cli.add_data_dir_option(p)
    p.add_argument("--run-dir", default=cli.DEFAULT_RUN_DIR,
                   help=f"where this run is written (default: {cli.DEFAULT_RUN_DIR})")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir from its last.pt, with that run's own settings (options "
                            "that would change them are refused)")
    start.add_argument("--overwrite", action="store_true",
                       help="start afresh even if --run-dir holds a run, removing that run's checkpoints, history "
                            "and evaluation results first")
    return p


def parse_args(argv=None, parser=None):
    p = parser or build_parser()
    args = p.parse_args(argv)
    if args.target_acc is not None and not 0 < args.target_acc <= 1:
        p.error(f"--target-acc must be a fraction in (0, 1], got {args.target_acc}")
    return args


# ---------------------------------------------------------------------------------------------
# Training and validation


def loss_and_accuracy(logits, labels):
    # The accuracy as a Python float of correct / all: float32's mean gave 480/500 as 0.95999998, short of
    # a --target-acc of 0.96.
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).sum().item() / len(labels)


def clean_epochs(args):
    """How many of the run's last epochs train on the images as they are: --clean-epochs, short of the first
    (a single epoch of MNIST unaugmented read 0.13 points less of the validation split)."""
    return min(args.clean_epochs, args.epochs - 1) if args.augment else 0


def augmentation(args, epoch):
    """The dataset's augmentation as the options set it for `epoch`; None with --no-augment and in the last
    clean_epochs. An option left at None keeps the dataset's own value, so one that differs between datasets
    must default to None."""
    if not args.augment or epoch > args.epochs - clean_epochs(args):
        return None
    chosen = {option: value for option in AUGMENTATION_OPTIONS if (value := getattr(args, option)) is not None}
    return dataclasses.replace(data.DATASETS[args.dataset].augmentation, **chosen)


def train_one_epoch(model, optimizer, scheduler, images, labels, args, epoch, precision="fp32", averaged=None):
    """One pass over the training images, updating the weights' moving average `averaged` (if any) after
    each step; returns (mean loss, accuracy) on what it trained on, and the learning rate of its last step."""
    model.train()
    generator = data.epoch_generator(args.seed, epoch)
    steps = math.ceil(len(images) / args.batch_size)
    dataset = data.DATASETS[args.dataset]
    bar = tqdm(data.batches(images, labels, args.batch_size, generator, augmentation(args, epoch), dataset),
               total=steps, desc=f"epoch {epoch}/{args.epochs}", unit="batch", leave=False, file=sys.stderr,
               disable=None)  # no bar when stderr is not a terminal (logs, CI)
    layout = runtime.memory_format(images.device)
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for step, (x, y) in enumerate(bar, 1):
        x = x.contiguous(memory_format=layout)
        with runtime.autocast(images.device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]  # the scheduler has moved on past it by the end of the epoch
        optimizer.step()
        scheduler.step()
        if averaged is not None:
            averaged.update_parameters(model)
        # Report the plain cross-entropy, comparable with the validation loss, not the smoothed one.
        loss_sum += F.cross_entropy(logits.detach().float(), y) * len(y)
        correct += (logits.argmax(1) == y).sum()
        if step % 20 == 0 or step == steps:  # reading the loss waits for the GPU; do it now and then
            running = loss_sum.item() / min(step * args.batch_size, len(images))
            if not math.isfinite(running):
                raise FloatingPointError(f"the training loss became {running} in epoch {epoch}")
            bar.set_postfix(loss=f"{running:.4f}")
    bar.close()
    return loss_sum.item() / len(images), correct.item() / len(images), lr


# ---------------------------------------------------------------------------------------------
# The run directory


def run_config(args, device):
    # torchvision's version from its metadata: importing it takes seconds, and --help should not wait
    return {**vars(args), "device_used": str(device), "torch": str(torch.__version__),
            "torchvision": importlib.metadata.version("torchvision"), "python": platform.python_version(),
            "code": code_version(), "command": " ".join(sys.argv)}


def code_version():
    """The repo's git commit, with "+changes" where tracked files differ from it; None outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode:
            return None
        return commit.stdout.strip() + ("+changes" if git("status", "--porcelain", "--untracked-files=no").stdout
                                        else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def lock_folder(path):
    """checkpoints.lock_folder, exclusive; RunError if another train.py, or an evaluate.py, holds it."""
    try:
        return checkpoints.lock_folder(path)
    except BlockingIOError:
        raise cli.RunError(f"{path} is in use by another train.py or by evaluate.py; wait for it to end (or stop "
                           "it), or pass --run-dir for a new run") from None


@contextlib.contextmanager
def locked_run_dir(run_dir):
    """Create `run_dir` and keep it to this process while the block runs: a second train.py into it (from
    another terminal, say) is refused, since the two would overwrite each other's checkpoints and history
    and delete each other's files in the middle of being written. The lock goes with the process, however
    it ends. The folders it made go again if the run fails before writing anything (bad data, say)."""
    path = Path(run_dir).absolute()
    made = [p for p in (path, *path.parents) if not p.exists()]  # innermost first
    cli.writable_folder(run_dir, "--run-dir")
    folder = lock_folder(run_dir)
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):  # not empty: the run wrote something, and it stays
            for new_folder in made:
                new_folder.rmdir()
        raise
    finally:
        if folder is not None:
            os.close(folder)


def remove_earlier_run(run_dir):
    """Remove what an earlier run left in `run_dir`, so that none of it can be taken for the new run's: a
    temperature fitted for other weights, another model's test accuracy in plot.py's comparison."""
    files, folders = checkpoints.run_files(run_dir)
    for path in files:
        path.unlink()
    for folder in folders:
        shutil.rmtree(folder)


def prepare_run_dir(args):
    """Check the run directory (created and locked by locked_run_dir); refuse to silently overwrite
    an earlier run, and clear it out when asked to (--overwrite)."""
    run_dir = Path(args.run_dir)
    # history.csv without last.pt is a run too (last.pt deleted to save space, say): its best.pt and evaluation
    # would otherwise be replaced, or stay beside new weights of the same epochs and be taken for theirs. (A
    # best.pt alone is a first epoch killed between its two checkpoints: nothing to keep.)
    holds_a_run = (run_dir / "last.pt").exists() or (run_dir / "history.csv").exists()
    if holds_a_run and not (args.resume or args.overwrite):
        raise cli.RunError(f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to "
                           "start it again, or --run-dir for a new one")
    if holds_a_run and args.overwrite:  # only where a run is: a folder of other files keeps them
        remove_earlier_run(run_dir)
    data.remove_stale_temp_files(run_dir)  # left by writes that were killed; the real files are whole
    return run_dir


def restore_args(args, checkpoint, run_dir, given):
    """On resume, the run's own settings come from its checkpoint; only runtime options are new. An option
    `given` on the command line that would change a setting is refused, not ignored, even at its default:
    the schedule, the split and the random draws were laid out for the run's own."""
    saved = {key: value for key, value in {**cli.ADDED_LATER, **checkpoint["config"]}.items()
             if hasattr(args, key) and key not in cli.RUNTIME_OPTIONS}
    changed = [f"{key} {value} -> {getattr(args, key)}" for key, value in saved.items()
               if key in given and getattr(args, key) != value]
    if changed:
        raise cli.RunError(f"--resume continues {run_dir} with its own settings, and the options given would "
                           f"change them (the run's -> the options', by config.json's names: "
                           f"{', '.join(changed)}); drop those options, or start a new run with another --run-dir")
    for key, value in saved.items():
        setattr(args, key, value)


def checkpoint_to_resume(args, run_dir, given):
    """With --resume, the run's last.pt, `args` set to the run's own settings; else None."""
    if not args.resume:
        return None
    if not (run_dir / "last.pt").exists() and (run_dir / "history.csv").exists():
        raise cli.RunError(f"nothing to resume: {run_dir} holds a run whose last.pt is gone, so it cannot be "
                           "continued; start it again with --overwrite, or pass another --run-dir")
    if not (run_dir / "last.pt").exists():
        why = "no epoch had completed" if (run_dir / "config.json").exists() else "it holds no run"
        raise cli.RunError(f"nothing to resume: {run_dir} has no last.pt ({why}); "
                           f"start it with: python train.py --run-dir {cli.quoted(run_dir)}")
    checkpoint = checkpoints.load(run_dir / "last.pt")
    restore_args(args, checkpoint, run_dir, given)
    return checkpoint


def load_data(args, device):
    (train_x, train_y), (val_x, val_y) = data.training_splits(args.data_dir, args.val_size, args.subset,
                                                              data.DATASETS[args.dataset])
    if args.subset and args.subset > len(train_x):
        print(f"note: --subset {args.subset} is more than the {len(train_x)} images of the training split; "
              "training on all of them")
    # The whole uint8 set is ~50 MB: on a GPU it lives there, and batches never cross the bus.
    return [t.to(device) for t in (train_x, train_y, val_x, val_y)]


class Finished(Exception):
    """--resume of a run that has nothing left to train; carries what to tell the user."""


def build(args, train_images, device):
    """The seeded model, AdamW (fused: one kernel for all weights) and the one-cycle schedule."""
    torch.manual_seed(args.seed)
    model = CNN(args.dropout).to(device, memory_format=runtime.memory_format(device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay, fused=True)
    steps_per_epoch = math.ceil(train_images / args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                    steps_per_epoch=steps_per_epoch)
    return model, optimizer, scheduler


def moving_average(model, decay):
    """An exponential moving average of `model`'s weights, or None at decay 0."""
    if not decay:
        return None

    def update(averaged, current, steps):
        # Warmed up as TensorFlow's ExponentialMovingAverage is, (1 + steps) / (10 + steps) until that reaches
        # `decay`: otherwise the first step's weights weigh 0.999 ** steps in the average, 7.6% of it after
        # the default run's 2,580 steps. Kept a tensor, so that a GPU is not waited for at every step.
        steps = steps.float()
        rate = 1 - torch.clamp((1 + steps) / (10 + steps), max=decay)
        for a, c in zip(averaged, current, strict=True):
            a.lerp_(c, rate)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=update)


def how_to_resume(run_dir):
    last = run_dir / "last.pt"
    if not last.exists():
        return "no epoch was saved, so there is nothing to resume: run the same command again to start afresh"
    return (f"the last completed epoch is in {last}. Resume with: python train.py --run-dir {cli.quoted(run_dir)} "
            "--resume")


def what_next(run_dir, history, data_dir, plotted=True):
    """The closing line: the best epoch, and the evaluate.py command for it (saying so where the run's
    evaluation results are of an earlier best.pt, as after --resume)."""
    best = checkpoints.best_epoch(history)
    command = f"python evaluate.py --run-dir {cli.quoted(run_dir)}"
    if data_dir != cli.DEFAULT_DATA_DIR:
        command += f" --data-dir {cli.quoted(data_dir)}"
    evaluated = checkpoints.read_results(run_dir / "metrics.json")
    stale = ""
    if evaluated and evaluated.get("weights") is None:
        stale = " (its results are from an evaluate.py that did not say whose weights they were of)"
    elif evaluated and not checkpoints.results_are_of(evaluated, checkpoints.digest_of(run_dir / "best.pt")):
        epoch = checkpoints.evaluated_epoch(evaluated)
        stale = f" (its results are of an earlier best.pt{f', epoch {epoch}' if epoch else ''})"
    return (f"Best validation accuracy {best['val_acc']:.4f} (epoch {best['epoch']}); checkpoints "
            f"{'and plots ' if plotted else ''}in {run_dir}. Next: {command}{stale}")


def restore_training_state(checkpoint, run_dir, model, averaged, optimizer, scheduler, device):
    """Put last.pt's weights, their moving average, the optimizer, the schedule and the random state back,
    so that the run goes on as if it had never stopped; RunError if they do not fit this run."""
    checkpoints.load_weights(model if averaged is None else averaged.module, checkpoint)
    try:
        if averaged is not None:
            model.load_state_dict(checkpoint["trained"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if averaged is not None:
            averaged.n_averaged.fill_(scheduler.last_epoch)  # one update per step so far: the warm-up goes on
        runtime.set_rng_state(checkpoint["rng"], device)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise cli.RunError(f"{run_dir / 'last.pt'}: its training state (optimizer, schedule, weight average or "
                           f"random state) does not fit this run ({e}); start afresh with --overwrite") from None


def mend_history(path, history):
    """Write history.csv again if it is not last.pt's `history`: a kill between the last epoch's last.pt and
    its history.csv left the file an epoch short."""
    try:
        whole = len(checkpoints.read_history(path)) == len(history)
    except cli.RunError:
        whole = False
    if not whole:
        checkpoints.write_history(path, history)


@contextlib.contextmanager
def resumable_if_a_write_fails(run_dir):
    """A write into the run that fails (a full disk, say) stops it in one line that says how to go on. The
    files before stay whole, and a first epoch's best.pt with no last.pt beside it goes: no run is left that
    cannot resume."""
    try:
        yield
    except data.DataError as e:
        if not (run_dir / "last.pt").exists():
            (run_dir / "best.pt").unlink(missing_ok=True)
        raise cli.RunError(f"{e}; {how_to_resume(run_dir)}") from None


def save_epoch(run_dir, checkpoint, history, is_best):
    """best.pt (if this epoch is the best yet), last.pt, then history.csv."""
    with resumable_if_a_write_fails(run_dir):
        if is_best:
            checkpoints.save(run_dir / "best.pt", checkpoint)
        checkpoints.save(run_dir / "last.pt", checkpoint)
        checkpoints.write_history(run_dir / "history.csv", history)


def train(args, device, given):
    """Train the run `args` describe (`given`: the options the command line set) into its run directory."""
    runtime.flush_denormals()  # first, while torch has no worker threads yet: they copy it when they start
    run_dir = prepare_run_dir(args)
    checkpoint = checkpoint_to_resume(args, run_dir, given)
    if device.type == "cpu":
        runtime.keep_freed_memory_mapped()
    precision, why = runtime.pick_precision(args.precision, device)

    train_x, train_y, val_x, val_y = load_data(args, device)
    model, optimizer, scheduler = build(args, len(train_x), device)
    averaged = moving_average(model, args.ema)
    kept = model if averaged is None else averaged.module  # the weights validated and saved as "model"
    config = {**run_config(args, device), "precision_used": precision, "precision_reason": why}
    history, best_val_acc, start_epoch = [], -1.0, 1
    if checkpoint is not None:
        restore_training_state(checkpoint, run_dir, model, averaged, optimizer, scheduler, device)
        history, best_val_acc = checkpoint["history"], checkpoint["best_val_acc"]
        start_epoch = checkpoint["epoch"] + 1
        started_with = checkpoint["config"].get("code", config["code"])  # the code of the epochs so far
        if started_with != config["code"]:
            config.update(code=started_with, resumed_with_code=config["code"])
        # Asked only now that the state is restored, so that a last.pt this code cannot continue is refused,
        # not called finished (the cost: the data is read, or fetched into a new --data-dir, first).
        if start_epoch > args.epochs or checkpoints.reached_target(history, args.target_acc):
            with resumable_if_a_write_fails(run_dir):
                mend_history(run_dir / "history.csv", history)
            raise Finished(f"nothing to resume: {run_dir} finished after epoch {checkpoint['epoch']} of "
                           f"{args.epochs}. {what_next(run_dir, history, args.data_dir)}")
        print(f"resuming {run_dir} after epoch {checkpoint['epoch']} of {args.epochs}")
    with resumable_if_a_write_fails(run_dir):
        data.write_json(run_dir / "config.json", config)
    last = f", the last {clean_epochs(args)} without augmentation" if clean_epochs(args) else ""
    print(f"training on {len(train_x)} images, validating on {len(val_x)}, device {device}, {precision} ({why}), "
          f"{args.epochs} epoch{'s' if args.epochs > 1 else ''} of batch {args.batch_size}{last}")

    for epoch in range(start_epoch, args.epochs + 1):
        if checkpoints.reached_target(history, args.target_acc):
            print(f"validation accuracy {history[-1]['val_acc']:.4f} reached --target-acc {args.target_acc}: "
                  f"stopping after epoch {history[-1]['epoch']} of {args.epochs}")
            break
        started = time.perf_counter()
        train_loss, train_acc, lr = train_one_epoch(model, optimizer, scheduler, train_x, train_y,
                                                    args, epoch, precision, averaged)
        training_seconds = time.perf_counter() - started
        logits = runtime.logits_of(kept, val_x, precision, dataset=data.DATASETS[args.dataset])
        val_loss, val_acc = loss_and_accuracy(logits, val_y)
        if not math.isfinite(val_loss):
            raise FloatingPointError(f"the validation loss became {val_loss} in epoch {epoch}")
        seconds = time.perf_counter() - started
        row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
               "val_acc": val_acc, "lr": lr, "seconds": round(seconds, 3)}
        history.append(row)
        best_val_acc = max(best_val_acc, val_acc)
        checkpoint = {"format": checkpoints.FORMAT, "model": kept.state_dict(),
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "epoch": epoch, "val_acc": val_acc, "best_val_acc": best_val_acc,
                      "history": history, "config": config, "rng": runtime.rng_state(device)}
        if averaged is not None:
            checkpoint["trained"] = model.state_dict()  # the weights the optimizer works on, to resume
        save_epoch(run_dir, checkpoint, history, is_best=val_acc >= best_val_acc)
        print(f"epoch {epoch:2d}/{args.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
              f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {row['lr']:.2e}  {seconds:.1f}s  "
              f"{len(train_x) / training_seconds:.0f} img/s", flush=True)  # the training's rate, not validation's
    return run_dir, history


def main(argv=None):
    parser = build_parser()
    args = parse_args(argv, parser)
    for signum in (signal.SIGINT, signal.SIGTERM):  # both say how to resume
        signal.signal(signum, cli.stop_on_signal)
    try:
        device = runtime.pick_device(args.device)  # before the run directory is made, so a refusal leaves none
        with locked_run_dir(args.run_dir):
            run_dir, history = train(args, device, cli.options_given(parser, argv))
    except (cli.RunError, data.DataError) as e:
        sys.exit(f"error: {e}")
    except FloatingPointError as e:
        kept = ("best.pt and last.pt hold the last good epoch" if (Path(args.run_dir) / "last.pt").exists() else
                "no epoch had completed, so nothing was saved")
        decay = f" or --weight-decay (now {args.weight_decay})" if args.weight_decay else ""
        sys.exit(f"error: {e}; stopped without saving it. {kept}. Try a lower --lr (now {args.lr}){decay}.")
    except Finished as e:
        print(e)
        return
    except cli.Stopped as e:
        cli.exit_stopped(e, f": {how_to_resume(Path(args.run_dir))}")
    except BrokenPipeError:  # `python train.py | head`: the reader has gone, so stop as if killed
        cli.stop_printing()
        sys.exit(f"stopped: the output pipe was closed; {how_to_resume(Path(args.run_dir))}")
    runtime.release_freed_memory()  # the plots need less than training kept; keep the run's peak down
    try:
        import plot

        plot.plot_history(history, run_dir, run=Path(run_dir).resolve().name)
    except data.DataError as e:
        sys.exit(f"error: {e} (the training itself finished: its checkpoints are in {run_dir})")
    except cli.Stopped as e:
        cli.exit_stopped(e, f" while drawing the training curves; the training itself finished, and evaluate.py "
                            f"draws them too. {what_next(run_dir, history, args.data_dir, plotted=False)}")
    print(what_next(run_dir, history, args.data_dir))


if __name__ == "__main__":
    cli.run(main)
