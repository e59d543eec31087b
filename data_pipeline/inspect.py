"""`python -m data_pipeline.inspect ROOT [--json] [--skip_corrupt]`: validate, summarise a dataset.

Exits with status 1 when any record is bad (unless --skip_corrupt), 2 on a missing or malformed
dataset root.
"""

import json
import sys

from absl import app, flags

from data_pipeline import dataset_root

_JSON = flags.DEFINE_bool("json", False, "Print the report as one JSON object.")
_SKIP_CORRUPT = flags.DEFINE_bool(
    "skip_corrupt", False, "Report bad records but exit 0 (they are skipped when training)."
)
_YEARS = flags.DEFINE_list("years", [], "dataset.ini sections to inspect (default: all).")


def main(argv):
    if len(argv) != 2:
        raise app.UsageError(
            "usage: python -m data_pipeline.inspect ROOT [--json] [--skip_corrupt]"
        )
    progress = None if _JSON.value else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        dataset_root.read_dataset_ini(argv[1])  # a missing root is named before TensorFlow loads
        from data_pipeline import inspection  # noqa: PLC0415

        report = inspection.inspect_root(argv[1], tuple(_YEARS.value), progress)
    except dataset_root.DatasetError as error:
        sys.exit(f"inspect: {error}")
    print(json.dumps(report, indent=None) if _JSON.value else inspection.format_report(report))
    if report["corrupt"] and not _SKIP_CORRUPT.value:
        print(f"{len(report['corrupt'])} bad record(s); see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
