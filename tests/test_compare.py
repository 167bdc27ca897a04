"""The comparison job: parent, children, canvas through a real worker, and the report read from SQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobs_fixtures import Worker, run_cli, smoke_worker_env
from sqlalchemy import select

from db.models import Experiment, Job, Metric
from jobs import service
from jobs.core.database import dispose_engines, transaction
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.settings import reset_settings
from jobs.core.stages import Stage, StageParams
from jobs.execution.refs import JobRefError, resolve_job_refs
from jobs.pipelines.plan import ComparePlan, create_plan, plan_runs
from jobs.pipelines.report import report_stage
from worker.config import load_config
from worker.recorder import MemoryRecorder

LORA, QLORA = {"peft.method": "lora"}, {"peft.method": "qlora"}


def _request(with_generation: bool = False) -> SubmitRequest:
    return SubmitRequest(stage=Stage.compare, preset="smoke", params=StageParams(with_generation=with_generation))


def _plan(request: SubmitRequest) -> ComparePlan:
    config = load_config("smoke").to_dict()
    return create_plan(request, config, plan_runs(request, config), with_generation=request.params.with_generation)


def _children(parent_id: int) -> list[Job]:
    with transaction() as session:
        return list(session.scalars(select(Job).where(Job.parent_id == parent_id).order_by(Job.id)))


@pytest.mark.usefixtures("job_env")
def test_plan_links_children_and_differs_only_in_peft_method():
    plan = _plan(_request(with_generation=True))
    children = _children(plan.parent_id)
    assert [c.stage for c in children] == [
        "prepare-data", "train", "train-full", "evaluate", "train", "train-full", "evaluate", "report",
    ]  # fmt: skip
    assert [c.id for c in children] == plan.child_ids()
    assert all(c.state == JobState.QUEUED.value for c in children)
    lora, qlora = (c.config for c in children if c.stage == "train")
    assert lora["peft"]["method"] == "lora" and qlora["peft"]["method"] == "qlora"
    assert {**lora, "peft": None} == {**qlora, "peft": None}
    train_full = next(c for c in children if c.stage == "train-full")
    assert train_full.params["siglip_checkpoint"] == f"job:{plan.branch(**LORA).steps[0][1]}"
    assert service.get_job(plan.parent_id).state is JobState.RUNNING


@pytest.mark.usefixtures("job_env")
def test_a_job_reference_resolves_only_to_a_succeeded_checkpoint():
    plan = _plan(_request())
    train_id = plan.branch(**LORA).steps[0][1]
    with pytest.raises(JobRefError, match=f"input job {train_id} ended QUEUED"):
        resolve_job_refs({"siglip_checkpoint": f"job:{train_id}"})
    with transaction() as session:
        session.get(Job, train_id).state = JobState.SUCCEEDED.value
        session.add(
            Experiment(
                job_id=train_id, stage="train", status="succeeded", config_hash="h", checkpoint_path="/ck/best.ckpt"
            )
        )
    assert resolve_job_refs({"siglip_checkpoint": f"job:{train_id}", "split": "test"}) == {
        "siglip_checkpoint": "/ck/best.ckpt",
        "split": "test",
    }


@pytest.mark.usefixtures("job_env")
def test_cancelling_the_parent_cancels_it_and_its_queued_children():
    plan = _plan(_request())
    assert service.cancel(plan.parent_id).state is JobState.CANCELLED
    assert {c.state for c in _children(plan.parent_id)} == {JobState.CANCELLED.value}


def _record(job_id: int, method: str, metrics: dict, val_losses: list[float]) -> None:
    with transaction() as session:
        session.get(Job, job_id).state = JobState.SUCCEEDED.value
        experiment = Experiment(
            job_id=job_id, stage="train", peft_method=method, status="succeeded", config_hash="h", metrics=metrics
        )
        session.add(experiment)
        session.flush()
        for epoch, loss in enumerate(val_losses):
            session.add(Metric(experiment_id=experiment.id, split="val", epoch=epoch, step=None,
                               name="val_loss", value=loss))  # fmt: skip


@pytest.mark.usefixtures("job_env")
def test_report_job_reads_the_rows_it_was_given_and_settles_the_parent(tmp_path):
    plan = _plan(_request())
    lora = {"train_time_s": 80.0, "samples_per_s": 64.0, "peak_gpu_mem_mb": 5000.0, "i2t_recall@1": 0.5}
    qlora = {"train_time_s": 100.0, "samples_per_s": 48.0, "peak_gpu_mem_mb": 3000.0, "i2t_recall@1": 0.45}
    _record(plan.branch(**LORA).steps[0][1], "lora", lora, [1.0, 0.8])
    _record(plan.branch(**QLORA).steps[0][1], "qlora", qlora, [1.1, 0.9])

    config = load_config("smoke", {"paths.run_dir": str(tmp_path / "report")})
    result = report_stage(config, MemoryRecorder(), compare_job=plan.parent_id)

    report = json.loads(Path(result.artifacts["json"]).read_text())
    table = {row["metric"]: row for row in report["table"]}
    assert set(table) == set(lora)
    for metric in lora:
        assert table[metric]["cells"][0]["mean"] == pytest.approx(lora[metric])
        assert table[metric]["cells"][1]["mean"] == pytest.approx(qlora[metric])
        assert table[metric]["ratio"] == pytest.approx(qlora[metric] / lora[metric])
    train_ids = {m: plan.branch(**cell).steps[0][1] for m, cell in (("LoRA", LORA), ("QLoRA", QLORA))}
    assert {c["label"]: c["experiments"]["42"]["train"]["job_id"] for c in report["cells"]} == train_ids
    assert report["curves"]["QLoRA"]["val_loss"] == [[0, 1.1], [1, 0.9]]
    assert ("Peak GPU memory, allocated (MB): QLoRA 3,000.0 against LoRA 5,000.0, 40% lower; one seed, not a "
            "conclusion.") in report["conclusions"]  # fmt: skip
    parent = service.get_job(plan.parent_id)
    # prepare-data never ran in this test, so the parent ends FAILED naming it, with the report attached.
    assert parent.state is JobState.FAILED and "seed 42 prepare-data" in parent.error
    assert report["missing"] == [f"seed 42 prepare-data: job {plan.prepare_ids[0]} QUEUED: did not finish"]
    assert parent.artifacts["html"] == result.artifacts["html"]


@pytest.mark.slow
def test_compare_with_three_seeds_through_a_worker_on_the_embedded_default(
    smoke_prepared, smoke_config, tmp_path, monkeypatch
):
    env = smoke_worker_env(smoke_config, tmp_path, monkeypatch)
    worker = Worker(env, fake=False, name="compare")
    try:
        worker.wait_ready()
        completed = run_cli(
            env, "submit", "compare", "--preset", "smoke", "--epochs", "2", "--seeds", "3",
            "--set", "train.limit_train_batches=2", "--wait", "--json", timeout=500,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr + worker.output()[-4000:]
    finally:
        worker.stop()
    parent = json.loads(completed.stdout)
    assert parent["stage"] == "compare" and parent["state"] == "SUCCEEDED"
    children = service.get_job(parent["id"]).children
    # One data preparation for every seed (the split has a seed of its own), one training per method and seed.
    assert sorted(c.stage for c in children) == ["prepare-data"] + ["report"] + ["train"] * 6
    assert all(c.state is JobState.SUCCEEDED and c.parent_id == parent["id"] for c in children)

    report = json.loads(Path(parent["artifacts"]["json"]).read_text())
    report_job = next(c for c in children if c.stage == "report")
    assert report["compare_job_id"] == parent["id"] and report["report_job_id"] == report_job.id
    assert report["missing"] == [] and len(report["seeds"]) == 3
    experiments = service.list_experiments(stage="train")
    table = {row["metric"]: row for row in report["table"]}
    for metric in ("train_time_s", "samples_per_s", "peak_ram_mb", "best_val_loss", "i2t_recall@1"):
        for index, method in enumerate(("lora", "qlora")):
            values = {e.id: e.metrics[metric] for e in experiments if e.peft_method == method}
            cell = table[metric]["cells"][index]
            assert cell["n"] == 3 and sorted(cell["experiment_ids"]) == sorted(values)
            assert cell["mean"] == pytest.approx(sum(values.values()) / 3)
            assert cell["low"] <= cell["mean"] <= cell["high"]
        difference = table[metric]["difference"]
        # Recall@1 pairs the two methods image by image (the train stage writes per-image hits).
        over = "validation images x 3 seeds (paired bootstrap)" if metric == "i2t_recall@1" else "3 paired seeds (t)"
        assert difference["over"].endswith(over)
        assert difference["significant"] is (difference["low"] > 0 or difference["high"] < 0)
    # The conclusion on validation loss follows its interval.
    loss = table["best_val_loss"]["difference"]
    line = next(line for line in report["conclusions"] if line.startswith("Best validation loss"))
    assert ("no significant difference" in line) is (not loss["significant"])
    assert len(report["curves"]["LoRA"]["val_loss"]) == 2
    dispose_engines()
    reset_settings()



RETRIEVAL = [f"{d}_recall@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]
HITS = [f"{p}{d}_hit@1" for p in ("", "base_") for d in ("i2t", "t2i")]
# What evaluate records: every metric once per protocol (the second under its name) and baseline (under its prefix).
GENERATION_NAMES = [q + b for q in ("", "r2gen_") for b in ("", "template_", "nn_finetuned_", "nn_base_")]
GENERATION = ("bleu4", "rougeL", "meteor", "coco_cider")
BASELINE_PREFIX = {"base": "base_", "template": "template_", "nn_finetuned": "nn_finetuned_", "nn_base": "nn_base_"}


def _write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _finish(job_id: int, stage: str, method: str, metrics: dict, artifacts: dict, *, metric_rows: bool) -> None:
    """An experiment row as the runner leaves it; with metric_rows, the metric rows its recorder wrote."""
    from jobs.execution.recorder import DatabaseRecorder

    with transaction() as session:
        session.get(Job, job_id).state = JobState.SUCCEEDED.value
        experiment = Experiment(job_id=job_id, stage=stage, peft_method=method, status="succeeded", config_hash="h",
                                metrics=metrics, artifacts=artifacts)  # fmt: skip
        session.add(experiment)
        session.flush()
        experiment_id = experiment.id
    if metric_rows:
        DatabaseRecorder(job_id, experiment_id).log_metrics(metrics, split="test")


def _record_branch(plan: ComparePlan, cell: dict, folder: Path, rng) -> None:
    """train and evaluate rows of one branch with random values, their per-item files, as the stages write them."""
    method = cell["peft.method"]
    train_id, _, evaluate_id = (job_id for _, job_id in plan.branch(**cell).steps)
    hits = [{"image": f"img{i}.png", **{h: float(rng.random() < 0.5) for h in HITS}} for i in range(20)]
    train = {p + m: float(rng.random()) for p in ("", "base_") for m in RETRIEVAL}
    train |= {h.replace("hit", "recall"): sum(row[h] for row in hits) / len(hits) for h in HITS}  # their means
    # The base-model metrics are on the experiment row only (no metric rows without an epoch).
    val_hits = _write_jsonl(folder / f"hits-{method}.jsonl", hits)
    _finish(train_id, "train", method, train, {"val_hits": val_hits}, metric_rows=False)
    names = [n + k for n in GENERATION_NAMES for k in ("bleu4", "rougeL")]
    studies = [{"uid": f"s{i}", **{name: float(rng.random()) for name in names}} for i in range(25)]
    evaluate = {n + m: float(rng.random()) for n in GENERATION_NAMES for m in GENERATION}
    predictions = _write_jsonl(folder / f"predictions-{method}.jsonl", studies)
    _finish(evaluate_id, "evaluate", method, evaluate, {"predictions": predictions}, metric_rows=True)


def _served_value(experiment_id: int, stage: str, name: str) -> float:
    """What `jobs results` shows for one metric of one run (and `jobs metrics ID`, where the stage wrote rows);
    a per-study mean is the mean of the predictions file the run's row names."""
    import numpy as np

    experiment = next(e for e in service.list_experiments() if e.id == experiment_id)
    if "study_" in name:
        lines = Path(experiment.artifacts["predictions"]).read_text().splitlines()
        return float(np.mean([json.loads(line)[name.replace("study_", "")] for line in lines]))
    value = experiment.metrics[name]
    if stage == "evaluate":
        assert [m.value for m in service.experiment_metrics(experiment_id) if m.name == name] == [pytest.approx(value)]
    return value


@pytest.mark.usefixtures("job_env")
def test_every_baseline_number_in_the_report_is_what_jobs_results_and_jobs_metrics_return(tmp_path):
    import numpy as np

    from worker.report.metrics import fmt

    plan = _plan(_request(with_generation=True))
    rng = np.random.default_rng(3)
    for cell in (LORA, QLORA):
        _record_branch(plan, cell, tmp_path, rng)
    config = load_config("smoke", {"paths.run_dir": str(tmp_path / "report")})
    result = report_stage(config, MemoryRecorder(), compare_job=plan.parent_id)
    report = json.loads(Path(result.artifacts["json"]).read_text())
    page = Path(result.artifacts["markdown"]).read_text().splitlines()
    rows = report["baselines"]
    generation = {(r["cell"], r["baseline"], r["protocol"]) for r in rows if r["stage"] == "evaluate"}
    assert generation == {(c, b, p) for c in ("LoRA", "QLoRA") for b in ("template", "nn_finetuned", "nn_base")
                          for p in ("native", "r2gen")}  # fmt: skip
    assert {(r["cell"], r["baseline"]) for r in rows if r["stage"] == "train"} == {("LoRA", "base"), ("QLoRA", "base")}
    for r in rows:
        protocol = "r2gen_" if r["protocol"] == "r2gen" else ""
        theirs = protocol + BASELINE_PREFIX[r["baseline"]] + r["metric"]
        sides = {"model": protocol + r["metric"], "baseline_value": theirs}
        # The table row of this measure, configuration and protocol on the page.
        start = f"| {r['label']} | {r['cell']} | " + (f"{r['protocol']} | " if r["stage"] == "evaluate" else "")
        (line,) = [line for line in page if line.startswith(start)]
        for side, name in sides.items():
            (experiment_id,) = r[side]["experiment_ids"]
            expected = _served_value(experiment_id, r["stage"], name)
            assert r[side]["mean"] == pytest.approx(expected), (r["cell"], r["baseline"], r["protocol"], name)
            assert f"| {fmt(expected, r['decimals'])} |" in line, (line, name)
    # Recall@1/5/10 both ways; 6 generation measures x 3 baselines x 2 protocols; per configuration.
    assert len(rows) == 2 * 6 + 2 * 3 * 2 * 6
