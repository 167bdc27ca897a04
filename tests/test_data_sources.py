"""Data sources: a local copy reads like the generated one; a failed Kaggle download is one clear line."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from worker.config import RunConfig, load_config
from worker.data import PreparedData, load_prepared
from worker.data.sources import DataSourceError, locate_dataset


def _config(smoke_config: RunConfig, **overrides: object) -> RunConfig:
    return load_config("iu-xray", {"paths.var_dir": smoke_config.paths.var_dir, "data.image_size": 32, **overrides})


def test_offline_kaggle_fails_with_one_line_naming_the_ways_out(
    smoke_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(handle: str) -> str:
        raise ConnectionError(f"Failed to resolve 'www.kaggle.com' for {handle}\nretries exhausted")

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=offline))
    with pytest.raises(DataSourceError) as info:
        load_prepared(_config(smoke_config))
    message = str(info.value)
    assert "\n" not in message
    assert "raddar/chest-xrays-indiana-university" in message and "ConnectionError" in message
    assert "--data-dir PATH" in message and "data.source=local" in message and "--preset smoke" in message


def test_kaggle_download_is_used_when_it_works(
    smoke_config: RunConfig, smoke_prepared: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def download(handle: str) -> str:
        calls.append(handle)
        return str(smoke_prepared.root)

    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(dataset_download=download))
    location = locate_dataset(_config(smoke_config))
    assert calls == ["raddar/chest-xrays-indiana-university"]
    assert location.source == "kaggle" and location.root == smoke_prepared.root
    assert location.prepared_dir.is_relative_to(smoke_config.var_path("data", "prepared"))


def test_local_copy_reads_like_the_generated_dataset(smoke_config: RunConfig, smoke_prepared: PreparedData) -> None:
    config = _config(smoke_config, **{"data.source": "local", "data.data_dir": str(smoke_prepared.root)})
    prepared = load_prepared(config)
    expected = smoke_prepared.planted.expected_counts("Frontal", "impression")
    assert {k: prepared.counts[k] for k in expected} == expected
    assert prepared.split("train").images.shape[1:] == (32, 32)
    # The manifest and caches went under var/, not into the (possibly read-only) data folder.
    assert Path(prepared.artifacts["split_manifest"]).is_relative_to(smoke_config.var_path("data", "prepared"))


def test_data_dir_wins_over_the_kaggle_download(smoke_config: RunConfig, smoke_prepared: PreparedData) -> None:
    location = locate_dataset(_config(smoke_config, **{"data.data_dir": str(smoke_prepared.root)}))
    assert location.source == "local"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"data.source": "local"}, "needs data.data_dir"),
        ({"data.source": "local", "data.data_dir": "/nonexistent/iu-xray"}, "does not exist"),
        ({"data.source": "local", "data.data_dir": "/"}, "indiana_reports.csv is missing"),
    ],
)
def test_bad_local_source_is_a_clear_error(smoke_config: RunConfig, overrides: dict[str, str], match: str) -> None:
    with pytest.raises(Exception, match=match) as info:
        locate_dataset(_config(smoke_config, **overrides))
    assert "\n" not in str(info.value)
