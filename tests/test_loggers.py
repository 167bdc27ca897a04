"""`train.loggers`: MLflow (file store) gets the params, per-epoch metrics and the model card of a run;
TensorBoard gets event files with the same per-epoch values. The SQL rows (the recorder) stay complete."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from siglip_fixtures import build_tiny_siglip, fake_splits, tiny_config

from worker.config import ConfigError, load_config
from worker.recorder import MemoryRecorder
from worker.siglip.stage import run_training

EPOCHS = 2


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """One tiny training run with all three loggers, MLflow pointed at a file store by MLFLOW_TRACKING_URI."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("loggers")
    model_dir = build_tiny_siglip(root / "model")
    store = (root / "mlruns").as_uri()
    config = tiny_config(model_dir, root / "run", **{"train.epochs": EPOCHS, "train.loggers": "csv,tensorboard,mlflow"})
    recorder = MemoryRecorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store)
        run_training(config, recorder, fake_splits({"train": 48, "val": 24}))
    torch.set_num_threads(threads)
    return SimpleNamespace(config=config, recorder=recorder, store=store, run_dir=root / "run")


def test_mlflow_file_store_holds_params_per_epoch_metrics_and_the_model_card(logged_run):
    from mlflow.tracking import MlflowClient

    config, recorder = logged_run.config, logged_run.recorder
    client = MlflowClient(tracking_uri=logged_run.store)
    experiment = client.get_experiment_by_name("medvl-peft")
    (run,) = client.search_runs([experiment.experiment_id])
    params = run.data.params
    assert params["peft/method"] == "lora" and params["peft/r"] == str(config.peft.r)
    assert params["train/lr"] == str(config.train.lr) and params["model/siglip"] == config.model.siglip
    val_loss = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)]
    assert val_loss == pytest.approx(recorder.series("val_loss"), rel=1e-6)
    assert len(val_loss) == EPOCHS
    assert len(client.get_metric_history(run.info.run_id, "i2t_recall_at_1")) == EPOCHS  # MLflow refuses '@'
    assert "README.md" in [artifact.path for artifact in client.list_artifacts(run.info.run_id)]
    assert run.info.status == "FINISHED"


def test_tensorboard_writes_event_files_with_the_epoch_values(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recorder, run_dir = logged_run.recorder, logged_run.run_dir
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(path.stat().st_size > 0 for path in events)
    accumulator = EventAccumulator(str(events[0].parent)).Reload()
    values = [event.value for event in accumulator.Scalars("val_loss")]
    assert values == pytest.approx(recorder.series("val_loss"), rel=1e-6)


def test_csv_stays_and_sql_rows_are_unchanged(logged_run):
    recorder, run_dir = logged_run.recorder, logged_run.run_dir
    assert list(Path(run_dir, "logs").rglob("metrics.csv"))
    assert len(recorder.series("val_loss", split="val")) == EPOCHS


def test_mlflow_defaults_to_a_sqlite_store_under_the_var_dir(tmp_path, monkeypatch):
    from worker.tracking import mlflow_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config("smoke", {"paths.var_dir": str(tmp_path)})
    assert mlflow_tracking_uri(config) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_an_unknown_logger_is_refused_with_the_allowed_ones():
    with pytest.raises(ConfigError, match="'csv', 'tensorboard' or 'mlflow'"):
        load_config("smoke", {"train.loggers": "csv,wandb"})


def test_a_comparison_report_goes_to_mlflow_as_artifacts_when_asked(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from worker.tracking import log_report

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    files = [tmp_path / "report.md", tmp_path / "report.html"]
    for path in files:
        path.write_text("LoRA vs QLoRA")
    assert log_report(load_config("smoke"), "report-compare-7", files) is None  # csv only: nothing to do
    run_id = log_report(load_config("smoke", {"train.loggers": "csv,mlflow"}), "report-compare-7", files)
    client = MlflowClient(tracking_uri=store)
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["report.html", "report.md"]
    assert client.get_run(run_id).info.run_name == "report-compare-7"
