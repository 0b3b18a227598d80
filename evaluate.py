"""Evaluate a trained checkpoint on the 10,000 MNIST test images, the only place the test set is used.

    python evaluate.py                              # best.pt of the default run (runs/default)
    python evaluate.py --checkpoint runs/x/last.pt  # any other checkpoint

Prints accuracy, macro and weighted precision, recall and F1, a per-class table and the confusion
matrix, and writes metrics.json, predictions.csv, report.md and the plots beside the checkpoint.
"""

import csv
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

import checkpoints
import cli
import data
import plot
import runtime

DIGITS = list(range(10))


def parse_args(argv=None):
    p = cli.Parser(__doc__)
    cli.add_checkpoint_options(p, "evaluate; results are written beside the checkpoint")
    cli.add_data_dir_option(p)
    cli.add_device_option(p)
    cli.add_precision_option(p)
    p.add_argument("--batch-size", type=cli.positive(int), default=500, help="images per forward pass (default: 500)")
    return p.parse_args(argv)


def compute_metrics(labels, predictions):
    """Accuracy, precision, recall and F1 (macro, weighted and per digit) and the confusion matrix."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    metrics = {"accuracy": float(accuracy_score(labels, predictions))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, predictions, labels=DIGITS, average=average, zero_division=0)
        metrics.update({f"precision_{average}": float(precision), f"recall_{average}": float(recall),
                        f"f1_{average}": float(f1)})
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=DIGITS, zero_division=0)
    metrics["per_class"] = [
        {"digit": d, "precision": float(precision[d]), "recall": float(recall[d]), "f1": float(f1[d]),
         "support": int(support[d])} for d in DIGITS]
    metrics["confusion_matrix"] = confusion_matrix(labels, predictions, labels=DIGITS).tolist()
    return metrics


def format_report(metrics):
    lines = [f"accuracy            {metrics['accuracy']:.4f}"]
    for average in ("macro", "weighted"):
        lines.append(f"{average:<9} precision {metrics[f'precision_{average}']:.4f}  "
                     f"recall {metrics[f'recall_{average}']:.4f}  f1 {metrics[f'f1_{average}']:.4f}")
    lines += ["", "digit  precision  recall      f1  support"]
    lines += [f"{c['digit']:>5}  {c['precision']:>9.4f}  {c['recall']:>6.4f}  {c['f1']:>6.4f}  {c['support']:>7}"
              for c in metrics["per_class"]]
    lines += ["", "confusion matrix (rows: true digit, columns: predicted)",
              "      " + "".join(f"{d:>6}" for d in DIGITS)]
    lines += [f"{d:>6}" + "".join(f"{n:>6}" for n in row) for d, row in enumerate(metrics["confusion_matrix"])]
    return "\n".join(lines)


def write_predictions(path, labels, predictions, confidences):
    with data.atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "label", "prediction", "confidence"])
        for i, (label, prediction, confidence) in enumerate(zip(labels, predictions, confidences)):
            writer.writerow([i, int(label), int(prediction), f"{confidence:.6f}"])


def read_history(out_dir, checkpoint):
    """The run's per-epoch history: history.csv beside the checkpoint (complete), else the checkpoint's."""
    path = Path(out_dir) / "history.csv"
    if path.is_file():
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    return checkpoint.get("history", [])


def write_report(path, metrics, plots):
    headline = (f"| accuracy | precision (macro) | recall (macro) | F1 (macro) |\n|---|---|---|---|\n"
                f"| {metrics['accuracy']:.2%} | {metrics['precision_macro']:.4f} | "
                f"{metrics['recall_macro']:.4f} | {metrics['f1_macro']:.4f} |")
    table = "| digit | precision | recall | F1 | support |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {c['digit']} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |"
        for c in metrics["per_class"])
    figures = "\n\n".join(f"![{p.stem}]({p.name})" for p in plots)
    text = (f"# MNIST test-set report\n\nCheckpoint `{metrics['checkpoint']}` (epoch {metrics['epoch']}), "
            f"evaluated on the {sum(c['support'] for c in metrics['per_class'])} test images.\n\n"
            f"{headline}\n\n## Per class\n\n{table}\n\n## Plots\n\n{figures}\n")
    with data.atomic_write(path, "w") as f:
        f.write(text)


def evaluate(args):
    device = runtime.pick_device(args.device)
    precision, _ = runtime.pick_precision(args.precision, device)
    path = cli.checkpoint_path(args)
    checkpoint = checkpoints.load(path)
    model = checkpoints.load_model(checkpoint, device)
    out_dir = path.parent
    images, labels = data.load_split(args.data_dir, train=False)
    if device.type == "cpu":
        runtime.keep_freed_memory_mapped()

    started = time.perf_counter()
    logits = runtime.predict_logits(model, images.to(device), args.batch_size, precision).cpu()
    seconds = time.perf_counter() - started
    confidences, predictions = logits.softmax(1).max(1)
    labels, predictions, confidences = labels.numpy(), predictions.numpy(), confidences.numpy()

    metrics = compute_metrics(labels, predictions)
    metrics.update(checkpoint=str(path), epoch=int(checkpoint["epoch"]), test_images=len(labels),
                   model_seconds=round(seconds, 3))
    print(f"{path} (epoch {metrics['epoch']}) on {len(labels)} test images, "
          f"{seconds:.2f}s of model time on {device} in {precision}\n")
    print(format_report(metrics))

    data.write_json(out_dir / "metrics.json", metrics)
    write_predictions(out_dir / "predictions.csv", labels, predictions, confidences)
    plots = plot.plot_history(read_history(out_dir, checkpoint), out_dir, test_acc=metrics["accuracy"])
    plots.append(plot.plot_confusion_matrix(metrics["confusion_matrix"], out_dir / "confusion_matrix.png"))
    plots.append(plot.plot_per_class(metrics["per_class"], out_dir / "per_class.png"))
    plots.append(plot.plot_misclassified(images.numpy(), labels, predictions, confidences,
                                         out_dir / "misclassified.png"))
    write_report(out_dir / "report.md", metrics, plots)
    print(f"\nwrote metrics.json, predictions.csv, report.md and {len(plots)} plots to {out_dir}")
    return metrics


def main(argv=None):
    args = parse_args(argv)
    try:
        evaluate(args)
    except (cli.RunError, data.DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
