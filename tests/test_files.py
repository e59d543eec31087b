"""Atomic writes: a file appears whole under its name or not at all; failures keep the old one."""

from __future__ import annotations

import json
import os

import pytest

from data_pipeline import files


def test_write_json_and_text_create_folders_and_leave_no_temporary(tmp_path):
    path = str(tmp_path / "a" / "b" / "record.json")
    files.write_json(path, {"x": [1, 2]})
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle) == {"x": [1, 2]}
    files.write_text(path, "replaced\n")
    with open(path, encoding="utf-8") as handle:
        assert handle.read() == "replaced\n"
    assert os.listdir(os.path.dirname(path)) == ["record.json"]


def test_a_failed_write_keeps_the_previous_file_and_removes_the_partial_one(tmp_path):
    path = str(tmp_path / "config.json")
    files.write_json(path, {"version": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with files.atomic_text(path) as handle:
            handle.write('{"version": 2, "half')
            raise RuntimeError("disk full")
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle) == {"version": 1}
    assert os.listdir(tmp_path) == ["config.json"]


def test_atomic_path_serves_writers_that_take_a_file_name(tmp_path):
    path = str(tmp_path / "binary.bin")
    with files.atomic_path(path) as temporary:
        assert temporary != path and not os.path.exists(path)
        with open(temporary, "wb") as handle:
            handle.write(b"\x00\x01")
    with open(path, "rb") as handle:
        assert handle.read() == b"\x00\x01"
    with pytest.raises(ValueError):
        with files.atomic_path(str(tmp_path / "never.bin")) as temporary:
            open(temporary, "wb").close()
            raise ValueError("writer failed")
    assert sorted(os.listdir(tmp_path)) == ["binary.bin"]


def test_read_json_names_a_malformed_file(tmp_path):
    path = str(tmp_path / "score.json")
    files.write_json(path, {"a": [1, 2]})
    assert files.read_json(path) == {"a": [1, 2]}
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"a": [1,')
    with pytest.raises(ValueError, match="score.json: not valid JSON"):
        files.read_json(path)
