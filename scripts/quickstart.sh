#!/usr/bin/env bash
# The main job on the built-in simulated dataset, on CPU: set up, simulate, inspect, train the
# quickstart experiment, evaluate on the eval tiles, export a SavedModel. A few minutes in all.
# Outputs go to data/ (ignored by git); run again to reuse the data and resume training.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}" PYTHONUNBUFFERED=1
PY=.venv/bin/python
DATA=data/quickstart
MODEL=data/runs/quickstart
EVAL=data/runs/quickstart/evaluation
EXPORT=data/runs/quickstart/saved_model

if [ ! -f "$DATA/dataset.ini" ]; then
  echo "== simulate a cloudy Sentinel-2 dataset into $DATA"
  # A folder without dataset.ini is an interrupted simulation: start it again.
  $PY -m data_pipeline.synthesize --out_dir="$DATA" --overwrite
fi
echo "== inspect $DATA"
$PY -m data_pipeline.inspect "$DATA" | tail -n 25
echo "== train (experiments/quickstart.flags) into $MODEL"
$PY -m mtlcc_tf.train --flagfile=experiments/quickstart.flags --datadir="$DATA" --model_dir="$MODEL"
echo "== evaluate on the eval tiles into $EVAL"
$PY -m mtlcc_tf.evaluate --model_dir="$MODEL" --datadir="$DATA" --out_dir="$EVAL"
echo "== export a SavedModel to $EXPORT"
$PY -m mtlcc_tf.export --model_dir="$MODEL" --export_dir="$EXPORT" --overwrite
cat <<DONE

Done.
  metrics:      $EVAL/metrics.json, $EVAL/report.md, $EVAL/confusion_matrix.png
  TensorBoard:  .venv/bin/tensorboard --logdir $MODEL
  SavedModel:   $EXPORT  (.venv/bin/saved_model_cli show --dir $EXPORT --all)
DONE
