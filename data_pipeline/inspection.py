"""Validates every record of a dataset root and gathers its statistics (for `inspect`)."""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from data_pipeline import dataset_root, input_pipeline, realism, records, transforms


def check_record(
    path: str, section: dataset_root.DatasetSection, lookup_table: tf.Tensor
) -> dict[str, tf.Tensor]:
    """Reads one record and runs the input pipeline's own checks on it, eagerly.

    Raises:
      records.RecordError: naming the file and the problem.
    """
    features = records.read_record(path)
    expected_shape = (section.pix10, section.nobs, section.nbands10, section.nbands20,
                      section.nbands60)  # fmt: skip
    try:
        features = input_pipeline.check_tile(features, expected_shape)
        return transforms.map_labels(features, lookup_table)
    except tf.errors.InvalidArgumentError as error:
        raise records.RecordError(f"{path}: {records.op_error_message(error)}") from error


def _summary(values) -> dict:
    values = np.asarray(values, np.float64)
    if not values.size:
        return {}
    return {
        "min": float(values.min()),
        "mean": round(float(values.mean()), 4),
        "max": float(values.max()),
    }


def inspect_root(
    root: str,
    years: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Checks every record file of the chosen sections and summarises the dataset.

    Returns a JSON-serialisable dict with at least `num_tiles`, `num_classes`, `schema`
    (record counts per schema) and `corrupt` (a list of {"file", "problem"}).
    """
    sections = dataset_root.read_dataset_ini(root)
    classes = dataset_root.read_classes(root)
    unknown = [name for name in years if name not in sections]
    if unknown:
        raise dataset_root.DatasetError(f"{root}/dataset.ini: no section for {unknown}")
    chosen = [sections[name] for name in (years or sections)]
    lookup = transforms.label_lookup_table(classes.known_ids)
    names = ("unknown", *classes.known_names)
    pixels_per_class = np.zeros(classes.num_classes + 1, np.int64)
    schemas = collections.Counter()
    sequence_lengths, coverage, corrupt = [], [], []
    coverage_by_month = collections.defaultdict(list)
    ndvi_levels, tile_clouds = realism.NdviLevels(classes.num_classes), realism.TileClouds()
    tiles_per_section, labelled_tiles, no_data_pixels = {}, 0, 0
    start = time.monotonic()
    for section in chosen:
        folder = os.path.join(root, section.datadir)
        if not os.path.isdir(folder):
            raise dataset_root.DatasetError(f"{folder}: datadir of [{section.name}] is missing")
        paths = sorted(
            os.path.join(folder, name)
            for name in os.listdir(folder)
            if name.endswith(dataset_root.RECORD_SUFFIXES)
        )
        tiles_per_section[section.name] = len(paths)
        for number, path in enumerate(paths, start=1):
            try:
                features = check_record(path, section, lookup)
            except records.RecordError as error:
                corrupt.append({"file": path, "problem": str(error).removeprefix(f"{path}: ")})
                continue
            schemas[records.SCHEMA_NAMES[int(features["schema_version"])]] += 1
            labels = features["labels"].numpy().ravel()
            pixels_per_class += np.bincount(labels + 1, minlength=classes.num_classes + 1)
            labelled_tiles += bool((labels >= 0).any())
            valid = transforms.valid_observations(features).numpy()
            no_data_pixels += int(records.no_data(features["x10"].numpy()[valid]).sum())
            sequence_lengths.append(int(valid.sum()))
            if bool(features["has_cloud_mask"]) and valid.any():
                cloud_mask = features["cloud_mask"].numpy()[valid]  # [T', H, W]
                mask = cloud_mask != records.CLEAR
                coverage.append(float(mask.mean()))
                months = (features["doy"].numpy()[valid] - 1) * 12 // 366
                for month, fraction in zip(months, mask.mean(axis=(1, 2)), strict=True):
                    coverage_by_month[int(month) + 1].append(float(fraction))
                tile_clouds.add(cloud_mask, records.CLOUD, records.CLEAR)
                ndvi_levels.add(
                    features["x10"].numpy()[valid], labels.reshape(mask.shape[1:]), ~mask
                )
            if progress and number % 200 == 0:
                rate = number / (time.monotonic() - start)
                progress(f"[{section.name}] {number}/{len(paths)} records ({rate:.0f}/s)")
    num_tiles = sum(schemas.values())
    return {
        "warnings": _warnings(num_tiles, labelled_tiles, no_data_pixels, pixels_per_class),
        "tiles_with_labels": labelled_tiles,
        "no_data_pixels": no_data_pixels,
        "root": os.path.abspath(root),
        "sections": {s.name: {"datadir": s.datadir, "pix10": s.pix10, "nobs": s.nobs,
                              "num_records": tiles_per_section[s.name]} for s in chosen},
        "num_tiles": num_tiles,
        "num_classes": classes.num_classes,
        "classes": dict(zip(classes.ids, classes.names, strict=True)),
        "schema": dict(schemas),
        "corrupt": corrupt,
        "splits": _split_counts(root, chosen),
        "class_histogram": dict(zip(names, pixels_per_class.tolist(), strict=True)),
        "sequence_length": _summary(sequence_lengths),
        "cloud_coverage": {
            "tiles_with_mask": len(coverage),
            **_summary(coverage),
            "by_month": {
                month: round(float(np.mean(values)), 4)
                for month, values in sorted(coverage_by_month.items())
            },
            "tile_observations": tile_clouds.summary(),
        },
        # Clear-sky vegetation levels per class, only measurable with cloud masks.
        "clear_sky_ndvi": ndvi_levels.summary(classes.known_names) if coverage else {},
    }  # fmt: skip


def _warnings(num_tiles: int, labelled_tiles: int, no_data: int, pixels: np.ndarray) -> list:
    """What a user should hear about before training on the dataset."""
    warnings = []
    if num_tiles and labelled_tiles * 2 < num_tiles:
        warnings.append(
            f"{num_tiles - labelled_tiles} of {num_tiles} tiles hold no labelled pixel: training "
            "skips them, so it sees only the other "
            f"{labelled_tiles}; check that the labels cover the imagery"
        )
    if no_data and no_data * 2 > pixels.sum():
        warnings.append(f"{no_data} of {pixels.sum()} pixels have no data on any date")
    return warnings


def _split_counts(root: str, sections: list[dataset_root.DatasetSection]) -> dict:
    """Tile ids listed per tileids file, and how many have a record in each section."""
    folder = os.path.join(root, "tileids")
    if not os.path.isdir(folder):
        return {}
    counts = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".tileids"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            tileids = [line.strip() for line in handle if line.strip()]
        entry = {"listed": len(tileids)}
        for section in sections:
            found, _ = dataset_root.find_tile_files(root, section, tileids)
            entry[section.name] = len(found)
        counts[name.removesuffix(".tileids")] = entry
    return counts


def format_report(report: dict) -> str:
    """A human-readable version of `inspect_root`'s report."""
    lines = [f"dataset root {report['root']}"]
    for name, section in report["sections"].items():
        lines.append(
            f"  [{name}] {section['datadir']}: {section['num_records']} records, "
            f"{section['pix10']} px, {section['nobs']} observations"
        )
    lines.append(f"schema: {report['schema']}  valid tiles: {report['num_tiles']}")
    lines.append(
        f"tiles with labels: {report['tiles_with_labels']}  "
        f"pixels without data on any date: {report['no_data_pixels']}"
    )
    lines.append("splits (listed / with a record per section):")
    for split, counts in report["splits"].items():
        lines.append(f"  {split:14s} {counts}")
    lines.append(f"classes: {report['num_classes']} (+ unknown); pixels per class:")
    total = max(sum(report["class_histogram"].values()), 1)
    for name, count in report["class_histogram"].items():
        lines.append(f"  {name:20s} {count:10d}  {100 * count / total:5.1f} %")
    lines.append(f"sequence length: {report['sequence_length']}")
    coverage = dict(report["cloud_coverage"])
    tile_observations = coverage.pop("tile_observations")
    lines.append(f"cloud coverage (cloud or shadow, per tile): {coverage}")
    lines.append(
        f"cloud per tile-observation (clear < 1 %, overcast > 99 % cloud): {tile_observations}"
    )
    if report["clear_sky_ndvi"]:
        lines.append("clear-sky NDVI per class (5/50/95th percentile, median yearly peak):")
        for name, levels in report["clear_sky_ndvi"].items():
            values = "  ".join(
                f"{levels[key]:6.2f}" if levels[key] is not None else "     -"
                for key in ("p05", "p50", "p95", "peak_median")
            )
            lines.append(f"  {name:20s} {values}  ({levels['num_observations']} observations)")
    lines.append(f"corrupt records: {len(report['corrupt'])}")
    lines += [f"  {bad['file']}: {bad['problem']}" for bad in report["corrupt"]]
    lines += [f"warning: {warning}" for warning in report["warnings"]]
    return "\n".join(lines)
