"""Do the temporal-attention encoder's weights avoid cloudy dates? (issue 18)

python -m mtlcc_tf.attention_clouds --datadir=data/simulated \
    --runs='data/experiments/accuracy/models/utae/seed_*' \
    --results_dir=experiments/results/attention_clouds

For every run (a `--convcell=utae` model directory) and every real date of every pixel of the
partition's tiles that have cloud masks: the heads' mean attention weight at the encoder's half
resolution, against whether that 2 x 2 block is mostly cloud or shadow in the records' mask.
The ROC-AUC of low attention as a cloud detector: 0.5 is blind to clouds, 1 avoids every cloudy
date. The same models with random weights (seeded per run) are the baseline: untrained, any
AUC comes from the inputs alone. Writes results.json and results.md; prints the table.
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys

import keras
import numpy as np
from absl import app, flags, logging

from data_pipeline import files, input_pipeline, records
from data_pipeline.data_config import DataConfig
from mtlcc_tf import cloud_cells_lib, experiment_lib, model_dir, model_restore, models

_DATADIR = flags.DEFINE_string("datadir", None, "Dataset root.")
_PARTITION = flags.DEFINE_string("partition", "eval", "Tiles to score.")
_RUNS = flags.DEFINE_string("runs", None, "Glob of --convcell=utae model directories.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None, "Where results.json/.md go.")


def cloud_auc(model: keras.Model, data_config: DataConfig) -> float:
    """ROC-AUC of low attention against cloudy blocks over every real pixel-date (2 x 2 blocks
    for the two-level encoder, 2^(levels-1) square for deeper ones)."""
    attention_model = models.build_attention_model(model)
    scores, targets = [], []
    for batch in input_pipeline.build_dataset(data_config):
        keep = batch["has_cloud_mask"].numpy()
        if not keep.any():
            continue
        inputs = {key: batch[key] for key in input_pipeline.MODEL_KEYS}
        weights = attention_model(inputs).numpy().mean(axis=1)  # [B, T, h, w]
        cloudy = (batch["cloud_mask"].numpy() != records.CLEAR).astype(np.float32)
        b, t, height, width = cloudy.shape
        h, w = weights.shape[2:]
        factor = 2 ** round(math.log2(height / h))  # the attention's resolution, halved per level
        padded = np.zeros((b, t, factor * h, factor * w), np.float32)
        padded[:, :, :height, :width] = cloudy
        blocks = padded.reshape(b, t, h, factor, w, factor).mean(axis=(3, 5)) > 0.5
        real = np.arange(t)[None, :] < batch["sequence_length"].numpy()[:, None]  # [B, T]
        chosen = (real & keep[:, None])[:, :, None, None] & np.ones((1, 1, h, w), bool)
        scores.append(-weights[chosen])
        targets.append(blocks[chosen])
    if not scores:
        raise ValueError(f"{data_config.root}: no tile of the partition has a cloud mask")
    return float(
        cloud_cells_lib.roc_auc(np.concatenate(scores)[:, None], np.concatenate(targets))[0]
    )


def untrained(run: str, seed: int) -> keras.Model:
    """The run's model with random weights (seeded)."""
    run_config = model_dir.read_run_config(run)
    keras.utils.set_random_seed(seed)
    return models.build_model(run_config.model)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    runs = sorted(glob.glob(_RUNS.value))
    if not runs:
        sys.exit(f"attention_clouds: --runs={_RUNS.value} matches no model directory")
    data_config = DataConfig(
        root=_DATADIR.value, partition=_PARTITION.value, batch_size=4, training=False,
        augment=False,
    ).validate()  # fmt: skip
    results = {"trained": {}, "untrained": {}}
    for index, run in enumerate(runs):
        try:
            model, _, _ = model_restore.restore_for_inference(run, "best")
            results["trained"][run] = cloud_auc(model, data_config)
            results["untrained"][run] = cloud_auc(untrained(run, 1000 + index), data_config)
        except (FileNotFoundError, ValueError) as error:
            sys.exit(f"attention_clouds: {error}")
        logging.info(
            "%s: AUC %.3f (untrained %.3f)", run, results["trained"][run],
            results["untrained"][run],
        )  # fmt: skip
    summary = {
        name: experiment_lib.mean_std(list(values.values())) for name, values in results.items()
    }
    command = " ".join(
        ["python -m mtlcc_tf.attention_clouds", f"--datadir={_DATADIR.value}",
         f"--partition={_PARTITION.value}", f"--runs='{_RUNS.value}'",
         f"--results_dir={_RESULTS_DIR.value}"]
    )  # fmt: skip
    lines = [
        "# Attention weights against clouds (issue 18)",
        "",
        f"`{command}`",
        "",
        f"ROC-AUC of low attention (heads' mean, at the attention's resolution) against mostly "
        "cloudy blocks (2 x 2 px for the two-level encoder), "
        f"every real date of every pixel of the {_PARTITION.value} tiles; 0.5: blind to clouds.",
        "",
        "| model | AUC, mean ± std | runs |",
        "|---|---|---|",
    ]
    for name, stats in summary.items():
        lines.append(f"| {name} | {stats['mean']:.3f} ± {stats['std']:.3f} | {len(runs)} |")
    text = "\n".join(lines) + "\n"
    if _RESULTS_DIR.value:
        os.makedirs(_RESULTS_DIR.value, exist_ok=True)
        files.write_json(
            os.path.join(_RESULTS_DIR.value, "results.json"),
            {"command": command, "runs": results, "summary": summary},
        )
        files.write_text(os.path.join(_RESULTS_DIR.value, "results.md"), text)
    print(text)
    print(json.dumps(summary))


if __name__ == "__main__":
    flags.mark_flags_as_required(["datadir", "runs"])
    app.run(main)
