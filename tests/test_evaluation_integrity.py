"""An evaluation scores the split its checkpoint was trained with, never the model's own training studies.

The sequence a user runs: `train` and `train-full` with one seed (and here a split seed of their own), then
`evaluate` without either. The checkpoint carries its data and split (worker/data/identity.py), so the
evaluation scores that split's test studies; another dataset folder is scored only when named, and its
studies the model trained on are left out and counted.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from jobs_fixtures import JobEnv, run_cli

from worker.checkpoint_info import RUN_CONFIG_KEY
from worker.config import RunConfig, load_config
from worker.data.identity import DATA_IDENTITY_KEY, scoring_plan, trained_data
from worker.data.layout import PROJECTIONS_CSV, REPORTS_CSV


def _stage(env: JobEnv, *args: str) -> dict:
    completed = run_cli(env, "run", *args, "--preset", "smoke", "--json", timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _scored_uids(result: dict) -> set[str]:
    lines = Path(result["artifacts"]["predictions"]).read_text().splitlines()
    return {json.loads(line)["uid"] for line in lines}


def _copy_without_studies(root: Path, out: Path, drop: int) -> Path:
    """The dataset at ``root`` without its first ``drop`` studies: a copy whose draw of the split differs."""
    out.mkdir(parents=True)
    with (root / REPORTS_CSV).open(newline="", encoding="utf-8-sig") as f:
        reports = list(csv.reader(f))
    dropped = {row[0] for row in reports[1 : drop + 1]}
    for name in (REPORTS_CSV, PROJECTIONS_CSV):
        with (root / name).open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
        with (out / name).open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([rows[0], *(row for row in rows[1:] if row[0] not in dropped)])
    (out / "images").symlink_to(root / "images")
    return out


@pytest.mark.slow
def test_evaluate_without_the_seeds_scores_the_checkpoints_own_test_split(
    job_env: JobEnv, smoke_config: RunConfig, smoke_prepared
):
    var = Path(smoke_config.paths.var_dir)
    env = JobEnv(job_env.root, {**job_env.variables, "MEDVL_VAR_DIR": str(var)})
    siglip = _stage(env, "train", "--seed", "7", "--split-seed", "7", "--epochs", "2",
                    "--set", "train.limit_train_batches=2")  # fmt: skip
    generator = _stage(env, "train-full", "--seed", "7", "--siglip-checkpoint", siglip["metrics"]["best_checkpoint"],
                       "--set", "generation.epochs=2")  # fmt: skip
    checkpoint = generator["metrics"]["best_checkpoint"]

    evaluation = _stage(env, "evaluate", "--checkpoint", checkpoint)  # neither --seed nor --split-seed

    manifest = json.loads((smoke_prepared.root / "prepared" / "splits-seed7-70-10-20.json").read_text())["uids"]
    scored = _scored_uids(evaluation)
    assert scored and scored <= set(manifest["test"])
    assert not scored & set(manifest["train"])
    metrics = evaluation["metrics"]
    assert (metrics["train_overlap"], metrics["train_overlap_excluded"], metrics["split_seed"]) == (0, 0, 7)
    # What the caller's default split would have scored: largely the model's own training studies.
    default_test = set(smoke_prepared.split("test").uids)
    assert len(default_test & set(manifest["train"])) > len(default_test) // 2

    # Another copy of the data, named on purpose: its draw differs, and the studies the model trained on leave.
    other = _copy_without_studies(smoke_prepared.root, var / "data" / "copy-without-20", drop=20)
    elsewhere = _stage(env, "evaluate", "--checkpoint", checkpoint, "--data-dir", str(other))
    metrics = elsewhere["metrics"]
    assert metrics["other_dataset"] == 1 and metrics["train_overlap"] == 0
    assert metrics["train_overlap_excluded"] > 0
    scored = _scored_uids(elsewhere)
    assert scored and not scored & set(manifest["train"])
    assert metrics["num_samples"] == len(scored)


def _header_file(path: Path, header: dict) -> Path:
    torch.save({"state_dict": {}, "lora_targets": [], **header}, path)
    return path


def test_a_checkpoint_without_a_data_record_is_read_with_the_split_its_seed_drew(tmp_path: Path):
    recorded = load_config("smoke", {"seed": "7"}).to_dict()
    del recorded["data"]["split_seed"]  # written before the split had a seed of its own
    trained = trained_data({RUN_CONFIG_KEY: recorded})
    assert trained.data["split_seed"] == 7 and trained.train_uids is None


def test_a_moved_copy_of_the_checkpoints_dataset_is_the_same_dataset(tmp_path: Path, smoke_config, smoke_prepared):
    from worker.data.identity import data_identity

    identity = data_identity(smoke_config, smoke_prepared.root, smoke_prepared.split("train").uids)
    checkpoint = _header_file(tmp_path / "c.ckpt", {RUN_CONFIG_KEY: smoke_config.to_dict(),
                                                    DATA_IDENTITY_KEY: identity})  # fmt: skip
    var = Path(smoke_config.paths.var_dir)
    moved = var / "data" / "moved-copy"
    moved.mkdir()
    for name in (REPORTS_CSV, PROJECTIONS_CSV):
        shutil.copy(smoke_prepared.root / name, moved / name)
    (moved / "images").symlink_to(smoke_prepared.root / "images")
    caller = load_config("smoke", {"paths.var_dir": str(var), "data.data_dir": str(moved), "seed": "3"})
    plan = scoring_plan(caller, checkpoint)
    assert not plan.other_dataset and plan.scored.data.source == "synthetic"
    assert plan.train_uids == frozenset(smoke_prepared.split("train").uids)
    changed = _copy_without_studies(smoke_prepared.root, var / "data" / "changed-copy", drop=5)
    plan = scoring_plan(caller.model_copy(update={"data": caller.data.model_copy(update={"data_dir": str(changed)})}),
                        checkpoint)  # fmt: skip
    assert plan.other_dataset and plan.scored.data.data_dir == str(changed)
    assert plan.scored.data.split_seed == smoke_config.data.split_seed


def test_the_report_names_the_split_and_shows_train_overlap():
    from worker.report import render
    from worker.report.analysis import compare_runs

    rows = [
        {"id": i, "job_id": i, "stage": stage, "peft_method": method, "status": "succeeded", "seed": seed,
         "metrics": {"train_overlap": 0, "bleu4": 0.1 + seed / 100, "best_val_loss": 1.0},
         "cell": {"peft.method": method}, "per_item": None}
        for i, (method, seed, stage) in enumerate(
            (m, s, st) for m in ("lora", "qlora") for s in (1, 2) for st in ("train", "evaluate")
        )
    ]  # fmt: skip
    split = load_config("smoke").data.describe_split()
    page = render.markdown(compare_runs(rows, [], split=split))
    assert "Every seed used the same data split (split seed 42, 70/10/20 train/val/test by study)." in page
    row = "| Scored studies the model trained on (count, goal 0) | 0"
    assert any(line.startswith(row) for line in page.splitlines())


def test_the_callers_split_settings_never_reach_what_a_checkpoint_is_read_against(tmp_path: Path, smoke_config):
    recorded = load_config("smoke", {"data.split_seed": "7", "seed": "7"})
    identity = {"data": recorded.data.model_dump(mode="json", exclude={"num_workers", "cache_workers"}),
                "root": None, "fingerprint": None, "train_uids": ["1", "2"]}  # fmt: skip
    checkpoint = _header_file(tmp_path / "c.ckpt", {RUN_CONFIG_KEY: recorded.to_dict(), DATA_IDENTITY_KEY: identity})
    caller = load_config("smoke", {"paths.var_dir": smoke_config.paths.var_dir, "data.split_seed": "3",
                                   "data.projection": "both", "data.num_workers": "3"})  # fmt: skip
    plan = scoring_plan(caller, checkpoint)
    # predict's similar reports and the baselines read plan.trained; evaluate's studies plan.scored.
    for config in (plan.trained, plan.scored):
        assert (config.data.split_seed, config.data.projection) == (7, "Frontal")
        assert config.data.num_workers == 3  # how to read the data stays the caller's
    assert plan.train_uids == {"1", "2"} and not plan.other_dataset
