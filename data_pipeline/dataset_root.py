"""Reads and writes the MTLCC dataset-root layout: dataset.ini, classes, tileids, geotransforms."""

from __future__ import annotations

import configparser
import contextlib
import csv
import dataclasses
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence

from data_pipeline import files

UNKNOWN_ID = 0
PARTITIONS = ("train", "test", "eval")
RECORD_SUFFIXES = (".tfrecord.gz", ".tfrecord")


class DatasetError(ValueError):
    """A dataset root, or a file in it, is missing or malformed. The message names the file."""


@dataclasses.dataclass(frozen=True)
class ClassTable:
    """Label ids and names in `classes.txt` order; id 0 is "unknown" and has no class index."""

    ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self):
        if len(self.ids) != len(self.names):
            raise ValueError(f"{len(self.ids)} class ids but {len(self.names)} names")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"duplicate class ids in {self.ids}")

    @property
    def known_ids(self) -> tuple[int, ...]:
        """Ids of the classes the model predicts, in file order (index i <-> known_ids[i])."""
        return tuple(i for i in self.ids if i != UNKNOWN_ID)

    @property
    def known_names(self) -> tuple[str, ...]:
        return tuple(n for i, n in zip(self.ids, self.names, strict=True) if i != UNKNOWN_ID)

    @property
    def num_classes(self) -> int:
        return len(self.known_ids)

    def index_of(self) -> dict[int, int]:
        """Label id -> contiguous class index; unknown (id 0) maps to -1."""
        mapping = {label_id: index for index, label_id in enumerate(self.known_ids)}
        mapping[UNKNOWN_ID] = -1
        return mapping


@dataclasses.dataclass(frozen=True)
class DatasetSection:
    """One `[section]` of dataset.ini: the records of one year."""

    name: str
    datadir: str
    pix10: int
    nobs: int
    nbands10: int = 4
    nbands20: int = 6
    nbands60: int = 3
    tiletable: str = ""


@dataclasses.dataclass(frozen=True)
class Geotransform:
    """A tile's GDAL geotransform (north-up) and EPSG code; for a CRS without EPSG code (srid 0)
    its WKT, kept in the root's `crs.wkt`."""

    xmin: float
    xres: float
    ymax: float
    yres: float
    srid: int
    wkt: str = ""

    @property
    def crs(self) -> int | str:
        """The EPSG code, else the WKT ("" for none): what `rasters.create_geotiff` takes."""
        return self.srid or self.wkt

    def gdal(self) -> tuple[float, float, float, float, float, float]:
        return (self.xmin, self.xres, 0.0, self.ymax, 0.0, -abs(self.yres))


@dataclasses.dataclass(frozen=True)
class RootInfo:
    """What a dataset root's dataset.ini and classes.txt say, read once and passed around."""

    path: str
    sections: Mapping[str, DatasetSection]
    classes: ClassTable


def read_root(root: str) -> RootInfo:
    """Reads and checks `<root>/dataset.ini` and `<root>/classes.txt`."""
    return RootInfo(root, read_dataset_ini(root), read_classes(root))


def year_datadir(year: int) -> str:
    """Record folder of a year, as in the original: `data16` for 2016."""
    return f"data{year % 100:02d}"


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: missing {what}")


def read_dataset_ini(root: str) -> dict[str, DatasetSection]:
    """Reads `<root>/dataset.ini` into one DatasetSection per section (year)."""
    path = os.path.join(root, "dataset.ini")
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: dataset root does not exist or is not a folder")
    _require_file(path, "dataset.ini (one [section] per year with datadir, pix10, nobs, ...)")
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as error:
        raise DatasetError(f"{path}: cannot parse: {error}") from error
    if not parser.sections():
        raise DatasetError(f"{path}: no sections; expected one per year, e.g. [2016]")
    sections = {}
    for name in parser.sections():
        values = parser[name]
        for key in ("datadir", "pix10", "nobs"):
            if key not in values:
                raise DatasetError(f"{path}: section [{name}] lacks the key '{key}'")
        try:
            section = DatasetSection(
                name=name,
                datadir=values["datadir"],
                pix10=int(values["pix10"]),
                nobs=int(values["nobs"]),
                nbands10=int(values.get("nbands10", 4)),
                nbands20=int(values.get("nbands20", 6)),
                nbands60=int(values.get("nbands60", 3)),
                tiletable=values.get("tiletable", ""),
            )
        except ValueError as error:
            raise DatasetError(f"{path}: section [{name}]: {error}") from error
        if section.pix10 <= 0 or section.pix10 % 6:
            # 60 m bands are pix10 / 6 pixels wide, so pix10 must divide by 6 (24 and 48 do).
            raise DatasetError(f"{path}: [{name}] pix10={section.pix10} must be a multiple of 6")
        if section.nobs <= 0:
            raise DatasetError(f"{path}: [{name}] nobs={section.nobs} must be positive")
        sections[name] = section
    return sections


def write_dataset_ini(root: str, sections: Sequence[DatasetSection]) -> None:
    parser = configparser.ConfigParser()
    for section in sections:
        parser[section.name] = {
            key: str(value) for key, value in dataclasses.asdict(section).items() if key != "name"
        }
    with files.atomic_text(os.path.join(root, "dataset.ini")) as handle:
        parser.write(handle)


def read_classes(root: str) -> ClassTable:
    """Reads `<root>/classes.txt` (lines `id|name`)."""
    return read_class_file(os.path.join(root, "classes.txt"))


def read_class_file(path: str) -> ClassTable:
    """Reads a class table file of any name (lines `id|name`); errors name the file."""
    _require_file(path, "class table (lines 'id|name')")
    ids, names = [], []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            label_id, sep, name = line.partition("|")
            if not sep:
                raise DatasetError(f"{path}:{line_number}: expected 'id|name', got {line!r}")
            try:
                ids.append(int(label_id))
            except ValueError as error:
                raise DatasetError(
                    f"{path}:{line_number}: id {label_id!r} is no integer"
                ) from error
            names.append(name.strip())
    try:
        table = ClassTable(tuple(ids), tuple(names))
    except ValueError as error:
        raise DatasetError(f"{path}: {error}") from error
    if table.num_classes == 0:
        raise DatasetError(f"{path}: no classes besides unknown (id 0)")
    return table


def write_classes(root: str, table: ClassTable) -> None:
    with files.atomic_text(os.path.join(root, "classes.txt")) as handle:
        for label_id, name in zip(table.ids, table.names, strict=True):
            handle.write(f"{label_id}|{name}\n")


def tileids_filename(partition: str, fold: int = 0) -> str:
    """`train_fold{k}.tileids`, `test_fold{k}.tileids` or `eval.tileids`."""
    if partition not in PARTITIONS:
        raise ValueError(f"unknown partition {partition!r}; expected one of {PARTITIONS}")
    return "eval.tileids" if partition == "eval" else f"{partition}_fold{fold}.tileids"


def read_tileids(root: str, partition: str, fold: int = 0) -> list[str]:
    path = os.path.join(root, "tileids", tileids_filename(partition, fold))
    _require_file(path, f"tile id list of partition '{partition}' (fold {fold})")
    with open(path, encoding="utf-8") as handle:
        tileids = [line.strip() for line in handle if line.strip()]
    if not tileids:
        raise DatasetError(f"{path}: empty split: no tile ids")
    return tileids


def write_tileids(root: str, name: str, tileids: Sequence[str]) -> None:
    os.makedirs(os.path.join(root, "tileids"), exist_ok=True)
    with files.atomic_text(os.path.join(root, "tileids", f"{name}.tileids")) as handle:
        handle.writelines(f"{tileid}\n" for tileid in tileids)


CRS_FILE = "crs.wkt"


def read_geotransforms(root: str) -> dict[str, Geotransform]:
    """Reads `geotransforms.csv` (`tileid,xmin,xres,0,ymax,0,-yres,srid`); empty if absent.

    Tiles with srid 0 get the WKT of `crs.wkt`, if the root has one (a CRS without EPSG code).
    """
    path = os.path.join(root, "geotransforms.csv")
    if not os.path.isfile(path):
        return {}
    wkt = ""
    if os.path.isfile(os.path.join(root, CRS_FILE)):
        with open(os.path.join(root, CRS_FILE), encoding="utf-8") as handle:
            wkt = handle.read().strip()
    geotransforms = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].strip().lower() == "tileid":
                continue
            if len(row) != 8:
                raise DatasetError(f"{path}:{line_number}: expected 8 columns, got {len(row)}")
            try:
                values = [float(v) for v in row[1:7]]
                geotransforms[row[0].strip()] = Geotransform(
                    xmin=values[0], xres=values[1], ymax=values[3], yres=abs(values[5]),
                    srid=int(float(row[7])),
                )  # fmt: skip
                if not geotransforms[row[0].strip()].srid and wkt:
                    geotransforms[row[0].strip()] = dataclasses.replace(
                        geotransforms[row[0].strip()], wkt=wkt
                    )
            except ValueError as error:
                raise DatasetError(f"{path}:{line_number}: {error}") from error
    return geotransforms


def write_geotransforms(root: str, geotransforms: Mapping[str, Geotransform]) -> None:
    """Writes `geotransforms.csv`, and `crs.wkt` where tiles have a CRS without EPSG code.

    Raises:
      DatasetError: if tiles without EPSG code have different CRSs (one `crs.wkt` holds one).
    """
    wkts = {g.wkt for g in geotransforms.values() if not g.srid and g.wkt}
    if len(wkts) > 1:
        raise DatasetError(
            f"{root}: tiles in {len(wkts)} different CRSs without EPSG code; a dataset root "
            "keeps one (crs.wkt): warp the tiles onto one CRS first"
        )
    if wkts:
        with files.atomic_text(os.path.join(root, CRS_FILE)) as handle:
            handle.write(wkts.pop() + "\n")
    with files.atomic_text(os.path.join(root, "geotransforms.csv")) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for tileid, g in geotransforms.items():
            writer.writerow([tileid, g.xmin, g.xres, 0, g.ymax, 0, -abs(g.yres), g.srid])


def prepare_root(root: str, datadirs: Sequence[str], overwrite: bool) -> None:
    """Makes `root` ready for a new dataset: refuses a non-empty folder unless `overwrite`.

    With `overwrite`, removes only what a dataset writer creates (dataset.ini, classes.txt,
    geotransforms.csv, tileids/ and the given record folders): stale records of a larger grid
    must not survive, but a user's other files in the folder stay.
    """
    if os.path.isdir(root) and os.listdir(root):
        if not overwrite:
            raise FileExistsError(
                f"{root} is not empty; pass overwrite=True (--overwrite) to replace its dataset"
            )
        for name in ("dataset.ini", "classes.txt", "geotransforms.csv", CRS_FILE):
            if os.path.isfile(os.path.join(root, name)):
                os.remove(os.path.join(root, name))
        for name in ["tileids", *datadirs]:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    os.makedirs(root, exist_ok=True)


_STAGING = ".{name}.partial-{pid}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staged_root(root: str, overwrite: bool) -> Iterator[str]:
    """Yields an empty folder beside `root` to write a whole dataset into, and moves it into
    `root` once the block ends without error (dataset.ini last); on an error it is removed, so
    a failed run leaves `root` as it was.

    Refuses a non-empty `root` before any work unless `overwrite` (see `prepare_root`). Staging
    folders of runs that were killed (their process is gone) are removed first.
    """
    if os.path.isdir(root) and os.listdir(root) and not overwrite:
        raise FileExistsError(
            f"{root} is not empty; pass overwrite=True (--overwrite) to replace its dataset"
        )
    parent, name = os.path.split(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    prefix = _STAGING.format(name=name, pid="")
    for stale in os.listdir(parent):
        pid = stale[len(prefix) :]
        if stale.startswith(prefix) and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    staging = os.path.join(parent, _STAGING.format(name=name, pid=os.getpid()))
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        yield staging
        entries = sorted(os.listdir(staging), key=lambda entry: entry == "dataset.ini")
        prepare_root(root, [e for e in entries if os.path.isdir(os.path.join(staging, e))],
                     overwrite)  # fmt: skip
        for entry in entries:
            os.replace(os.path.join(staging, entry), os.path.join(root, entry))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def find_tile_file(root: str, section: DatasetSection, tileid: str) -> str | None:
    """The record file of a tile in a section (`.tfrecord.gz` or `.tfrecord`), or None."""
    for suffix in RECORD_SUFFIXES:
        path = os.path.join(root, section.datadir, f"{tileid}{suffix}")
        if os.path.isfile(path):
            return path
    return None


def find_tile_files(
    root: str, section: DatasetSection, tileids: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Record files for the tile ids that exist in a section, and the ids that have no file.

    The original dataset lists tile ids that have no record, so the caller uses the intersection
    and reports how many were missing.
    """
    folder = os.path.join(root, section.datadir)
    if not os.path.isdir(folder):
        raise DatasetError(f"{folder}: datadir of section [{section.name}] does not exist")
    paths, missing = [], []
    for tileid in tileids:
        path = find_tile_file(root, section, tileid)
        if path is None:
            missing.append(tileid)
        else:
            paths.append(path)
    return paths, missing
