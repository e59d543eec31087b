"""Pictures of the recurrent states next to the input and its cloud mask: frames, GIF, best cells.

A frame shows one time step: the true-colour input and the cloud mask (clear black, cloud white,
shadow blue) in the first row, then one row per state (`layer<l>_<direction>_<hidden|cell>`,
sorted) with every channel, blue negative, white zero, red positive, each channel scaled by its
largest magnitude over the whole sequence so that brightness is comparable between frames.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

from data_pipeline import files
from mtlcc_tf import cloud_cells_lib, summaries

_MASK_COLOURS = np.array([[0, 0, 0], [255, 255, 255], [60, 90, 200]], np.uint8)
_GAP = 2


def _diverging(values: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] of values in [-1, 1]: blue - white - red."""
    from matplotlib import colormaps

    colours = colormaps["RdBu_r"]((np.clip(values, -1.0, 1.0) + 1.0) / 2.0)[..., :3]
    return np.round(colours * 255).astype(np.uint8)


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def mask_colours(mask: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] picture of a cloud mask (CLEAR, CLOUD, SHADOW)."""
    return _MASK_COLOURS[np.clip(mask, 0, 2)]


def _scaled(states: Mapping[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    out = {}
    for name in sorted(states):
        values = np.asarray(states[name][:length], np.float32)  # [T, H, W, C]
        peak = np.max(np.abs(values), axis=(0, 1, 2), keepdims=True)
        out[name] = values / np.where(peak > 0, peak, 1.0)
    return out


def state_frames(
    inputs: np.ndarray,
    cloud_mask: np.ndarray,
    states: Mapping[str, np.ndarray],
    sequence_length: int,
    scale: int = 2,
) -> list[np.ndarray]:
    """uint8 [height, width, 3] frames, one per real time step, of one tile.

    Args:
        inputs: float32 [T, H, W, 15] model inputs.
        cloud_mask: uint8 [T, H, W].
        states: analysis-model outputs of the tile, [T, H, W, C] each.
        sequence_length: real observations (the first ones).
        scale: nearest-neighbour upscaling of every panel.
    """
    scaled = _scaled(states, sequence_length)
    channels = max([values.shape[-1] for values in scaled.values()] + [2])
    height, width = inputs.shape[1] * scale, inputs.shape[2] * scale
    rows = 1 + len(scaled)
    canvas_shape = (rows * (height + _GAP), channels * (width + _GAP), 3)
    frames = []
    for step in range(sequence_length):
        canvas = np.full(canvas_shape, 128, np.uint8)
        panels = [[summaries.true_colour(inputs[step]), mask_colours(cloud_mask[step])]]
        for values in scaled.values():
            panels.append([_diverging(values[step, ..., c]) for c in range(values.shape[-1])])
        for row, row_panels in enumerate(panels):
            for column, panel in enumerate(row_panels):
                top, left = row * (height + _GAP), column * (width + _GAP)
                canvas[top : top + height, left : left + width] = _upscale(panel, scale)
        frames.append(canvas)
    return frames


def write_gif(path: str, frames: Sequence[np.ndarray], milliseconds: int = 400) -> None:
    """An animated GIF, looping; written atomically."""
    from PIL import Image

    if not frames:
        raise ValueError(f"{path}: no frames to write")
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=milliseconds,
        loop=0,
    )  # fmt: skip
    with files.atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(buffer.getvalue())


def _feature_series(
    states: Mapping[str, np.ndarray], feature: str, sequence_length: int
) -> np.ndarray:
    """[T, H, W] values of a feature named like 'layer0_forward_hidden[3] change'."""
    name, rest = feature.split("[", 1)
    channel, kind = rest.split("] ")
    values = np.asarray(states[name], np.float32)[None, ..., int(channel)][..., None]
    if kind == cloud_cells_lib.CHANGE:
        values = cloud_cells_lib.state_changes(
            values, np.array([sequence_length]), backward="backward" in name
        )
    return values[0, :sequence_length, ..., 0]


def plot_best_cells(
    path: str,
    inputs: np.ndarray,
    cloud_mask: np.ndarray,
    states: Mapping[str, np.ndarray],
    sequence_length: int,
    top: Sequence[Mapping[str, float]],
    title: str,
    num_steps: int = 10,
) -> None:
    """Rows: true colour, cloud mask and the `top` features; columns: evenly spaced time steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtlcc_tf import reports

    steps = np.unique(np.linspace(0, sequence_length - 1, num_steps).round().astype(int))
    rows = 2 + len(top)
    figure, axes = plt.subplots(
        rows, len(steps), figsize=(1.1 * len(steps) + 1.5, 1.15 * rows), squeeze=False
    )
    series = [_feature_series(states, entry["feature"], sequence_length) for entry in top]
    for column, step in enumerate(steps):
        axes[0, column].imshow(summaries.true_colour(inputs[step]))
        axes[0, column].set_title(f"t={step}", fontsize=7)
        axes[1, column].imshow(mask_colours(cloud_mask[step]))
        for row, values in enumerate(series):
            peak = float(np.max(np.abs(values))) or 1.0
            axes[2 + row, column].imshow(values[step], cmap="RdBu_r", vmin=-peak, vmax=peak)
    labels = ["input", "cloud mask"] + [
        f"{entry['feature']}\nAUC {entry['auc']:.3f}".replace("layer", "L") for entry in top
    ]
    for row, label in enumerate(labels):
        axes[row, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    reports.save_figure(figure, path)
    plt.close(figure)
