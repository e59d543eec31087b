"""Simulator throughput on one core: tiles per second (24 and 48 px, 46 observations, clouds on).

    .venv/bin/python benchmarks/simulator.py [--num_tiles=64] [--repeats=3]

Prints one line per setting, then as its last line one JSON object with every figure.
"""

import os

# One core: numpy's BLAS and OpenMP threads are fixed before numpy is imported.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import json  # noqa: E402
import platform  # noqa: E402

from absl import app, flags  # noqa: E402

from data_pipeline.simulation import simulator  # noqa: E402

_NUM_TILES = flags.DEFINE_integer("num_tiles", 64, "Tiles simulated per measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Measurements per setting; the best is reported.")


def main(argv):
    del argv
    if hasattr(os, "sched_setaffinity"):  # also pin the process, in case a library ignores env
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    figures = {"cpu": platform.processor() or platform.machine(), "num_tiles": _NUM_TILES.value}
    for pix10 in (24, 48):
        rates = [
            simulator.measure_tiles_per_second(pix10, 46, _NUM_TILES.value, seed)
            for seed in range(_REPEATS.value)
        ]
        figures[f"tiles_per_second_{pix10}px_46obs"] = round(max(rates), 1)
        print(f"{pix10} px, 46 observations: {max(rates):.1f} tiles/s on one core")
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
