"""Human-readable evaluation output: Markdown classification reports and confusion-matrix plots."""

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mtlcc_tf import metrics

# Figures are built as bare `Figure`s on an Agg canvas instead of through pyplot: no global
# backend switch, no figure registry to leak into, and safe to call from any thread or process.
_CELL_INCHES = 0.55
_MIN_PANEL_INCHES = 5.0
_DPI = 100


def _escape(name: str) -> str:
    return name.replace("|", r"\|")


def classification_report_markdown(
    summary: Mapping[str, Any], class_names: Sequence[str], digits: int = 3
) -> str:
    """A Markdown version of sklearn's classification report, plus IoU, OA, kappa and mIoU.

    Macro averages are over active classes (present or predicted) and weighted averages are
    support-weighted, matching `metrics.summarize`'s `macro_f1`, `miou` and `weighted_f1`.

    Args:
      summary: the output of `metrics.summarize`.
      class_names: rows to print, in this order; each must be a key of `summary["per_class"]`.
      digits: decimals for the ratios.

    Returns:
      Markdown text: a per-class table followed by a table of overall figures.

    Raises:
      KeyError: if a class name is missing from the summary.
    """
    per_class = summary["per_class"]
    missing = [name for name in class_names if name not in per_class]
    if missing:
        raise KeyError(f"classes missing from the summary: {missing}")

    def ratio(value: float) -> str:
        return f"{value:.{digits}f}"

    def row(label: str, values: Mapping[str, float], support: int) -> str:
        cells = [ratio(values[key]) for key in ("precision", "recall", "f1", "iou")]
        return f"| {label} | " + " | ".join(cells) + f" | {support:,} |"

    lines = [
        "| class | precision | recall | f1 | IoU | support |",
        "|:---|---:|---:|---:|---:|---:|",
    ]
    inactive = []
    for name in class_names:
        entry = per_class[name]
        label = _escape(name)
        if entry["support"] == 0 and entry.get("predicted", 0) == 0:
            inactive.append(name)
            label += " *"
        lines.append(row(label, entry, entry["support"]))
    averages = metrics.class_averages({name: per_class[name] for name in class_names})
    total_support = sum(per_class[name]["support"] for name in class_names)
    lines.append(row("**macro avg**", averages["macro"], total_support))
    lines.append(row("**weighted avg**", averages["weighted"], total_support))
    lines += [
        "",
        "| overall accuracy | kappa | mIoU | macro f1 | weighted f1 | pixels |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {ratio(summary['overall_accuracy'])} | {ratio(summary['kappa'])} "
        f"| {ratio(summary['miou'])} | {ratio(summary['macro_f1'])} "
        f"| {ratio(summary['weighted_f1'])} | {summary['num_pixels']:,} |",
    ]
    if inactive:
        lines += [
            "",
            "\\* neither present nor predicted; left out of the macro averages and mIoU.",
        ]
    return "\n".join(lines) + "\n"


def _format_count(count: float) -> str:
    """Short cell label for a pixel count: 950, 12.3k, 4.56M."""
    if count < 1e4:
        return f"{count:.0f}"
    if count < 1e6:
        return f"{count / 1e3:.1f}k"
    return f"{count / 1e6:.2f}M"


def _row_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows divided by their sums (recall on the diagonal); rows without pixels stay 0."""
    row_sums = matrix.sum(axis=1, keepdims=True)
    out = np.zeros_like(matrix)
    np.divide(matrix, row_sums, out=out, where=row_sums > 0)
    return out


def _draw_confusion(
    figure: Figure, axes: Any, matrix: np.ndarray, class_names: Sequence[str], normalize: bool
) -> None:
    """Draws one confusion-matrix panel (heat map, cell labels, colour bar) on `axes`."""
    num_classes = matrix.shape[0]
    values = _row_normalize(matrix) if normalize else matrix
    image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = np.arange(num_classes)
    font_size = float(np.clip(140 / num_classes, 5, 10))
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, labels=class_names)
    axes.tick_params(labelsize=font_size + 1)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("row-normalised (recall on the diagonal)" if normalize else "pixel counts")
    # Dark text on light cells and vice versa, relative to this panel's colour scale.
    threshold = (1.0 if normalize else max(values.max(), 1.0)) / 2
    for true_index in range(num_classes):
        for predicted_index in range(num_classes):
            value = values[true_index, predicted_index]
            # Blank cells that would read 0 (or 0.00) keep a 17-class matrix readable.
            if value == 0 or (normalize and value < 0.005):
                continue
            text = f"{value:.2f}" if normalize else _format_count(value)
            axes.text(
                predicted_index,
                true_index,
                text,
                ha="center",
                va="center",
                fontsize=font_size,
                color="white" if value > threshold else "black",
            )


def _validated(confusion: Any, class_names: Sequence[str]) -> np.ndarray:
    matrix = np.asarray(confusion, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {matrix.shape}.")
    if len(class_names) != matrix.shape[0]:
        raise ValueError(f"got {len(class_names)} class names for a {matrix.shape} matrix.")
    return matrix


def _new_figure(num_classes: int, num_panels: int) -> Figure:
    panel = max(_MIN_PANEL_INCHES, _CELL_INCHES * num_classes + 2.5)
    figure = Figure(figsize=(panel * num_panels + 0.8 * num_panels, panel), dpi=_DPI)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Writes `figure` as PNG; goes through tf.io.gfile so `gs://` model dirs work too."""
    path = os.fspath(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(path, "wb") as output:
        output.write(buffer.getvalue())


def plot_confusion_matrix(
    confusion: Any,
    class_names: Sequence[str],
    path: str | os.PathLike[str] | None = None,
    normalize: bool = False,
) -> Figure:
    """Plots a confusion matrix (rows true, columns predicted) as counts or row-normalised.

    Args:
      confusion: `[K, K]` counts.
      class_names: K names in class-index order.
      path: if given, the figure is also written there as PNG.
      normalize: divide each row by its support, so the diagonal shows per-class recall.

    Returns:
      The matplotlib `Figure` (on an Agg canvas; no pyplot state is touched).
    """
    matrix = _validated(confusion, class_names)
    figure = _new_figure(matrix.shape[0], num_panels=1)
    _draw_confusion(figure, figure.add_subplot(1, 1, 1), matrix, class_names, normalize)
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)
    return figure


def confusion_matrix_figures_png(
    confusion: Any, class_names: Sequence[str], path: str | os.PathLike[str]
) -> Figure:
    """Writes one PNG with two panels side by side: pixel counts and row-normalised.

    Args:
      confusion: `[K, K]` counts, rows true, columns predicted.
      class_names: K names in class-index order.
      path: output PNG path (local or any tf.io.gfile filesystem); parent folders are created.

    Returns:
      The two-panel `Figure`, e.g. for `figure_to_image_tensor`.
    """
    matrix = _validated(confusion, class_names)
    figure = _new_figure(matrix.shape[0], num_panels=2)
    for index, normalize in enumerate((False, True)):
        axes = figure.add_subplot(1, 2, index + 1)
        _draw_confusion(figure, axes, matrix, class_names, normalize)
    figure.tight_layout()
    save_figure(figure, path)
    return figure


def figure_to_image_tensor(figure: Figure) -> tf.Tensor:
    """Renders a figure to a `uint8 [1, height, width, 4]` RGBA tensor for `tf.summary.image`."""
    canvas = figure.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        # A pyplot figure on an interactive backend: re-host it on Agg to rasterise it.
        canvas = FigureCanvasAgg(figure)
    canvas.draw()
    # Copy: the buffer is a view into the canvas' memory, which the next draw overwrites.
    pixels = np.array(canvas.buffer_rgba(), dtype=np.uint8)
    return tf.convert_to_tensor(pixels[np.newaxis])
