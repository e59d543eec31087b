"""Cloud cells: which recurrent state channels act as cloud detectors, and how well.

For every pixel-observation of a partition, each channel of every per-step state (hidden and,
for the LSTM, cell; every layer and direction, from `models.build_analysis_model`) and its change
from the previous step in the direction the layer reads (zero at the first step read) is a
score; the per-pixel cloud mask (cloud or shadow versus clear) is the target. A
channel's ROC-AUC says how well thresholding it separates cloudy from clear observations; 0.5 is
chance and AUC < 0.5 a detector with the opposite sign, so channels rank by max(AUC, 1 - AUC).
The input bands themselves are scored the same way: a cell is only interesting where it beats
the best band, i.e. where it is more than a copy of an input that shows clouds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from data_pipeline import records

ACTIVATION = "activation"
CHANGE = "change"
_BAND_NAMES = (*records.BANDS10, *records.BANDS20, *records.BANDS60)  # order of `inputs`


def roc_auc(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """ROC-AUC of every column of `scores` [N, C] against the boolean `target` [N] -> [C].

    The Mann-Whitney statistic with average ranks for ties, so a constant column scores 0.5.

    Raises:
        ValueError: `target` holds only one class, or shapes disagree.
    """
    scores = np.asarray(scores, np.float64)
    target = np.asarray(target, bool)
    if scores.ndim != 2 or target.shape != scores.shape[:1]:
        raise ValueError(f"scores {scores.shape} and target {target.shape}: need [N, C] and [N]")
    positives = int(np.count_nonzero(target))
    negatives = target.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(f"the target has {positives} positives and {negatives} negatives")
    out = np.empty(scores.shape[1])
    for column in range(scores.shape[1]):
        values = scores[:, column]
        order = np.argsort(values, kind="stable")
        sorted_values = values[order]
        # Average rank of each run of equal values (ranks start at 1).
        starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
        ends = np.r_[starts[1:], values.size]
        average = (starts + ends + 1) / 2.0
        ranks = np.empty(values.size)
        ranks[order] = np.repeat(average, ends - starts)
        rank_sum = ranks[target].sum()
        out[column] = (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
    return out


def detector_score(auc: np.ndarray) -> np.ndarray:
    """max(AUC, 1 - AUC): how well a channel detects clouds with either sign."""
    return np.maximum(auc, 1.0 - auc)


def state_changes(states: np.ndarray, sequence_length: np.ndarray, backward: bool) -> np.ndarray:
    """state_t - state_(previous step read) for [batch, time, H, W, C] states in input order.

    Forward layers read t-1 before t, backward ones t+1 (from the last real step down). The first
    step read has no previous step: its change is zero (not the state itself, which would make
    every first step look like an event). Padding steps (t >= length) give zero.
    """
    previous = states.copy()  # the first step read keeps itself: zero change
    if backward:
        previous[:, :-1] = states[:, 1:]
        for index, length in enumerate(sequence_length):
            if length > 0:
                previous[index, int(length) - 1] = states[index, int(length) - 1]
    else:
        previous[:, 1:] = states[:, :-1]
    change = states - previous
    steps = np.arange(states.shape[1])[None, :]
    change[steps >= np.asarray(sequence_length)[:, None]] = 0.0
    return change


@dataclasses.dataclass
class Samples:
    """Sampled pixel-observations: feature columns, their names, the target, the input bands."""

    names: list[str]
    features: list[np.ndarray]  # float32 [n, C] per batch
    bands: list[np.ndarray]  # float32 [n, 13] per batch
    target: list[np.ndarray]  # bool [n] per batch

    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.concatenate(self.features),
            np.concatenate(self.bands),
            np.concatenate(self.target),
        )


def feature_names(state_names: Sequence[str], channels: int) -> list[str]:
    """'layer0_forward_hidden[3] activation', ... in the column order of `sample_batch`."""
    return [
        f"{name}[{channel}] {kind}"
        for name in state_names
        for kind in (ACTIVATION, CHANGE)
        for channel in range(channels)
    ]


def sample_batch(
    states: dict[str, np.ndarray],
    batch: dict[str, np.ndarray],
    rng: np.random.Generator,
    fraction: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Features [n, C], bands [n, 13], target [n] of a random `fraction` of real observations.

    Args:
        states: the analysis model's outputs, numpy [batch, time, H, W, filters] each.
        batch: the input batch as numpy (inputs, sequence_length, cloud_mask, has_cloud_mask).
        rng: draws the sample.
        fraction: share of real pixel-observations kept.
    """
    length = batch["sequence_length"]
    inputs = batch["inputs"]
    steps = np.arange(inputs.shape[1])[None, :]
    real = (steps < length[:, None]) & batch["has_cloud_mask"][:, None]  # [batch, time]
    keep = real[:, :, None, None] & (rng.random(inputs.shape[:4]) < fraction)
    columns, names = [], []
    for name in sorted(states):
        values = np.asarray(states[name], np.float32)
        change = state_changes(values, length, backward="backward" in name)
        columns += [values[keep], change[keep]]
        names.append(name)
    channels = columns[0].shape[-1] if columns else 0
    features = np.concatenate(columns, axis=-1) if columns else np.zeros((int(keep.sum()), 0))
    bands = inputs[..., : len(_BAND_NAMES)][keep]
    target = batch["cloud_mask"][keep] != records.CLEAR
    return features, bands, target, feature_names(names, channels)


def collect(
    analysis_model, batches: Iterator[dict[str, Any]], fraction: float, seed: int
) -> Samples:
    """Runs `analysis_model` over `batches` (tf.data elements) and samples every batch."""
    rng = np.random.default_rng(seed)
    samples = Samples([], [], [], [])
    for batch in batches:
        states = analysis_model(
            {"inputs": batch["inputs"], "sequence_length": batch["sequence_length"]},
            training=False,
        )
        numpy_batch = {key: np.asarray(batch[key]) for key in (
            "inputs", "sequence_length", "cloud_mask", "has_cloud_mask")}  # fmt: skip
        features, bands, target, names = sample_batch(
            {name: np.asarray(value) for name, value in states.items()}, numpy_batch, rng, fraction
        )
        samples.names = names
        samples.features.append(features)
        samples.bands.append(bands)
        samples.target.append(target)
    if not samples.features:
        raise ValueError("no tiles to analyse")
    return samples


def rank(samples: Samples, top: int = 10) -> dict[str, Any]:
    """AUC of every state feature and input band; the `top` features by detector score."""
    features, bands, target = samples.stacked()
    auc = roc_auc(features, target)
    band_auc = roc_auc(bands, target)
    score = detector_score(auc)
    order = np.argsort(-score, kind="stable")
    band_score = detector_score(band_auc)
    best_band = int(np.argmax(band_score))
    return {
        "num_samples": int(target.size),
        "cloudy_share": float(target.mean()),
        "feature_names": samples.names,
        "auc": [round(float(value), 5) for value in auc],
        "top": [
            {"feature": samples.names[i], "auc": float(auc[i]), "score": float(score[i])}
            for i in order[:top]
        ],
        "best_score": float(score[order[0]]),
        "band_auc": {name: float(value) for name, value in zip(_BAND_NAMES, band_auc, strict=True)},
        "best_band": {"band": _BAND_NAMES[best_band], "score": float(band_score[best_band])},
    }
