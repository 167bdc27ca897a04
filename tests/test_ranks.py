"""`jobs run --devices 2`: Lightning's DDP launcher re-runs the command line for rank 1; that rank must join
the same job as a follower, not create and record a second one. With an artifacts bucket, every rank gets the
stage's inputs from it, and train-full's validation covers both ranks' shares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobs_fixtures import JobEnv, override, run_cli
from storage_fixtures import start_s3_server, stop_s3_server

from jobs import service
from jobs.core.schemas import JobState
from jobs.core.storage import local_copy
from jobs.execution.artifacts import stage_inputs

pytestmark = pytest.mark.slow


def test_two_cpu_ranks_make_one_job_and_one_experiment(job_env: JobEnv, smoke_prepared, smoke_config):
    env = JobEnv(job_env.root, {**job_env.variables, "MEDVL_VAR_DIR": str(Path(smoke_config.paths.var_dir))})
    completed = run_cli(
        env, "run", "train", "--preset", "smoke", "--devices", "2", "--epochs", "1",
        "--set", "train.limit_train_batches=2", "--json", timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    [line] = completed.stdout.strip().splitlines()  # one result: rank 1 printed nothing
    result = json.loads(line)
    assert result["state"] == "SUCCEEDED" and result["metrics"]["epochs_run"] == 1
    jobs = service.list_jobs()
    assert [(job.id, job.state) for job in jobs] == [(result["job_id"], JobState.SUCCEEDED)]
    assert len(service.list_experiments()) == 1


def test_two_cpu_ranks_train_full_from_the_bucket_and_keep_the_whole_validation_sets_best(
    job_env: JobEnv, smoke_prepared, smoke_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """train-full on two ranks reads its SigLIP checkpoint from the bucket; its best_val_loss is the best
    checkpoint's loss over the whole validation set, each study once, not over rank 0's half of it."""
    from torch.utils.data import DataLoader

    from worker.generation.checkpoint import load_report_model
    from worker.generation.datamodule import ReportDataset, TargetCollator, encode_targets
    from worker.generation.encoder import image_features, load_siglip
    from worker.generation.stage import mean_loss
    from worker.generation.studies import select_studies

    server = start_s3_server(tmp_path / "moto.log")
    try:
        # The CLIs below and this process (which reads the results back) share the bucket.
        override(job_env, monkeypatch, {"MEDVL_VAR_DIR": str(Path(smoke_config.paths.var_dir)),
                                    **server.variables(server.new_bucket())})  # fmt: skip
        siglip = _run_json(job_env, "run", "train", "--preset", "smoke", "--epochs", "1",
                           "--set", "train.limit_train_batches=2")  # fmt: skip
        assert siglip["metrics"]["best_checkpoint"].startswith("s3://")
        # One study a batch: a batch's loss is then its study's, and the loss over a rank's share is the mean
        # over its studies whatever the batching, so the two ranks' mean is comparable with the whole set's.
        full = _run_json(job_env, "run", "train-full", "--preset", "smoke", "--devices", "2",
                         "--siglip-checkpoint", f"job:{siglip['job_id']}", "--set", "generation.epochs=2",
                         "--set", "generation.batch_size=1", "--set", "train.limit_train_batches=4")  # fmt: skip
        metrics = full["metrics"]
        assert metrics["epochs_run"] == 2 and metrics["best_checkpoint"].startswith("s3://")

        with stage_inputs():  # the checkpoint names its SigLIP by bucket URL
            loaded = load_report_model(str(local_copy(metrics["best_checkpoint"])), smoke_config)
            siglip_model = load_siglip(loaded.siglip_checkpoint, "cpu")
        gen = loaded.config.generation
        val = smoke_prepared.split("val")
        studies = select_studies(val)
        features = image_features(siglip_model, studies.images(val), gen)
        targets = encode_targets(loaded.tokenizer, studies.texts, gen.max_target_tokens, loaded.captioner.eos_id)
        dataset = ReportDataset(features, targets)
        collate = TargetCollator(loaded.captioner.pad_id, len(loaded.captioner.start_ids))
        losses = [mean_loss(loaded.captioner, DataLoader([dataset[i]], collate_fn=collate), "cpu")
                  for i in range(len(dataset))]  # fmt: skip
    finally:
        stop_s3_server(server)
    # The premise of an exact comparison: an even count, so DistributedSampler pads no rank with a repeated study.
    assert len(losses) % 2 == 0, len(losses)
    whole = sum(losses) / len(losses)
    rank0 = sum(losses[0::2]) / len(losses[0::2])  # DistributedSampler's share for rank 0, unshuffled
    tolerance = 1e-4 * abs(whole)
    assert abs(rank0 - whole) > tolerance, (rank0, whole)  # the premise: rank 0's half alone would be caught
    assert metrics["best_val_loss"] == pytest.approx(whole, abs=tolerance), (rank0, whole)


def _run_json(env: JobEnv, *args: str) -> dict:
    completed = run_cli(env, *args, "--json", timeout=400)
    assert completed.returncode == 0, completed.stderr[-4000:]
    [line] = completed.stdout.strip().splitlines()
    result = json.loads(line)
    assert result["state"] == "SUCCEEDED", result
    return result
