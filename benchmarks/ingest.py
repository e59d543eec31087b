"""Scene ingestion: wall time, tiles written and peak memory on a full 10980 x 10980 px scene.

    TF_CPP_MIN_LOG_LEVEL=2 nice -n 10 .venv/bin/python benchmarks/ingest.py \
        [--size=10980 --small_size=2400 --num_dates=2 --work_dir=/tmp/mtlcc_bench_ingest --keep]

Builds a scene folder of size x size 10 m pixels (`<YYYYMMDD>_10m/_20m/_60m.tif` per date,
tiled and DEFLATE-compressed, written one strip at a time so that building it never holds the
scene) and a label raster, from one simulated 240 px tile repeated
(`geotiff.write_repeated_scene`), then runs `python -m data_pipeline.ingest` on it in a child
process whose peak resident memory GNU time reports (`/usr/bin/time -f %M`). The same is done at
`small_size`, and for a child that only imports the ingestion code (the fixed cost of Python,
GDAL and TensorFlow), to show that memory grows with the scene's width (GDAL's block cache, one
row of tiles) and its number of tiles, not with its pixels. Prints the figures, then as its last
line one JSON object.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import time

from absl import app, flags

from data_pipeline import dataset_root
from data_pipeline.simulation import geotiff

_SIZE = flags.DEFINE_integer("size", 10980, "Scene width and height in 10 m pixels (mult. of 6).")
_SMALL_SIZE = flags.DEFINE_integer("small_size", 2400, "Smaller scene to compare; 0: none.")
_NUM_DATES = flags.DEFINE_integer("num_dates", 2, "Dates of the scene (one year).")
_PIX10 = flags.DEFINE_integer("pix10", 24, "Tile width of the ingest in 10 m pixels.")
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/mtlcc_bench_ingest", "Scratch folder.")
_KEEP = flags.DEFINE_bool("keep", False, "Keep the scenes and dataset roots in --work_dir.")

_TIME = "/usr/bin/time"  # GNU time: the child's peak RSS in KiB (%M)


def run_child(command: list[str], log: str, env: dict) -> tuple[int, float, float]:
    """Runs a child with stdout and stderr to `log`: (exit status, seconds, peak RSS in MiB).

    The peak comes from GNU time, whose own child starts small: a child forked straight from this
    process would count this process's peak (the scene writer's) as its own (Linux keeps the
    larger of the pre-exec and post-exec peaks in ru_maxrss).
    """
    peak_file = f"{log}.maxrss"
    start = time.perf_counter()
    with open(log, "w") as output:
        status = subprocess.call(
            [_TIME, "-f", "%M", "-o", peak_file, *command], stdout=output, stderr=output, env=env
        )
    seconds = time.perf_counter() - start
    with open(peak_file) as peak:
        kib = int(peak.read().split()[-1])
    return status, seconds, kib / 1024


def measure(size: int, env: dict) -> dict:
    folder = os.path.join(_WORK_DIR.value, f"scene{size}")
    root = os.path.join(_WORK_DIR.value, f"root{size}")
    for path in (folder, root):
        shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    labels = geotiff.write_repeated_scene(folder, size, size, _NUM_DATES.value)
    build_seconds = time.perf_counter() - start
    scene_bytes = sum(entry.stat().st_size for entry in os.scandir(folder))
    log = os.path.join(_WORK_DIR.value, f"ingest{size}.log")
    status, seconds, peak_mib = run_child(
        [sys.executable, "-m", "data_pipeline.ingest", f"--input={folder}", f"--out_dir={root}",
         f"--pix10={_PIX10.value}", f"--labels={labels}"],
        log, env,
    )  # fmt: skip
    if status:
        with open(log) as output:
            raise RuntimeError(f"ingest of {folder} failed ({status}):\n{output.read()[-3000:]}")
    data = os.path.join(root, dataset_root.year_datadir(2016))
    tiles = sum(1 for name in os.listdir(data) if name.endswith(".tfrecord.gz"))
    root_bytes = sum(entry.stat().st_size for entry in os.scandir(data))
    if not _KEEP.value:
        for path in (folder, root):
            shutil.rmtree(path)
    figures = {
        "size": size,
        "scene_bytes": scene_bytes,
        "build_seconds": round(build_seconds, 1),
        "ingest_seconds": round(seconds, 1),
        "tiles_written": tiles,
        "tiles_per_second": round(tiles / seconds, 1),
        "records_bytes": root_bytes,
        "peak_rss_mib": round(peak_mib, 1),
    }
    print(
        f"{size} x {size} px, {_NUM_DATES.value} dates ({scene_bytes / 2**30:.2f} GiB on disk, "
        f"built in {build_seconds:.0f} s): ingest {seconds:.0f} s, {tiles} tiles, "
        f"peak RSS {peak_mib:.0f} MiB"
    )
    return figures


def main(argv):
    del argv
    if not os.access(_TIME, os.X_OK):
        raise app.UsageError(f"{_TIME} (GNU time) is needed to measure the child's peak memory")
    for size in (_SIZE.value, _SMALL_SIZE.value):
        if size % 6:
            raise app.UsageError(f"size {size} is no multiple of 6")
    os.makedirs(_WORK_DIR.value, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repository, env.get("PYTHONPATH")]))
    log = os.path.join(_WORK_DIR.value, "import.log")
    _, _, import_mib = run_child(
        [sys.executable, "-c", "import data_pipeline.ingest, data_pipeline.ingest_lib"], log, env
    )
    print(f"importing the ingestion code: peak RSS {import_mib:.0f} MiB")
    sizes = [size for size in (_SMALL_SIZE.value, _SIZE.value) if size]
    results = [measure(size, env) for size in sizes]
    if not _KEEP.value:
        shutil.rmtree(_WORK_DIR.value)
    figures = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "num_dates": _NUM_DATES.value,
        "pix10": _PIX10.value,
        "import_only_peak_rss_mib": round(import_mib, 1),
        "runs": results,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    app.run(main)
