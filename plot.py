"""Every figure of the repo, drawn with matplotlib's Agg backend (no screen needed) as 150-dpi PNGs;
and, run as a script, the comparison of training runs.

    python plot.py runs/*                          # every run: curves.png and comparison.md in runs/comparison
    python plot.py runs/seed0 runs/seed1 --out docs

train.py draws each run's curves; evaluate.py redraws them with the test accuracy marked and adds the
confusion matrix, per-class precision and recall, the worst mistakes, the reliability diagram and what
the network learned. The comparison's table names each run's options that differ from the others' (its
curves name the run's folder), and groups runs that differ only in --seed into one row (mean ± standard
deviation).
"""

import collections
import dataclasses
import json
import math
import statistics
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import checkpoints  # noqa: E402
import cli  # noqa: E402
import data  # noqa: E402

DPI = 150
# Okabe-Ito: distinguishable with every common kind of colour blindness.
BLUE, ORANGE, GREEN = "#0072B2", "#E69F00", "#009E73"


def save(fig, path):
    """Save a figure atomically (a kill mid-write leaves the previous PNG) and close it."""
    path = Path(path)
    with data.atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _curve(history, key, ylabel, title, test_value=None, tested="", percent=False):
    epochs = [int(row["epoch"]) for row in history]
    scale = 100 if percent else 1
    fig, ax = plt.subplots(figsize=(6, 4))
    train = [float(r[f"train_{key}"]) * scale for r in history]
    val = [float(r[f"val_{key}"]) * scale for r in history]
    ax.plot(epochs, train, "o-", color=BLUE, label="train (mean over the epoch)")
    ax.plot(epochs, val, "s-", color=ORANGE, label="validation")
    if test_value is not None:
        ax.axhline(test_value * scale, color=GREEN, linestyle="--",
                   label=f"test ({tested}): {test_value * scale:.2f}{'%' if percent else ''}")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs are whole numbers, even one
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_history(history, out_dir, test_acc=None, tested="best.pt", run=None):
    """accuracy.png and loss.png of the run named `run` (its folder's name): train and validation curves per
    epoch, and the test accuracy of the checkpoint `tested`, if known."""
    out_dir = Path(out_dir)
    of = f" ({run})" if run else ""  # figures of several runs side by side say whose each is
    accuracy = _curve(history, "acc", "accuracy (%)", f"Accuracy while training{of}", test_acc, tested, percent=True)
    loss = _curve(history, "loss", "cross-entropy loss", f"Loss while training{of}")
    return [save(accuracy, out_dir / "accuracy.png"), save(loss, out_dir / "loss.png")]


def _named(classes):
    """Whether the classes go by names (Fashion-MNIST's), wider on a figure than MNIST's digits."""
    return max(map(len, classes)) > 2


def _class_ticks(ax, classes, axes="xy"):
    """Class names on the axes; long names (Fashion-MNIST's) slanted so that they do not collide."""
    slant = _named(classes)
    if "x" in axes:
        ax.set_xticks(range(len(classes)), classes, rotation=40 if slant else 0, ha="right" if slant else "center")
    if "y" in axes:
        ax.set_yticks(range(len(classes)), classes)


def plot_confusion_matrix(matrix, classes, path, what="test set"):
    """Counts in every cell, rows true and columns predicted, of `what`; colour on a compressed scale so
    that the few mistakes show beside the thousand-strong diagonal."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(6.5 + 0.1 * max(map(len, classes)), 5.5))
    image = ax.imshow(matrix, cmap="Blues", norm=PowerNorm(gamma=0.3, vmin=0, vmax=max(1, matrix.max())))
    threshold = matrix.max() * 0.1
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > threshold else "black")
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix ({what})")
    _class_ticks(ax, classes)
    fig.colorbar(image, ax=ax, label="images").ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return save(fig, path)


def plot_per_class(per_class, path, what="test set"):
    """Precision and recall per class of `what` as points, on an axis zoomed in so the differences are
    visible (points, not bars: a bar's length from a cut baseline would overstate them; an undefined
    figure, None, has no point)."""
    classes = [c["name"] for c in per_class]
    digits = np.arange(len(per_class))
    precision = np.array([c["precision"] for c in per_class], dtype=float) * 100
    recall = np.array([c["recall"] for c in per_class], dtype=float) * 100
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(digits - 0.12, precision, "o", color=BLUE, markersize=7, label="precision")
    ax.plot(digits + 0.12, recall, "s", color=ORANGE, markersize=6, label="recall")
    low = np.nanmin(np.concatenate([precision, recall]))
    bottom = max(0, np.floor(low - (100 - low) * 0.5)) if low < 100 else 90
    ax.set_ylim(bottom, 100 + (100 - bottom) * 0.04)  # room for a point at 100%
    ax.set(xlabel="class", ylabel="%" + (" (axis zoomed)" if bottom > 0 else ""),
           title=f"Precision and recall per class ({what})")
    _class_ticks(ax, classes, "x")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return save(fig, path)


def most_confident_mistakes(labels, predictions, confidences, count):
    """Indices of up to `count` wrong predictions, the most confident first; and how many were wrong."""
    wrong = np.flatnonzero(np.asarray(labels) != np.asarray(predictions))
    return wrong[np.argsort(-np.asarray(confidences)[wrong], kind="stable")][:count], len(wrong)


def plot_misclassified(images, labels, predictions, confidences, classes, path, count=24, columns=8):
    """The most confident mistakes, each titled 'true → predicted (confidence)'."""
    worst, wrong = most_confident_mistakes(labels, predictions, confidences, count)
    rows = max(1, int(np.ceil(len(worst) / columns)))
    named = _named(classes)  # "Ankle boot → Sandal" on one line is wider than its picture
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * (1.8 if named else 1.5)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, worst):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        arrow = "\n→ " if named else " → "
        ax.set_title(f"{classes[labels[i]]}{arrow}{classes[predictions[i]]}\n({confidences[i]:.0%})", fontsize=8)
    title = f"Most confident mistakes: {len(worst)} of {wrong}" if wrong else "No mistakes"
    fig.suptitle(title + " (true → predicted)")
    return save(fig, path)


def plot_reliability(before, after, temperature, path, what="test set"):
    """Reliability diagrams of `what` before and after temperature scaling (`after` None: before only):
    accuracy against confidence per bin (a calibrated model sits on the diagonal), with how many images
    fall in each bin below."""
    panels = [("softmax as trained", before)] + ([(f"temperature {temperature:.2f}", after)] if after else [])
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 6.4), sharex=True, sharey="row",
                             squeeze=False, gridspec_kw={"height_ratios": [3, 1]})
    for column, (name, result) in enumerate(panels):
        bins = result["bins"]
        count = len(bins["count"])
        centres = (np.arange(count) + 0.5) / count
        accuracy = np.nan_to_num(np.array(bins["accuracy"], dtype=float))
        confidence = np.array(bins["confidence"], dtype=float)
        top, bottom = axes[0, column], axes[1, column]
        top.bar(centres, accuracy, width=1 / count, color=BLUE, edgecolor="white", label="accuracy")
        gap = np.nan_to_num(confidence - accuracy)
        top.bar(centres, np.abs(gap), bottom=np.minimum(accuracy, accuracy + gap), width=1 / count,
                facecolor="none", edgecolor=ORANGE, hatch="///", label="gap to the mean confidence")
        top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        top.set(title=f"{name}\nECE {result['ece']:.2%}, NLL {result['nll']:.4f}", xlim=(0, 1), ylim=(0, 1))
        bottom.bar(centres, bins["count"], width=1 / count, color="grey")
        bottom.set(yscale="log", xlabel="confidence (top probability)")
    axes[0, 0].set_ylabel("accuracy in bin")
    axes[1, 0].set_ylabel("images")
    # One legend above the panels, where it hides no bar.
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.95), ncol=3,
               fontsize=8, frameon=False)
    fig.suptitle(f"Reliability diagram ({what}, {len(before['bins']['count'])} bins)")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return save(fig, path)


def plot_grad_cam(images, cams_predicted, cams_true, labels, predictions, confidences, classes, path):
    """Each mistake beside two Grad-CAM maps: where the network found evidence for what it said, and
    for what the digit really is."""
    rows = max(1, len(images))
    fig, axes = plt.subplots(rows, 3, figsize=(5.4, 1.8 * rows + 0.6), squeeze=False)  # 0.6 inch: the scale
    for ax in axes.flat:
        ax.axis("off")
    for row, (image, cam_p, cam_t, label, prediction, confidence) in enumerate(
            zip(images, cams_predicted, cams_true, labels, predictions, confidences)):
        axes[row, 0].imshow(image, cmap="gray_r", vmin=0, vmax=255)
        axes[row, 0].set_title(f"{classes[label]} read as {classes[prediction]} ({confidence:.0%})", fontsize=8)
        for ax, cam, digit in ((axes[row, 1], cam_p, prediction), (axes[row, 2], cam_t, label)):
            heat = plt.get_cmap("inferno")(np.asarray(cam))
            heat[..., 3] = 0.85 * np.asarray(cam)  # no evidence, no colour: the digit shows through
            ax.imshow(image, cmap="gray_r", vmin=0, vmax=400)  # the digit in grey, under the heat
            ax.imshow(heat)
            ax.set_title(f"evidence for {classes[digit]}", fontsize=8)
    fig.suptitle("Grad-CAM on the most confident mistakes")
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1))
    scale = fig.add_axes((0.42, 0.36 / height, 0.5, 0.09 / height))
    fig.colorbar(ScalarMappable(cmap="inferno"), cax=scale, orientation="horizontal")
    scale.set_xlabel("evidence, as a share of the map's strongest", fontsize=7)
    scale.tick_params(labelsize=7)
    return save(fig, path)


def plot_feature_map(points, labels, wrong, classes, path):
    """A 2-D t-SNE map of the penultimate-layer features, coloured by the true class; mistakes marked."""
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    colours = plt.get_cmap("tab10")
    for k, name in enumerate(classes):
        mine = labels == k
        ax.scatter(points[mine, 0], points[mine, 1], s=5, color=colours(k), label=name, alpha=0.7)
        if mine.any():
            ax.text(*np.median(points[mine], axis=0), name, fontsize=14 if len(name) < 3 else 9, weight="bold",
                    ha="center", va="center",
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.7, "linewidth": 0})
    ax.scatter(points[wrong, 0], points[wrong, 1], s=40, facecolors="none", edgecolors="black", linewidths=1,
               label="misread")
    ax.set(title=f"What the network sees: t-SNE of its 100 penultimate features\n({len(points)} test images, "
                 f"{wrong.sum()} of them misread)", xticks=[], yticks=[])
    ax.title.set_fontsize(10)
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), markerscale=2, frameon=False, title="true class")
    return save(fig, path)


def plot_filters(weights, path, columns=8):
    """The first convolution's 3x3 filters, red positive and blue negative on one shared scale."""
    weights = np.asarray(weights)[:, 0]
    rows = int(np.ceil(len(weights) / columns))
    limit = np.abs(weights).max()
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.95), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, kernel in zip(axes.flat, weights):
        image = ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    fig.suptitle(f"The {len(weights)} first-layer filters (3x3)")
    return save(fig, path)


def plot_preprocessing(examples, path):
    """A row per picture: how images.digit_stages turns it into MNIST's form, stage by stage."""
    columns = [("picture", "the picture"), ("ink", "paper removed"), ("digit", "the digit found"),
               ("cropped", "cropped"), ("mnist", "28x28, MNIST's stroke")]
    fig, axes = plt.subplots(len(examples), len(columns), figsize=(len(columns) * 1.7, len(examples) * 1.8),
                             squeeze=False)
    for row, (title, stages) in enumerate(examples):
        for ax, (key, name) in zip(axes[row], columns):
            image = stages[key] / max(float(stages[key].max()), 1e-6) if key == "ink" else stages[key]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
        axes[row, 0].set_ylabel(title, fontsize=8)
    fig.suptitle("From a photo to MNIST's form (images.py)")
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------------------------------------
# Comparing runs

# config.json keys that say where, how or with what a run was made, not what it is.
NOT_THE_RECIPE = cli.RUNTIME_OPTIONS | {"device_used", "torch", "torchvision", "python", "code",
                                        "resumed_with_code", "command", "precision", "precision_reason"}


@dataclasses.dataclass
class Run:
    folder: Path
    recipe: dict
    history: list
    test_acc: float | None
    external: dict  # images folder (its path, or its name if evaluate.py did not record one) -> accuracy
    note: str | None = None  # why its evaluation is not shown, where it has one

    @property
    def finished(self):
        """Whether the run went through its epochs, or stopped at its --target-acc: if not, it is no sample."""
        return (len(self.history) >= self.recipe["epochs"]
                or checkpoints.reached_target(self.history, self.recipe.get("target_acc")))


def why_not_shown(folder, metrics, best_weights):
    """Why the test accuracy in `folder`'s metrics.json is not shown (None if it is, or there is none)."""
    if not metrics or checkpoints.results_are_of(metrics, best_weights):
        return None
    if best_weights is None:
        return f"{folder}: its best.pt is gone (or does not load), so its metrics.json is of nothing there"
    again = f"`python evaluate.py --run-dir {cli.quoted(folder)}` gives its test accuracy"
    if metrics.get("weights") is None:
        return f"{folder}: its metrics.json is from an evaluate.py that did not say whose weights it was of; {again}"
    return f"{folder}: its metrics.json is of other weights than its best.pt's now; {again}"


def evaluated_accuracy(metrics, best_weights):
    """The accuracy in evaluate.py's `metrics` (from checkpoints.read_results) if it is that of the weights in
    the run's best.pt now (`best_weights`, their checkpoints.weights_digest); None if there is none, or it is of
    other weights: last.pt's, an earlier best.pt's (evaluated while the run went on), a run since replaced."""
    if not checkpoints.results_are_of(metrics, best_weights):
        return None
    try:
        return float(metrics["accuracy"])
    except (KeyError, TypeError, ValueError):
        return None


def set_names(sets):
    """{images folder: its column's name}: the folder's own name, or its whole path where two differ only there."""
    names = collections.Counter(Path(folder).name for folder in sets)
    return {folder: Path(folder).name if names[Path(folder).name] == 1 else folder for folder in sets}


def read_run(folder):
    """A run folder of train.py (and evaluate.py, if it ran); RunError saying what is wrong with it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise cli.RunError(f"{folder}: " + ("a file, not a run folder" if folder.exists() else "no such folder"))
    if not (folder / "config.json").is_file():
        raise cli.RunError(f"{folder}: no config.json, so not a run folder of train.py")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise cli.RunError(f"{folder}: config.json cannot be read (half-written?)") from None
    if not isinstance(config, dict) or not {"epochs", "seed"} <= set(config):
        raise cli.RunError(f"{folder}: config.json is from another version of train.py")
    history = checkpoints.read_history(folder / "history.csv")
    if not history:
        raise cli.RunError(f"{folder}: no completed epoch (stopped before its first one ended?)")
    best = checkpoints.digest_of(folder / "best.pt")
    evaluated = checkpoints.read_results(folder / "metrics.json")
    test_acc = evaluated_accuracy(evaluated, best)
    external = {}
    for name, path in checkpoints.external_results(folder).items():
        metrics = checkpoints.read_results(path)
        accuracy = evaluated_accuracy(metrics, best)
        if accuracy is not None:
            external[checkpoints.images_folder(metrics) or name] = accuracy
    recipe = {**cli.ADDED_LATER, **{key: value for key, value in config.items() if key not in NOT_THE_RECIPE}}
    # Before --precision, the forward pass ran in bf16 on CUDA and in fp32 everywhere else.
    recipe.setdefault("precision_used", "bf16" if str(config.get("device_used", "")).startswith("cuda") else "fp32")
    return Run(folder, recipe, history, test_acc, external, why_not_shown(folder, evaluated, best))


def differing_options(runs):
    """The recipe options whose values are not the same in every run, in a stable order."""
    keys = sorted({key for run in runs for key in run.recipe})
    return [key for key in keys if len({json.dumps(run.recipe.get(key, "not recorded")) for run in runs}) > 1]


# train.py's options whose config.json name is not the option's own.
OPTION_NAMES = {"degrees": "rotation", "precision_used": "precision"}


def describe(recipe, keys):
    """The options `keys` as train.py's command line names them (an option not given: its default)."""
    def option(key):
        name = OPTION_NAMES.get(key, key).replace("_", "-")
        if key not in recipe:  # a run from before the option existed
            return f"{name} not recorded"
        if key == "augment":
            return "augmented" if recipe[key] else "no-augment"
        return f"{name}={'default' if recipe[key] is None else recipe[key]}"
    return ", ".join(option(key) for key in keys)


def mean_and_std(values):
    """'mean ± sample standard deviation' of fractions, in percent."""
    if len(values) == 1:
        return f"{values[0]:.2%}"
    return f"{statistics.mean(values):.2%} ± {statistics.stdev(values) * 100:.2f}"


def run_row(run, keys, sets):
    return {"run": run.folder.name, "options": describe(run.recipe, keys) or "(the same)",
            "epochs": len(run.history) if run.finished else f"{len(run.history)} of {run.recipe['epochs']}",
            "best val acc": f"{max(r['val_acc'] for r in run.history):.2%}",
            "training time": f"{sum(r['seconds'] for r in run.history):.0f} s",
            "test acc": "" if run.test_acc is None else f"{run.test_acc:.2%}",
            **{f"{name} acc": f"{run.external[folder]:.2%}" if folder in run.external else ""
               for folder, name in sets.items()}}


def seed_groups(runs):
    """Finished runs that differ in nothing but --seed, as lists of two seeds or more, in the order first seen.
    A run of a seed its group already has (the same run copied, or run again) is not a sample of its own: the
    first of them stands for it."""
    groups = collections.defaultdict(dict)
    for run in runs:
        if not run.finished:
            continue
        recipe = json.dumps({k: v for k, v in run.recipe.items() if k != "seed"}, sort_keys=True)
        groups[recipe].setdefault(run.recipe["seed"], run)
    return [list(group.values()) for group in groups.values() if len(group) > 1]


def repeats(runs):
    """(run, the earlier run it repeats) for each run whose recipe and seed an earlier one has."""
    first = {}
    return [(run, earlier) for run in runs
            if (earlier := first.setdefault(json.dumps(run.recipe, sort_keys=True), run)) is not run]


def measured(values, n):
    """mean ± std of the values some runs of a group of `n` have, saying how many when not all do."""
    if not values:
        return ""
    return mean_and_std(values) + (f" (n={len(values)})" if len(values) != n else "")


def group_row(group, keys, sets):
    return {"run": f"{len(group)} seeds ({', '.join(str(run.recipe['seed']) for run in group)})",
            "options": describe(group[0].recipe, [k for k in keys if k != "seed"]) or "(the same)",
            "epochs": f"{statistics.mean(len(run.history) for run in group):.3g}",
            "best val acc": mean_and_std([max(r["val_acc"] for r in run.history) for run in group]),
            "training time": f"{statistics.mean(sum(r['seconds'] for r in run.history) for run in group):.0f} s",
            "test acc": measured([run.test_acc for run in group if run.test_acc is not None], len(group)),
            **{f"{name} acc": measured([run.external[folder] for run in group if folder in run.external], len(group))
               for folder, name in sets.items()}}


def markdown_table(rows):
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows])


def comparison_markdown(runs):
    """comparison.md: a row per run, then a row per group of runs that differ only in the seed."""
    keys = differing_options(runs)
    sets = set_names(sorted({folder for run in runs for folder in run.external}))
    text = (f"# Comparison of {len(runs)} run{'s' if len(runs) > 1 else ''}\n\n"
            "Options shown are those that differ between the runs; "
            f"training time is the sum of the epochs' seconds; test accuracy is evaluate.py's, of best.pt"
            + (f", and so are the accuracies on {', '.join(sets.values())} (evaluate.py --images)" if sets else "")
            + ".\n\n" + markdown_table([run_row(run, keys, sets) for run in runs]) + "\n")
    groups = seed_groups(runs)
    if groups:
        again = "".join(f" {run.folder.name} repeats {earlier.folder.name} (the same recipe and seed), so it is "
                        "counted once." for run, earlier in repeats(runs))
        again += "".join(f" {run.folder.name} stopped after {len(run.history)} of its {run.recipe['epochs']} "
                         "epochs, so it is in no group." for run in runs if not run.finished)
        text += ("\n## Runs that differ only in the seed\n\nMean ± sample standard deviation, in percent."
                 f"{again}\n\n" + markdown_table([group_row(group, keys, sets) for group in groups]) + "\n")
    return text


def plot_comparison(runs, path):
    """Validation accuracy and loss of every run against the epoch and against wall-clock seconds."""
    keys = differing_options(runs)
    recipes = list(dict.fromkeys(describe(run.recipe, [k for k in keys if k != "seed"]) for run in runs))
    palette = [BLUE, ORANGE, GREEN, "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000"]
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey="row")
    seen = collections.Counter()
    for run in runs:
        recipe = describe(run.recipe, [k for k in keys if k != "seed"])
        colour = palette[recipes.index(recipe) % len(palette)]
        style = styles[seen[recipe] % len(styles)]
        seen[recipe] += 1
        label = run.folder.name  # as comparison.md's rows name it; its options are there
        epochs = [r["epoch"] for r in run.history]
        seconds = np.cumsum([r["seconds"] for r in run.history])
        for row, key, scale in ((0, "val_acc", 100), (1, "val_loss", 1)):
            values = [r[key] * scale for r in run.history]
            axes[row, 0].plot(epochs, values, style, marker="o", markersize=3, color=colour, label=label)
            axes[row, 1].plot(seconds, values, style, marker="o", markersize=3, color=colour)
    for column, xlabel in enumerate(["epoch", "training seconds"]):
        axes[0, column].set(ylabel="validation accuracy (%)", title=f"Validation accuracy by {xlabel}")
        axes[1, column].set(ylabel="validation loss", xlabel=xlabel, title=f"Validation loss by {xlabel}")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=min(4, len(runs)),
               fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0),
               title="run (a colour per recipe; the options of each are in comparison.md)", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.035 + 0.02 * math.ceil(len(runs) / 4), 1, 1))  # the legend below, apart
    return save(fig, path)


def main(argv=None):
    p = cli.Parser(__doc__)
    p.add_argument("runs", nargs="+", help="run folders of train.py (shell globs such as runs/* work)")
    p.add_argument("--out", default="runs/comparison",
                   help="where curves.png and comparison.md go (default: runs/comparison)")
    args = p.parse_args(argv)
    if (Path(args.out) / "config.json").exists():
        sys.exit(f"error: --out {args.out} is a run folder of train.py; the comparison goes to a folder of its own "
                 "(default: runs/comparison)")
    runs, seen = [], {Path(args.out).resolve()}  # runs/* takes in the output folder itself
    for folder in args.runs:
        where = Path(folder).resolve()
        if where in seen:  # also a run given twice, say runs/a and runs/a/
            continue
        seen.add(where)
        try:
            runs.append(read_run(folder))
        except cli.RunError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        if runs[-1].note:
            print(f"note: {runs[-1].note}", file=sys.stderr)
    if not runs:
        sys.exit("error: no run to compare; pass run folders written by train.py")
    text = comparison_markdown(runs)
    out = Path(args.out)
    try:
        cli.writable_folder(out, "--out")
        with data.atomic_write(out / "comparison.md", "w") as f:
            f.write(text)
        plot_comparison(runs, out / "curves.png")
    except (cli.RunError, data.DataError) as e:
        sys.exit(f"error: {e}")
    print(text)
    print(f"wrote comparison.md and curves.png to {out}")


if __name__ == "__main__":
    cli.run(main)
