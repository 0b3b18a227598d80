"""Evaluate a trained checkpoint on the 10,000 test images of its dataset, the only place the test set is used.

    python evaluate.py                              # best.pt of the default run (runs/default)
    python evaluate.py --checkpoint runs/x/last.pt  # any other checkpoint
    python evaluate.py --images data/external/heldout  # your own labelled images (see make_external.py)

Prints accuracy, macro and weighted precision, recall and F1, a per-class table, the confusion matrix
and the calibration (ECE, NLL, Brier) before and after a softmax temperature fitted on the validation
split. Writes beside the checkpoint: metrics.json, predictions.csv, temperature.json (which predict.py
and serve.py apply), report.md and the plots, among them what the network learned: its first-layer
filters, Grad-CAM on its most confident mistakes and a t-SNE map of its penultimate features. For a
checkpoint other than best.pt they go to a folder of its own beside it (evaluation-last/ for last.pt),
so that the run's own results stay those of its best.pt.

With --images DIR it evaluates a folder of labelled images of any format instead (DIR/0/..., ...,
DIR/9/..., torchvision's ImageFolder layout; for Fashion-MNIST the folders may carry the class names),
each prepared as predict.py prepares it, and writes its results to external-<DIR's name>/ in the
checkpoint's results folder, leaving the test-set outputs as they are: the same metrics, report and figures
(but for the training curves and what the network learned), its calibration with the temperature fitted on
the validation split if one is.
"""

import contextlib
import csv
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

import checkpoints
import cli
import data
import images
import plot
import runtime


def parse_args(argv=None):
    p = cli.Parser(__doc__)
    cli.add_checkpoint_options(p, "evaluate; results are written beside it")
    cli.add_dataset_option(p)
    cli.add_data_dir_option(p)
    cli.add_device_option(p)
    cli.add_precision_option(p)
    p.add_argument("--batch-size", type=cli.positive(int), default=500, help="images per forward pass (default: 500)")
    p.add_argument("--images", metavar="DIR", default=None,
                   help="evaluate a folder of labelled images (DIR/0/..., ..., DIR/9/...) instead of the test set")
    return p.parse_args(argv)


CONFIDENCES = (("as trained", "before"), ("calibrated", "after"))  # the rows of a calibration table
SURE_ENOUGH = (0.5, 0.9, 0.99)  # answering only at or above these confidences: how many answers, how many right


def compute_metrics(labels, predictions, classes=data.MNIST.classes):
    """Accuracy, precision, recall and F1 (macro, weighted and per class) and the confusion matrix.

    scikit-learn's, over the classes that occur in the labels or the predictions, where a figure that is
    undefined is None in its class's row and left out of the averages: the precision of a class never
    predicted, the recall of a class no image belongs to. So a folder of only 1s and 7s read perfectly
    scores 1.0, not 0.2 for eight classes it never had a chance at; and a 7 read as a 3 there counts
    against the macro precision (class 3's is 0), not only against the recall of the 7s."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    metrics = {"accuracy": float(accuracy_score(labels, predictions))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, average=average,
                                                                   zero_division=np.nan)
        metrics.update({f"precision_{average}": defined(precision), f"recall_{average}": defined(recall),
                        f"f1_{average}": defined(f1)})
    indices = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=indices,
                                                                     zero_division=np.nan)
    metrics["per_class"] = [
        {"class": k, "name": name, "precision": defined(precision[k]), "recall": defined(recall[k]),
         "f1": defined(f1[k]), "support": int(support[k])} for k, name in enumerate(classes)]
    metrics["confusion_matrix"] = confusion_matrix(labels, predictions, labels=indices).tolist()
    return metrics


def defined(value):
    """A float for JSON, None where it is undefined (NaN, which JSON has no word for)."""
    return None if math.isnan(value) else float(value)


def occurring(per_class):
    """The rows of the classes that occur in the labels or the predictions (a folder may hold only some)."""
    return [c for c in per_class if c["precision"] is not None or c["recall"] is not None]


UNDEFINED = ("— undefined: the precision of a class never predicted, the recall of a class no image belongs to; "
             "the macro averages leave these out")


def undefined(per_class):
    return any(None in (c["precision"], c["recall"], c["f1"]) for c in per_class)


def number(value, spec=".4f", width=0):
    """A figure as the report prints it; an undefined one as a dash."""
    return f"{'—' if value is None else format(value, spec):>{width}}"


def calibration(logits, labels, bins=15):
    """How far the softmax confidences of `logits` can be trusted on these `labels`.

    Expected calibration error over `bins` equal-width confidence bins (Guo et al. 2017), the mean
    negative log-likelihood, and the Brier score (squared error of the probability vector, summed over
    the ten classes, averaged over images); with each bin's count, accuracy and mean confidence; and,
    answering only at a confidence of at least each of SURE_ENOUGH, the share of images answered and the
    accuracy of those answers (None where none is that sure).
    """
    probabilities = logits.float().softmax(1)
    confidences, predictions = probabilities.max(1)
    correct = (predictions == labels).double()
    index = torch.bucketize(confidences, torch.linspace(0, 1, bins + 1)[1:-1])  # (k/bins, (k+1)/bins]
    counts = torch.bincount(index, minlength=bins).double()
    hits = torch.bincount(index, weights=correct, minlength=bins)
    confidence_sums = torch.bincount(index, weights=confidences.double(), minlength=bins)
    filled = counts > 0
    accuracy = torch.where(filled, hits / counts.clamp(min=1), torch.nan)
    mean_confidence = torch.where(filled, confidence_sums / counts.clamp(min=1), torch.nan)
    ece = ((hits - confidence_sums).abs().sum() / len(labels)).item()
    brier = (probabilities - F.one_hot(labels, probabilities.shape[1])).square().sum(1).mean().item()
    answered = []
    for least in SURE_ENOUGH:
        sure = confidences >= least
        answered.append({"confidence": least, "share": sure.double().mean().item(),
                         "accuracy": correct[sure].mean().item() if sure.any() else None})
    return {"ece": ece, "nll": F.cross_entropy(logits.float(), labels).item(), "brier": brier,
            "bins": {"count": counts.long().tolist(), "accuracy": [defined(a) for a in accuracy.tolist()],
                     "confidence": [defined(c) for c in mean_confidence.tolist()]}, "answered": answered}


def calibration_with(logits, labels, temperature, fitted_on):
    """metrics["calibration"]: the confidences as trained ("before") and divided by `temperature`
    ("after"; None without one), with where the temperature was fitted."""
    return {"temperature": temperature, "fitted_on": fitted_on, "before": calibration(logits, labels),
            "after": calibration(logits / temperature, labels) if temperature else None}


def fit_temperature(logits, labels):
    """The single softmax temperature T that minimises the NLL of logits / T (Guo et al. 2017); None when
    every image is read right, where the NLL only falls as T shrinks and no temperature is best."""
    if (logits.argmax(1) == labels).all():
        return None
    logits = logits.double()

    def nll(log_t):
        return F.cross_entropy(logits / math.exp(log_t), labels).item()

    return math.exp(minimize_scalar(nll, bounds=(math.log(0.05), math.log(20)), method="bounded").x)


def grad_cam(model, images, targets):
    """Grad-CAM maps [N, 28, 28] in [0, 1]: where in each image the evidence for `targets` lies.

    Computed on the last conv layer's 14x14 output after its ReLU (Selvaraju et al. 2017): each
    channel weighted by the mean gradient of the target's logit over it, summed, kept where positive,
    upsampled. (The model pools before the ReLU; the two commute, so this is the same activation.)
    """
    captured = {}
    hook = model.L2[0].register_forward_hook(lambda module, inputs, output: captured.update(maps=output))
    try:
        with torch.enable_grad():
            scores = model(images).gather(1, targets[:, None]).sum()
            gradients = torch.autograd.grad(scores, captured["maps"])[0]
    finally:
        hook.remove()
    activations = F.relu(captured["maps"])
    cam = F.relu((gradients.mean((2, 3), keepdim=True) * activations).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cam / cam.amax((1, 2), keepdim=True).clamp(min=1e-12)


def feature_map(features, count=2000, seed=0, always=()):
    """(indices, 2-D t-SNE coordinates) of a seeded sample of `count` rows of `features`, so that the map
    takes seconds whatever the model: every row of `always` among them, or half the sample of those when
    they are more (a barely trained model's mistakes), so that the rest still shows the right answers."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    count, always = min(count, len(features)), np.asarray(always, dtype=int)
    others = np.setdiff1d(np.arange(len(features)), always)
    kept = min(len(always), max(count // 2, count - len(others)))  # more than half only where others are few
    if kept < len(always):
        always = rng.choice(always, size=kept, replace=False)
    chosen = rng.choice(others, size=count - kept, replace=False)
    indices = np.sort(np.concatenate([always, chosen]))
    # 500 iterations (half the default) draw the same clusters in half the time.
    tsne = TSNE(n_components=2, init="pca", perplexity=30, max_iter=500, random_state=seed)
    points = tsne.fit_transform(features[indices])
    return indices, points


def format_report(metrics):
    lines = [f"accuracy            {metrics['accuracy']:.4f}"]
    for average in ("macro", "weighted"):
        lines.append(f"{average:<9} precision {metrics[f'precision_{average}']:.4f}  "
                     f"recall {metrics[f'recall_{average}']:.4f}  f1 {metrics[f'f1_{average}']:.4f}")
    names = [c["name"] for c in metrics["per_class"]]
    width = max(5, *map(len, names))
    lines += ["", f"{'class':>{width}}  precision  recall      f1  support"]
    lines += [f"{c['name']:>{width}}  {number(c['precision'], width=9)}  {number(c['recall'], width=6)}  "
              f"{number(c['f1'], width=6)}  {c['support']:>7}" for c in metrics["per_class"]]
    if undefined(metrics["per_class"]):
        lines.append(UNDEFINED)
    lines += ["", "confusion matrix (rows: true class, columns: predicted; classes in the order above)",
              " " * (width + 1) + "".join(f"{k:>6}" for k in range(len(names)))]
    lines += [f"{name:>{width + 1}}" + "".join(f"{n:>6}" for n in row)
              for name, row in zip(names, metrics["confusion_matrix"])]
    if "calibration" in metrics:
        c = metrics["calibration"]
        lines += ["", f"calibration ({temperature_note(c)})", "                ECE       NLL     Brier"]
        lines += [f"{name:<12}{c[key]['ece']:>8.2%}{c[key]['nll']:>10.4f}{c[key]['brier']:>10.4f}"
                  for name, key in CONFIDENCES if c[key]]
        given, key = trusted(c)
        lines += ["", f"answering only when sure ({given} confidences)"]
        lines += [f"  at least {a['confidence']:.0%}: {a['share']:.2%} of the images"
                  + (f", {a['accuracy']:.2%} of them right" if a["accuracy"] is not None else "")
                  for a in c[key]["answered"]]
    return "\n".join(lines)


def temperature_note(c):
    """Where metrics["calibration"]'s temperature came from, or why there is none."""
    if c["after"]:
        return f"temperature {c['temperature']:.3f}, fitted on {c['fitted_on']}"
    if c["fitted_on"]:
        return f"no temperature fitted: {c['fitted_on']}"
    return "no temperature fitted yet: python evaluate.py on the checkpoint fits one on the validation split"


def trusted(c):
    """(name, key) of the confidences predict.py and serve.py give: calibrated if a temperature is fitted."""
    return CONFIDENCES[1] if c["after"] else CONFIDENCES[0]


def calibration_table(c):
    """The markdown tables of metrics["calibration"], after a line saying where its temperature came from."""
    note = temperature_note(c)
    fitted = note[0].upper() + note[1:] + (": a softmax temperature (Guo et al. 2017), which predict.py and "
                                           "serve.py apply." if c["after"] else ".")
    measures = "\n".join(f"| {name} | {c[key]['ece']:.2%} | {c[key]['nll']:.4f} | {c[key]['brier']:.4f} |"
                         for name, key in CONFIDENCES if c[key])
    given, key = trusted(c)
    answers = "\n".join(f"| {a['confidence']:.0%} | {a['share']:.2%} | "
                        f"{'—' if a['accuracy'] is None else format(a['accuracy'], '.2%')} |"
                        for a in c[key]["answered"])
    bins = len(c["before"]["bins"]["count"])
    return (f"{fitted}\n\n| confidences | ECE ({bins} bins) | NLL | Brier |\n|---|---|---|---|\n{measures}\n\n"
            f"Answering only when sure ({given} confidences):\n\n"
            f"| confidence at least | images answered | of them right |\n|---|---|---|\n{answers}")


def score(logits, labels, temperature, fitted_on, classes):
    """The metrics of `logits` on `labels`, calibration included, and each image's prediction and
    confidence as predict.py gives them (the logits divided by `temperature`, where one is fitted)."""
    confidences, predictions = (logits / (temperature or 1.0)).softmax(1).max(1)
    metrics = compute_metrics(labels.numpy(), predictions.numpy(), classes)
    metrics["calibration"] = calibration_with(logits, labels, temperature, fitted_on)
    return metrics, predictions.numpy(), confidences.numpy()


def write_predictions(path, key, names, labels, predictions, confidences, classes):
    """predictions.csv: a row per image, named in the column `key` by `names` (test-set indices, file paths)."""
    with data.atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([key, "label", "prediction", "confidence", "label_name", "prediction_name"])
        for name, label, prediction, confidence in zip(names, labels, predictions, confidences):
            writer.writerow([name, int(label), int(prediction), f"{confidence:.6f}", classes[label],
                             classes[prediction]])


def plot_results(metrics, shown, labels, predictions, confidences, classes, out_dir, what):
    """The figures of every evaluation, of `what`: the confusion matrix, precision and recall per class,
    the most confident mistakes (`shown`: the images as uint8 pixels) and the reliability diagram."""
    c = metrics["calibration"]
    return [plot.plot_confusion_matrix(metrics["confusion_matrix"], classes, out_dir / "confusion_matrix.png", what),
            plot.plot_per_class(occurring(metrics["per_class"]), out_dir / "per_class.png", what),
            plot.plot_misclassified(shown, labels, predictions, confidences, classes, out_dir / "misclassified.png"),
            plot.plot_reliability(c["before"], c["after"], c["temperature"], out_dir / "reliability.png", what)]


def read_history(run_dir, checkpoint):
    """The run's per-epoch history: history.csv beside the checkpoint (complete) where it is this checkpoint's
    run's, else the checkpoint's own (up to its epoch)."""
    own = checkpoint.get("history", [])
    try:
        history = checkpoints.read_history(Path(run_dir) / "history.csv")
    except cli.RunError:
        return own

    def epochs(rows):
        return [(int(row["epoch"]), round(float(row["val_acc"]), 6)) for row in rows]

    return history if epochs(history[:len(own)]) == epochs(own) else own


def write_report(path, title, about, metrics, plots, sections="", plots_note=""):
    """report.md: `title`, a line `about` what was evaluated, the headline figures, a per-class table,
    any further `sections`, the calibration and the plots."""
    headline = (f"| images | accuracy | precision (macro) | recall (macro) | F1 (macro) |\n|---|---|---|---|---|\n"
                f"| {sum(c['support'] for c in metrics['per_class'])} | {metrics['accuracy']:.2%} | "
                f"{metrics['precision_macro']:.4f} | {metrics['recall_macro']:.4f} | {metrics['f1_macro']:.4f} |")
    rows = occurring(metrics["per_class"])
    table = "| class | precision | recall | F1 | support |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {c['name']} | {number(c['precision'])} | {number(c['recall'])} | {number(c['f1'])} | {c['support']} |"
        for c in rows)
    if undefined(rows):
        table += f"\n\n{UNDEFINED}."
    figures = "\n\n".join(f"![{p.stem}]({p.name})" for p in plots)
    text = (f"# {title}\n\n{about}\n\n{headline}\n\n## Per class\n\n{table}\n\n{sections}"
            f"## Calibration\n\n{calibration_table(metrics['calibration'])}\n\n## Plots\n\n{plots_note}{figures}\n")
    with data.atomic_write(path, "w") as f:
        f.write(text)


def logits_and_features(model, images, batch_size, precision, dataset):
    """Logits [N, 10] and penultimate-layer features [N, 100] (after the ReLU), on the CPU, in one pass."""
    features = []
    hook = model.L4.register_forward_hook(lambda module, inputs, output: features.append(F.relu(output).float()))
    try:
        logits = runtime.logits_of(model, images, precision, batch_size, dataset)
    finally:
        hook.remove()
    return logits.cpu(), torch.cat(features).cpu()


def fit_on_validation(model, checkpoint, data_dir, batch_size, precision, dataset):
    """(temperature, how it was fitted): on the run's own validation split, never on the test set."""
    config = checkpoint["config"]
    # The test split was just loaded, which verified all four files: no need to check them again.
    _, (val_x, val_y) = data.training_splits(data_dir, config["val_size"], config.get("subset"), dataset, fetch=False)
    logits = runtime.logits_of(model, val_x, precision, batch_size, dataset)
    temperature = fit_temperature(logits, val_y)
    if temperature is None:
        return None, (f"every one of the run's {len(val_y)} validation images is read right, so no temperature "
                      f"fits them best; the confidences stay as trained")
    return temperature, f"the run's validation split ({len(val_y)} images)"


def explain(model, test_images, labels, predictions, confidences, features, dataset, out_dir):
    """The figures of what the network learned: filters, Grad-CAM on mistakes, the feature map."""
    plots = [plot.plot_filters(model.L1[0].weight.detach().cpu(), out_dir / "filters.png")]
    worst, _ = plot.most_confident_mistakes(labels, predictions, confidences, 8)
    device = next(model.parameters()).device
    x = data.normalize(test_images[worst], dataset).to(device).contiguous(memory_format=runtime.memory_format(device))
    cams = [grad_cam(model, x, torch.as_tensor(targets[worst], device=device)).cpu().numpy()
            for targets in (predictions, labels)]
    plots.append(plot.plot_grad_cam(test_images[worst].numpy(), *cams, labels[worst], predictions[worst],
                                    confidences[worst], dataset.classes, out_dir / "grad_cam.png"))
    wrong = np.flatnonzero(labels != predictions)
    sample, points = feature_map(features, always=wrong)
    plots.append(plot.plot_feature_map(points, labels[sample], np.isin(sample, wrong), dataset.classes,
                                       out_dir / "feature_map.png"))
    return plots


def read_image_folder(folder, dataset):
    """(inputs [N, 1, 28, 28], labels [N], paths, problem lines) of an ImageFolder-layout folder, each
    image prepared as predict.py prepares it; an image that cannot be read becomes a problem line."""
    folder = Path(folder)
    if not folder.is_dir():
        raise cli.RunError(f"--images {folder} is not a folder; pass one with a subfolder per class (0, ..., 9)")
    names = {name: k for k, name in enumerate(dataset.classes)} | {str(k): k for k in range(len(dataset.classes))}
    subfolders = sorted(path.name for path in folder.iterdir() if path.is_dir())
    unknown = [name for name in subfolders if name not in names]
    if unknown or not subfolders:
        by_name = any(name != str(k) for k, name in enumerate(dataset.classes))
        raise cli.RunError(f"--images {folder}: expected a subfolder per class named 0 ... {len(dataset.classes) - 1}"
                           + (" or by the class's name (one with a / in it by its number)" if by_name else "")
                           + f", found {', '.join(unknown or subfolders) or 'none'}")
    from torchvision.datasets.folder import make_dataset  # after the checks: it takes a second

    samples = make_dataset(str(folder), {name: names[name] for name in subfolders}, allow_empty=True,
                           is_valid_file=images.is_picture_file)  # what predict.py reads, GIFs too
    if not samples:
        raise cli.RunError(f"--images {folder}: its class folders hold no image files (PNG, JPEG, ...)")
    inputs, paths, unreadable = images.to_inputs([path for path, _ in samples], dataset)
    problems = [f"{path}: {why}" for path, why in unreadable]
    if inputs is None:
        raise cli.RunError(f"--images {folder}: none of its {len(samples)} images could be read ({problems[0]}, ...)")
    label_of = dict(samples)
    return inputs, torch.tensor([label_of[path] for path in paths]), paths, problems


def unreadable_section(problems):
    """The report's list of the images that could not be read (nothing if all could)."""
    if not problems:
        return ""
    listed = "\n".join(f"- `{problem}`" for problem in problems)
    return f"## Files left out (they could not be read)\n\n{listed}\n\n"


GRAD_CAM_AND_FEATURES = (
    "Grad-CAM (Selvaraju et al. 2017) is taken on the last convolution's 14x14 output: it shows which parts of "
    "the image pushed the network toward a class, and is less noisy than raw input gradients at this size. The "
    "feature map is a seeded t-SNE of 2,000 test images, every mistake among them (or 1,000 mistakes, if there "
    "are more).\n\n")


def evaluate_folder(args, trained, results):
    """Evaluate --images: metrics, predictions, report and plots in external-<name>/ of the checkpoint's
    `results` folder, with the temperature fitted on the run's validation split, if one is."""
    path, checkpoint, dataset, temperature = trained.path, trained.checkpoint, trained.dataset, trained.temperature
    folder = Path(args.images).resolve()
    out_dir = checkpoints.external_dir(results, folder.name)
    data.remove_stale_temp_files(out_dir)  # of an evaluation killed there before
    earlier = checkpoints.images_folder(checkpoints.read_results(out_dir / "metrics.json"))
    if earlier not in (None, str(folder)):
        raise cli.RunError(f"{out_dir} holds the results of another folder called {folder.name}, {earlier}; "
                           f"remove it to put those of {folder} there, or give this folder a name of its own")
    inputs, labels, paths, problems = read_image_folder(args.images, dataset)
    logits = runtime.logits_of(trained.model, inputs, trained.precision, args.batch_size)
    # Whether the confidences, calibrated on the run's own validation split, can be trusted on these images too.
    metrics, predictions, confidences = score(logits, labels, temperature,
                                              "the run's validation split" if temperature else None, dataset.classes)
    name = folder.name
    metrics.update(dataset=f"{name} (external, {args.images})", folder=str(folder), checkpoint=str(path),
                   epoch=int(checkpoint["epoch"]), weights=checkpoints.weights_digest(checkpoint),
                   device=str(trained.device), precision=trained.precision, images=len(labels), unreadable=problems)
    print(f"{path} (epoch {metrics['epoch']}) on {len(labels)} images of {args.images}"
          + (f"; {len(problems)} could not be read, left out:" if problems else ""))
    print("".join(f"  {problem}\n" for problem in problems))
    print(format_report(metrics))

    write_predictions(out_dir / "predictions.csv", "path", paths, labels.numpy(), predictions, confidences,
                      dataset.classes)
    shown = (data.denormalize(inputs[:, 0], dataset).clamp(0, 1) * 255).round().byte().numpy()
    plots = plot_results(metrics, shown, labels.numpy(), predictions, confidences, dataset.classes, out_dir,
                         f"{name}, {len(labels)} images")
    write_report(out_dir / "report.md", f"{name}: external images",
                 f"Checkpoint `{path}` (epoch {metrics['epoch']}) on `{args.images}`, each image prepared as "
                 f"predict.py prepares it (the mistakes show the 28x28 input the network read).",
                 metrics, plots, sections=unreadable_section(problems))
    data.write_json(out_dir / "metrics.json", metrics)  # last: plot.py takes it for a whole evaluation
    print(f"\nwrote metrics.json, predictions.csv, report.md and {len(plots)} plots to {out_dir}")
    return metrics


def evaluate(args):
    """Evaluate the checkpoint on the test set, or on --images; returns the metrics."""
    trained = checkpoints.open_trained(cli.checkpoint_path(args), args.device, args.precision, args.dataset)
    out_dir = checkpoints.results_dir(trained.path)
    cli.writable_folder(out_dir, "the checkpoint's folder",
                        "evaluate.py writes its results beside the checkpoint: copy it to a folder you can write to")
    with kept_from_train_py(trained.path.parent):
        data.remove_stale_temp_files(out_dir)  # of an evaluation killed there before
        return (evaluate_folder if args.images else evaluate_test_set)(args, trained, out_dir)


@contextlib.contextmanager
def kept_from_train_py(run_dir):
    """Keep a train.py from starting in `run_dir` while the block runs: `--overwrite` would remove the files
    being written, and a new best.pt would not be the weights these results are of. A train.py at work
    there already is left to go on: evaluating its best.pt so far is what a user watching a run does."""
    try:
        folder = checkpoints.lock_folder(run_dir, shared=True)
    except BlockingIOError:
        folder = None
    try:
        yield
    finally:
        if folder is not None:
            os.close(folder)


def evaluate_test_set(args, trained, out_dir):
    """Evaluate on the test set: fit the temperature on the run's validation split, then write metrics,
    predictions, report and every plot to `out_dir`."""
    path, checkpoint, model, dataset = trained.path, trained.checkpoint, trained.model, trained.dataset
    device, precision = trained.device, trained.precision
    test_images, labels = data.load_split(args.data_dir, train=False, dataset=dataset)
    if device.type == "cpu":
        runtime.keep_freed_memory_mapped()

    started = time.perf_counter()
    logits, features = logits_and_features(model, test_images.to(device), args.batch_size, precision, dataset)
    seconds = time.perf_counter() - started
    temperature, fitted_on = fit_on_validation(model, checkpoint, args.data_dir, args.batch_size, precision, dataset)
    metrics, predictions, confidences = score(logits, labels, temperature, fitted_on, dataset.classes)
    metrics.update(dataset=dataset.folder, checkpoint=str(path), epoch=int(checkpoint["epoch"]),
                   weights=checkpoints.weights_digest(checkpoint), device=str(device), precision=precision,
                   test_images=len(labels), model_seconds=round(seconds, 3))
    print(f"{path} (epoch {metrics['epoch']}) on {len(labels)} test images, "
          f"{seconds:.2f}s of model time on {device} in {precision}\n")
    print(format_report(metrics))

    checkpoints.save_temperature(path, checkpoint, temperature, fitted_on)
    labels = labels.numpy()
    write_predictions(out_dir / "predictions.csv", "index", range(len(labels)), labels, predictions, confidences,
                      dataset.classes)
    plots = plot.plot_history(read_history(path.parent, checkpoint), out_dir, metrics["accuracy"],
                              f"{path.name}, epoch {metrics['epoch']}", run=path.parent.resolve().name)
    plots += plot_results(metrics, test_images.numpy(), labels, predictions, confidences, dataset.classes, out_dir,
                          f"test set, {len(labels)} images")
    plots += explain(model, test_images, labels, predictions, confidences, features.numpy(), dataset, out_dir)
    write_report(out_dir / "report.md", f"{dataset.folder} test-set report",
                 f"Checkpoint `{path}` (epoch {metrics['epoch']}), evaluated on the {len(labels)} test images "
                 f"on {device} in {precision}.",
                 metrics, plots, plots_note=GRAD_CAM_AND_FEATURES)
    data.write_json(out_dir / "metrics.json", metrics)  # last: plot.py takes it for a whole evaluation
    print(f"\nwrote metrics.json, predictions.csv, temperature.json, report.md and {len(plots)} plots to {out_dir}")
    return metrics


def main(argv=None):
    args = parse_args(argv)
    try:
        evaluate(args)
    except (cli.RunError, data.DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    cli.run(main)
