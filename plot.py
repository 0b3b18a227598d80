"""Every figure of the repo, drawn with matplotlib's Agg backend (no screen needed) as 150-dpi PNGs.

train.py draws the training curves; evaluate.py redraws them with the test accuracy marked and adds
the confusion matrix, per-class precision and recall, and the worst mistakes.
"""

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

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


def _curve(history, key, ylabel, title, test_value=None, percent=False):
    epochs = [int(row["epoch"]) for row in history]
    scale = 100 if percent else 1
    fig, ax = plt.subplots(figsize=(6, 4))
    train = [float(r[f"train_{key}"]) * scale for r in history]
    val = [float(r[f"val_{key}"]) * scale for r in history]
    ax.plot(epochs, train, "o-", color=BLUE, label="train (mean over the epoch)")
    ax.plot(epochs, val, "s-", color=ORANGE, label="validation")
    if test_value is not None:
        ax.axhline(test_value * scale, color=GREEN, linestyle="--",
                   label=f"test (best checkpoint): {test_value * scale:.2f}{'%' if percent else ''}")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_history(history, out_dir, test_acc=None):
    """accuracy.png and loss.png: train and validation curves per epoch, the test accuracy if known."""
    out_dir = Path(out_dir)
    accuracy = _curve(history, "acc", "accuracy (%)", "Accuracy while training", test_acc, percent=True)
    loss = _curve(history, "loss", "cross-entropy loss", "Loss while training")
    return [save(accuracy, out_dir / "accuracy.png"), save(loss, out_dir / "loss.png")]


def plot_confusion_matrix(matrix, path):
    """Counts in every cell, rows true and columns predicted; colour on a compressed scale so that
    the few mistakes show beside the thousand-strong diagonal."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(matrix, cmap="Blues", norm=PowerNorm(gamma=0.3, vmin=0, vmax=max(1, matrix.max())))
    threshold = matrix.max() * 0.1
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > threshold else "black")
    ax.set(xlabel="predicted digit", ylabel="true digit", title="Confusion matrix (test set)",
           xticks=range(10), yticks=range(10))
    fig.colorbar(image, ax=ax, label="images")
    return save(fig, path)


def plot_per_class(per_class, path):
    """Precision and recall per digit as grouped bars, zoomed in so the differences are visible."""
    digits = np.array([c["digit"] for c in per_class])
    precision = np.array([c["precision"] for c in per_class]) * 100
    recall = np.array([c["recall"] for c in per_class]) * 100
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(digits - 0.2, precision, width=0.4, color=BLUE, label="precision")
    ax.bar(digits + 0.2, recall, width=0.4, color=ORANGE, label="recall", hatch="//", edgecolor="white")
    low = min(precision.min(), recall.min())
    ax.set_ylim(max(0, np.floor(low - (100 - low) * 0.5)), 100)
    ax.set(xlabel="digit", ylabel="% (axis zoomed)", title="Precision and recall per digit (test set)",
           xticks=digits)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    return save(fig, path)


def plot_misclassified(images, labels, predictions, confidences, path, count=24, columns=8):
    """The most confident mistakes, each titled 'true → predicted (confidence)'."""
    wrong = np.flatnonzero(np.asarray(labels) != np.asarray(predictions))
    worst = wrong[np.argsort(-np.asarray(confidences)[wrong])][:count]
    rows = max(1, int(np.ceil(len(worst) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, worst):
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"{labels[i]} → {predictions[i]} ({confidences[i]:.0%})", fontsize=9)
    title = f"Most confident mistakes: {len(worst)} of {len(wrong)}" if len(wrong) else "No mistakes"
    fig.suptitle(title + " (true → predicted)")
    return save(fig, path)
