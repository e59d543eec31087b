"""Tests for mtlcc_tf.reports: Markdown report numbers, PNG output and image tensors."""

import os
import re
import struct

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlcc_tf import metrics, reports  # noqa: E402

CONFUSION = np.array([[5, 1, 0], [2, 3, 1], [0, 1, 7]])
NAMES = ["beet", "oat", "maize"]
PAPER_CLASSES = [
    "sugar beet", "summer oat", "meadow", "rape", "hop", "winter spelt", "winter triticale",
    "beans", "peas", "potato", "soybeans", "asparagus", "winter wheat", "winter barley",
    "winter rye", "summer barley", "maize",
]  # fmt: skip


def _cells(report: str, first_cell: str) -> list[str]:
    for line in report.splitlines():
        # Split on unescaped pipes only: class names may contain an escaped one.
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if cells[0] == first_cell:
            return cells[1:]
    raise AssertionError(f"no row {first_cell!r} in:\n{report}")


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report_holds_the_hand_computed_numbers():
    report = reports.classification_report_markdown(metrics.summarize(CONFUSION, NAMES), NAMES)

    # precision 5/7, recall 5/6, f1 10/13, IoU 5/8, support 6.
    assert _cells(report, "beet") == ["0.714", "0.833", "0.769", "0.625", "6"]
    assert _cells(report, "oat") == ["0.600", "0.500", "0.545", "0.375", "6"]
    assert _cells(report, "maize") == ["0.875", "0.875", "0.875", "0.778", "8"]
    macro_f1 = (10 / 13 + 6 / 11 + 7 / 8) / 3
    assert _cells(report, "**macro avg**")[2:] == [f"{macro_f1:.3f}", "0.593", "20"]  # mIoU 16/27
    # Support-weighted recall equals overall accuracy.
    assert _cells(report, "**weighted avg**")[1] == "0.750"
    weighted_f1 = (6 * 10 / 13 + 6 * 6 / 11 + 8 * 7 / 8) / 20  # = 0.7444
    # OA 15/20; kappa (0.75 - 0.34) / (1 - 0.34).
    assert _cells(report, "0.750") == ["0.621", "0.593", f"{macro_f1:.3f}", "0.744", "20"]
    assert f"{weighted_f1:.3f}" == "0.744"
    assert "neither present nor predicted" not in report


def test_report_marks_classes_that_are_absent_and_unpredicted():
    summary = metrics.summarize([[4, 0], [0, 0]], ["meadow", "hop|x"])
    report = reports.classification_report_markdown(summary, ["meadow", "hop|x"], digits=2)
    assert _cells(report, r"hop\|x *") == ["0.00", "0.00", "0.00", "0.00", "0"]
    assert _cells(report, "**macro avg**") == ["1.00", "1.00", "1.00", "1.00", "4"]
    assert "left out of the macro averages" in report
    with pytest.raises(KeyError):
        reports.classification_report_markdown(summary, ["rape"])


def test_plot_normalises_rows_and_handles_empty_rows():
    confusion = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    figure = reports.plot_confusion_matrix(confusion, NAMES, normalize=True)
    shown = np.asarray(figure.axes[0].images[0].get_array())
    np.testing.assert_allclose(shown.sum(axis=1), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(shown[0], [0.75, 0.25, 0.0])
    with pytest.raises(ValueError, match="class names"):
        reports.plot_confusion_matrix(confusion, NAMES[:2])


def test_confusion_png_for_seventeen_classes(tmp_path):
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 50, size=(17, 17)) + np.diag(rng.integers(1_000, 3_000_000, 17))
    path = tmp_path / "plots" / "confusion.png"

    figure = reports.confusion_matrix_figures_png(confusion, PAPER_CLASSES, path)

    width, height = _png_size(path)
    assert len(figure.axes) == 4  # two panels, two colour bars
    assert 1_000 < width < 4_000 and 500 < height < 2_000
    assert width > 1.5 * height  # side by side


def test_figure_to_image_tensor_shape_and_dtype(tmp_path):
    figure = reports.plot_confusion_matrix(CONFUSION, NAMES, path=tmp_path / "single.png")
    image = reports.figure_to_image_tensor(figure)

    width, height = (figure.get_size_inches() * figure.dpi).round().astype(int)
    assert image.dtype == tf.uint8
    assert image.shape == (1, height, width, 4)
    assert _png_size(tmp_path / "single.png") == (width, height)
    assert int(tf.reduce_max(image[..., 3])) == 255  # opaque RGBA, ready for tf.summary.image
