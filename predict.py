"""Classify your own images with a trained checkpoint: digits, or clothes for a Fashion-MNIST one.

    python predict.py my_digit.png scan.jpg           # best.pt of the default run
    python predict.py --top 3 digits/                 # each image in a folder: its three likeliest classes

Each picture is prepared the way the checkpoint's dataset was made (for MNIST: grey, light on dark,
cropped to its ink, fitted into 20x20 and centred by mass in 28x28), so photos, scans and drawings in
either polarity work. Confidences are calibrated with the temperature evaluate.py fitted, if it ran.
A file that cannot be read gets one line and the others are still classified; the exit code is 1 then.
"""

import sys
from pathlib import Path

import checkpoints
import cli
import images
import runtime


def parse_args(argv=None):
    p = cli.Parser(__doc__)
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...: up to 250 megapixels, colour or grey), "
                                             "or folders of them")
    cli.add_checkpoint_options(p)
    p.add_argument("--top", type=cli.positive(int), default=1, help="show the K likeliest classes (default: 1)")
    cli.add_dataset_option(p)
    cli.add_device_option(p)
    cli.add_precision_option(p)
    return p.parse_args(argv)


def image_files(paths):
    """(files, problems): each path given, a folder's image files in place of the folder (not its
    subfolders'); a folder with none becomes a problem line."""
    files, problems = [], []
    for path in paths:  # as given, so that each line names a file the way the user did
        if Path(path).exists() and not Path(path).is_file() and not Path(path).is_dir():
            problems.append(f"{path}: error: not a file but a pipe or a device, which would be read for ever")
            continue
        if not Path(path).is_dir():
            files.append(path)
            continue
        found = sorted(str(f) for f in Path(path).iterdir() if images.is_picture_file(f))
        files += found
        if not found:
            problems.append(f"{path}: error: no image files in this folder")
    return files, problems


def format_prediction(path, probabilities, top, classes):
    values, indices = probabilities.topk(top)
    guesses = "  ".join(f"{classes[k]} ({v:.1%})" for k, v in zip(indices.tolist(), values.tolist()))
    return f"{path}: {guesses}"


def main(argv=None):
    args = parse_args(argv)
    try:
        trained = checkpoints.open_trained(cli.checkpoint_path(args), args.device, args.precision, args.dataset)
    except cli.RunError as e:
        sys.exit(f"error: {e}")
    classes = trained.dataset.classes
    files, empty_folders = image_files(args.images)
    inputs, readable, unreadable = images.to_inputs(files, trained.dataset)
    problems = empty_folders + [f"{path}: error: {why}" for path, why in unreadable]
    for line in problems:
        print(line, file=sys.stderr)
    if inputs is not None and trained.temperature is None:
        print(f"note: confidences as trained, not calibrated (no temperature is fitted for {trained.path}: "
              "python evaluate.py on it fits one, where it can)", file=sys.stderr)
    if inputs is not None:
        # Calibrated with the temperature evaluate.py fitted, once it has run.
        probabilities = runtime.probabilities(trained.model, inputs, trained.precision, trained.temperature or 1.0)
        for path, p in zip(readable, probabilities):
            print(format_prediction(path, p, min(args.top, len(classes)), classes))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    cli.run(main)
