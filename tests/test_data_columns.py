"""String columns (worker/data/columns.py) and the prepared index (worker/data/prepared_index.py): the splits
read like lists, are written once, and a later load reads no dataset file."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from worker.config import load_config
from worker.data import load_prepared
from worker.data.columns import StringColumn, StringColumnWriter
from worker.data.layout import REPORTS_CSV
from worker.data.readers import iu_xray

TEXTS = ["lungs clear", "lungs clear", "effusion", "", "héart normal", "effusion"]


def test_a_column_reads_like_the_list_it_was_made_of() -> None:
    column = StringColumn.from_strings(TEXTS)
    assert len(column) == 6 and list(column) == TEXTS and column == TEXTS
    assert column.n_values == 5  # the repeat next to its twin is stored once, the one apart is not
    assert column[4] == "héart normal" and column[-1] == "effusion"
    assert column[1:4].tolist() == TEXTS[1:4]
    assert column.take(np.array([5, 0, 0])).tolist() == ["effusion", "lungs clear", "lungs clear"]
    assert column.take(np.array([True, False, True, False, False, False])).tolist() == ["lungs clear", "effusion"]
    assert column.rows_in({"effusion", "absent"}).tolist() == [False, False, True, False, False, True]
    assert column.equal_ids().tolist() == [0, 0, 1, 2, 3, 1]
    assert column.sha256() == hashlib.sha256("\n".join(TEXTS).encode()).hexdigest()
    with pytest.raises(IndexError):
        column[6]


def test_a_column_written_to_a_file_and_saved_holds_only_its_rows(tmp_path: Path) -> None:
    writer = StringColumnWriter(tmp_path / "texts.bin")
    for text in TEXTS:
        writer.add(text)
    column = writer.finish()
    assert isinstance(column.data, np.memmap) and column.tolist() == TEXTS

    part = column.take(np.array([4, 2, 2]))
    part.save(tmp_path / "saved", "texts")
    loaded = StringColumn.load(tmp_path / "saved", "texts")
    assert loaded.tolist() == ["héart normal", "effusion", "effusion"]
    assert loaded.n_values == 2 and bytes(loaded.data) == "effusionhéart normal".encode()
    assert isinstance(loaded.data, np.memmap)

    every = StringColumn.from_strings(["a", "b", "c"])
    every.save(tmp_path / "saved", "plain")
    assert not (tmp_path / "saved" / "plain.codes.npy").exists()  # row i is value i: no codes
    assert StringColumn.load(tmp_path / "saved", "plain").tolist() == ["a", "b", "c"]
    StringColumn.from_strings([]).save(tmp_path / "saved", "empty")
    assert StringColumn.load(tmp_path / "saved", "empty").tolist() == []


def test_a_second_load_reads_the_index_not_the_dataset(tmp_path: Path) -> None:
    config = load_config("smoke", {"paths.var_dir": str(tmp_path / "var"), "model.build_tiny_fixtures": "false"})
    first = load_prepared(config)
    index = Path(first.artifacts["prepared_index"])
    assert (index / "index.json").is_file() and not list(index.parent.parent.glob(".parse-*"))

    def no_parse(root: Path, options) -> None:
        raise AssertionError("the dataset was read again")

    object.__setattr__(iu_xray.IU_XRAY, "parse", no_parse)
    try:
        again = load_prepared(config)
        assert again.counts == first.counts and again.artifacts == first.artifacts
        for name, split in first.splits.items():
            other = again.split(name)
            assert other.uids == split.uids and other.texts == split.texts and other.filenames == split.filenames
            assert np.array_equal(np.asarray(other.images), np.asarray(split.images))
            assert isinstance(other.texts.data, np.memmap)

        # Another data setting is another index: the dataset is read for it.
        with pytest.raises(AssertionError, match="read again"):
            load_prepared(config.model_copy(update={"data": config.data.model_copy(update={"target": "findings"})}))
    finally:
        object.__setattr__(iu_xray.IU_XRAY, "parse", iu_xray.parse_dataset)

    # A changed dataset file is another index too; a deleted image cache makes the index unreadable.
    reports = Path(first.root) / REPORTS_CSV
    stamp = reports.stat().st_mtime_ns + 10**9
    os.utime(reports, ns=(stamp, stamp))
    rebuilt = load_prepared(config)
    assert Path(rebuilt.artifacts["prepared_index"]) != index and rebuilt.counts == first.counts
    Path(rebuilt.artifacts["cache_val"]).unlink()
    assert load_prepared(config).split("val").uids == first.split("val").uids  # cache decoded again


def test_the_mimic_reader_keeps_its_columns_in_the_scratch_folder(tmp_path: Path) -> None:
    """At scale nothing per image may grow in the reader's memory: every column is a file in the scratch folder."""
    from worker.data.readers import ReadOptions, reader_for
    from worker.data.synthetic_mimic import generate_mimic

    root = tmp_path / "mimic"
    generate_mimic(root, 300, size=16, workers=1, record_studies=False, quiet=True)
    in_memory = reader_for("mimic-cxr").parse(root, ReadOptions("findings"))
    parsed = reader_for("mimic-cxr").parse(root, ReadOptions("findings", scratch=tmp_path / "scratch"))
    columns = [parsed.images.filename, parsed.studies.uid, parsed.studies.text, parsed.listed.filename]
    for column in columns:
        assert isinstance(column.data, np.memmap) and isinstance(column.offsets, np.memmap)
    for array in (parsed.images.study, parsed.images.projection, parsed.studies.official, parsed.listed.study):
        assert isinstance(array, np.memmap)
    assert parsed.rows == in_memory.rows and parsed.counts == in_memory.counts
    assert parsed.report_uids == in_memory.report_uids and parsed.official_split == in_memory.official_split


def test_a_killed_data_stage_leaves_nothing_behind_on_its_host(tmp_path: Path) -> None:
    config = load_config("smoke", {"paths.var_dir": str(tmp_path / "var"), "model.build_tiny_fixtures": "false"})
    prepared_dir = Path(load_prepared(config).artifacts["prepared_dir"])
    host = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()  # its id is no running process's (ids are not reused this soon)
    dead = dead.pid
    abandoned = [prepared_dir / f".parse-{host}-{dead}", prepared_dir / "index" / f".abc.tmp-{host}-{dead}"]
    kept = [prepared_dir / f".parse-other-host-{dead}", prepared_dir / f".parse-{host}-{os.getppid()}"]  # running
    for folder in abandoned + kept:
        (folder / "uid.bin").parent.mkdir(parents=True)
        (folder / "uid.bin").write_bytes(b"x")
    for index in (prepared_dir / "index").iterdir():
        if not index.name.startswith("."):
            shutil.rmtree(index)  # the next load reads the dataset, and first sweeps this host's leftovers
    load_prepared(config)
    assert [folder.exists() for folder in abandoned] == [False, False]
    assert [folder.exists() for folder in kept] == [True, True]
