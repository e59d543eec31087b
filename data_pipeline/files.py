"""Atomic file writes: a file appears complete under its name, or not at all.

Everything the package writes that a reader (or a resumed run) may pick up goes through here:
the content is written under a temporary name beside the target and renamed over it, so a crash
or a kill leaves the previous file (or none), never half of one. Paths may be local or anything
`tf.io.gfile` understands (TensorFlow is imported only for the latter).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any


def _gfile(path: str):
    """tf.io.gfile for remote paths (gs://, s3://, ...); None for local ones (no TF import)."""
    if "://" not in path:
        return None
    import tensorflow as tf  # noqa: PLC0415 - only remote paths need it

    return tf.io.gfile


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path to write; renamed to `path` on success, removed on failure.

    The parent folder is created if needed.
    """
    gfile = _gfile(path)
    parent = os.path.dirname(path)
    if parent and gfile:
        gfile.makedirs(parent)
    elif parent:
        os.makedirs(parent, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        yield temporary
        if gfile:
            gfile.rename(temporary, path, overwrite=True)
        else:
            os.replace(temporary, path)
    finally:
        if gfile and gfile.exists(temporary):
            gfile.remove(temporary)
        elif not gfile and os.path.exists(temporary):
            os.remove(temporary)


@contextlib.contextmanager
def atomic_text(path: str) -> Iterator[Any]:
    """Like `open(path, "w")` for text, but the file appears only when the block succeeds."""
    gfile = _gfile(path)
    with atomic_path(path) as temporary:
        if gfile:
            with gfile.GFile(temporary, "w") as handle:
                yield handle
        else:
            with open(temporary, "w", encoding="utf-8", newline="") as handle:
                yield handle


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_text(path) as handle:
        handle.write(text)


def write_json(path: str, content: Any, indent: int | None = 2) -> None:
    """Writes `content` as JSON (with a final newline) to `path` atomically."""
    write_text(path, json.dumps(content, indent=indent) + "\n")


def exists(path: str) -> bool:
    """Whether `path` exists (local, or remote through tf.io.gfile)."""
    gfile = _gfile(path)
    return gfile.exists(path) if gfile else os.path.exists(path)


def read_text(path: str) -> str:
    """The text content of `path` (local, or remote through tf.io.gfile)."""
    gfile = _gfile(path)
    if gfile:
        with gfile.GFile(path) as handle:
            return handle.read()
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def read_json(path: str) -> Any:
    """The JSON content of `path` (local, or remote through tf.io.gfile).

    Raises:
        ValueError: the file is not valid JSON (names the file).
    """
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
