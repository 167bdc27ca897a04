"""One settings file for every process: `.env` reaches the environment that libraries and child processes read."""

from __future__ import annotations

import os

from jobs.core.settings import export_env_file


def test_the_env_file_reaches_the_environment_without_overriding_it(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("MEDVL_TEST_FROM_FILE=file\nMEDVL_TEST_SET_BOTH=file\n# MEDVL_TEST_COMMENTED=x\n")
    monkeypatch.delenv("MEDVL_TEST_FROM_FILE", raising=False)
    monkeypatch.setenv("MEDVL_TEST_SET_BOTH", "environment")

    try:
        assert export_env_file(env_file) == ["MEDVL_TEST_FROM_FILE"]
        assert os.environ["MEDVL_TEST_FROM_FILE"] == "file"
        assert os.environ["MEDVL_TEST_SET_BOTH"] == "environment"  # the environment wins
        assert "MEDVL_TEST_COMMENTED" not in os.environ
    finally:
        os.environ.pop("MEDVL_TEST_FROM_FILE", None)


def test_no_env_file_changes_nothing(tmp_path):
    before = dict(os.environ)
    assert export_env_file(tmp_path / ".env") == []
    assert dict(os.environ) == before
