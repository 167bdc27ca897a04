"""Experiment trackers as views of a run: the Lightning loggers `train.loggers` names (csv, tensorboard,
mlflow), and files (model cards, comparison reports) as MLflow artifacts. The SQL tables stay the record."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger

from worker.config import RunConfig

MLFLOW_EXPERIMENT = "medvl-peft"


class RecallNamesMLFlowLogger(MLFlowLogger):
    """MLflow refuses '@' in metric names, and Lightning's logger would drop it (i2t_recall@1 -> i2t_recall1,
    which reads as recall of rank 1 or 11 alike): spell it out as i2t_recall_at_1 instead."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({name.replace("@", "_at_"): value for name, value in metrics.items()}, step)


def build_loggers(config: RunConfig, save_dir: Path, run_name: str) -> list[Logger]:
    """The loggers ``train.loggers`` names, writing under the run folder (MLflow: to MLFLOW_TRACKING_URI,
    else a SQLite store under the var dir shared by all runs). They are views; the SQL tables stay the record."""
    loggers: list[Logger] = []
    for name in config.train.loggers:
        if name == "csv":
            loggers.append(CSVLogger(save_dir, name="logs"))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir, name="tensorboard", default_hp_metric=False))
        elif name == "mlflow":
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or MLFLOW_EXPERIMENT
            uri = mlflow_tracking_uri(config)
            loggers.append(RecallNamesMLFlowLogger(experiment_name=experiment, run_name=run_name, tracking_uri=uri))
    return loggers


def mlflow_tracking_uri(config: RunConfig) -> str:
    """MLFLOW_TRACKING_URI, else a SQLite store shared by every run under the var dir.

    MLflow 3 keeps its file store in maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE=true;
    a user who points MLFLOW_TRACKING_URI at a folder has chosen it, so that choice is honoured here."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        path = config.var_path("mlflow.db").resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def log_artifacts(trainer: L.Trainer, paths: list[Path]) -> None:
    """Files (the model card) as artifacts of the training run in every artifact-keeping logger (MLflow)."""
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            for path in paths:
                logger.experiment.log_artifact(logger.run_id, str(path))


def log_report(config: RunConfig, run_name: str, paths: list[Path]) -> str | None:
    """A run of its own in the MLflow experiment holding ``paths`` (a comparison report and its charts) as
    artifacts, when ``train.loggers`` has mlflow; returns its run id."""
    if "mlflow" not in config.train.loggers:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_tracking_uri(config))
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or MLFLOW_EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=run_name)
    for path in paths:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return run.info.run_id
