"""Classify your own images with a trained checkpoint: digits, or clothes for a Fashion-MNIST one.

    python predict.py my_digit.png scan.jpg           # best.pt of the default run
    python predict.py --top 3 digits/*.png            # the three likeliest classes of each

Each picture is prepared the way the checkpoint's dataset was made (for MNIST: grey, light on dark,
cropped to its ink, fitted into 20x20 and centred by mass in 28x28), so photos, scans and drawings in
either polarity work. Confidences are calibrated with the temperature evaluate.py fitted, if it ran.
A file that cannot be read gets one line and the others are still classified; the exit code is 1 then.
"""

import sys

import torch

import checkpoints
import cli
import images
import runtime


def parse_args(argv=None):
    p = cli.Parser(__doc__)
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...: any size, colour or grey)")
    cli.add_checkpoint_options(p)
    p.add_argument("--top", type=cli.positive(int), default=1, help="show the K likeliest classes (default: 1)")
    cli.add_dataset_option(p)
    cli.add_device_option(p)
    cli.add_precision_option(p)
    return p.parse_args(argv)


def prepare_all(paths, dataset):
    """(inputs, readable paths, problems): each unreadable file becomes a problem line, not an exception."""
    inputs, readable, problems = [], [], []
    for path in paths:
        try:
            inputs.append(images.to_input(path, dataset))
            readable.append(path)
        except images.ImageError as e:
            problems.append(f"{path}: error: {e}")
    return inputs, readable, problems


def format_prediction(path, probabilities, top, classes):
    values, indices = probabilities.topk(top)
    guesses = "  ".join(f"{classes[k]} ({v:.1%})" for k, v in zip(indices.tolist(), values.tolist()))
    return f"{path}: {guesses}"


def main(argv=None):
    args = parse_args(argv)
    try:
        device = runtime.pick_device(args.device)
        precision, _ = runtime.pick_precision(args.precision, device)
        path = cli.checkpoint_path(args)
        checkpoint = checkpoints.load(path)
        dataset = checkpoints.dataset_of(checkpoint, args.dataset)
        model = checkpoints.load_model(checkpoint, device)
    except cli.RunError as e:
        sys.exit(f"error: {e}")
    temperature = checkpoints.load_temperature(path, checkpoint)  # None until evaluate.py has run
    inputs, readable, problems = prepare_all(args.images, dataset)
    for line in problems:
        print(line, file=sys.stderr)
    if inputs:
        probabilities = runtime.probabilities(model, torch.stack(inputs), precision, temperature or 1.0)
        for path, p in zip(readable, probabilities):
            print(format_prediction(path, p, min(args.top, len(dataset.classes)), dataset.classes))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
