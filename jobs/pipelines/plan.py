"""The rows of a comparison or sweep: one parent, and a child job for each step of each run.

    prepare-data [-> prepare-data ...] -> ( train run 1 [-> train-full -> evaluate] )  -> report
                                          ( train run 2 [-> train-full -> evaluate] )
                                          ...

A sweep runs every combination of its grid (grid.py) with every seed; a comparison is the sweep over
``peft.method = lora, qlora``. There is one prepare-data child per distinct data setup (the split has a
seed of its own, so the seeds share it), run one after another before the branches. The branches run in
parallel where workers are free (launch.py sends the canvas); the report runs last. Every child is an
ordinary job row (parent_id = the comparison), so it is claimed, heartbeated, recorded and cancelled like any
other. A child that needs an earlier child's output names it as ``job:<id>`` in its params, which the runner
resolves when the child starts (jobs/execution/refs.py).

The parent is not run by a worker: it is RUNNING from submission until its report job settles it
(settle.py), and the stale-job sweep leaves it alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from db.models import Job, utcnow
from jobs.core.database import transaction
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.stages import Stage
from jobs.execution.refs import job_ref
from jobs.pipelines.grid import Run, expand, grid_for


@dataclass
class Branch:
    """One run of the sweep (a grid point and a seed) and its chain of child jobs."""

    cell: dict[str, Any]
    seed: int
    steps: list[tuple[Stage, int]] = field(default_factory=list)  # [(stage, job id)] in order


@dataclass
class ComparePlan:
    """The parent's id and its children's ids, in the shape of the canvas."""

    parent_id: int
    prepare_ids: list[int] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    report_id: int = 0

    def child_ids(self) -> list[int]:
        branch_ids = [job_id for branch in self.branches for _, job_id in branch.steps]
        return [*self.prepare_ids, *branch_ids, self.report_id]

    def branch(self, **cell: Any) -> Branch:
        """The first branch whose grid point has these values, e.g. plan.branch(**{"peft.method": "lora"})."""
        return next(b for b in self.branches if all(b.cell.get(k) == v for k, v in cell.items()))


def _child(
    session: Any, parent: Job, stage: Stage, params: dict[str, Any], config: dict[str, Any], after: list[int]
) -> int:
    """A QUEUED child row. `after` names the jobs it waits for in the canvas: the sweep (jobs/execution/recovery.py)
    sends a child whose message was lost once those have ended."""
    job = Job(
        stage=stage.value,
        params=params,
        request={"stage": stage.value, "parent_id": parent.id, "after": after},
        config=config,
        state=JobState.QUEUED.value,
        celery_task_id=str(uuid.uuid4()),
        parent_id=parent.id,
    )
    session.add(job)
    session.flush()
    return job.id


def parent_params(request: SubmitRequest, runs: list[Run], *, with_generation: bool) -> dict[str, Any]:
    """What the parent row keeps of what ran, for the report: the grid's keys in order and the seeds,
    whatever flags asked for them."""
    return request.params.for_stage(request.stage) | {
        "with_generation": with_generation,
        "grid": {key: list(dict.fromkeys(str(run.cell[key]) for run in runs)) for key in runs[0].cell},
        "seed_list": list(dict.fromkeys(run.seed for run in runs)),
    }


def create_plan(
    request: SubmitRequest, config: dict[str, Any], runs: list[Run], *, with_generation: bool
) -> ComparePlan:
    """Insert the parent (RUNNING) and every child (QUEUED) in one transaction.

    Each branch's config is its run's: the parent's config with the grid point and the seed set, so data,
    seed and hyperparameters differ between branches only where the grid or the seeds say so.
    """
    with transaction() as session:
        parent = Job(
            stage=request.stage.value,
            params=parent_params(request, runs, with_generation=with_generation),
            request=request.model_dump(mode="json", exclude={"params"}),
            config=config,
            state=JobState.RUNNING.value,
            started_at=utcnow(),
            idempotency_key=request.idempotency_key,
        )
        session.add(parent)
        session.flush()
        # `after` mirrors the canvas below: the prepares one after another, every branch after all of them,
        # the report after everything.
        plan = ComparePlan(parent_id=parent.id)
        prepared: dict[str, int] = {}
        for run in runs:
            if run.data_key() not in prepared:
                after = list(prepared.values())[-1:]
                prepared[run.data_key()] = _child(session, parent, Stage.prepare_data, {}, run.config, after=after)
        plan.prepare_ids = list(prepared.values())
        for run in runs:
            branch = Branch(cell=run.cell, seed=run.seed)
            train_id = _child(session, parent, Stage.train, {}, run.config, after=plan.prepare_ids)
            branch.steps.append((Stage.train, train_id))
            if with_generation:
                full_params = {"siglip_checkpoint": job_ref(train_id)}
                full_id = _child(session, parent, Stage.train_full, full_params, run.config, after=[train_id])
                eval_params = {"checkpoint": job_ref(full_id), "split": "test"}
                eval_id = _child(session, parent, Stage.evaluate, eval_params, run.config, after=[full_id])
                branch.steps += [(Stage.train_full, full_id), (Stage.evaluate, eval_id)]
            plan.branches.append(branch)
        branch_ids = [job_id for branch in plan.branches for _, job_id in branch.steps]
        plan.report_id = _child(
            session, parent, Stage.report, {"compare_job": parent.id}, config, after=[*plan.prepare_ids, *branch_ids]
        )
    return plan


def plan_runs(request: SubmitRequest, config: dict[str, Any]) -> list[Run]:
    """The runs a compare or sweep request asks for; GridError names a bad key, value or size."""
    seeds = request.params.seed_values(int(config["seed"]))
    return expand(
        grid_for(request.stage, request.params),
        seeds,
        preset=request.preset,
        overrides=request.overrides,
        config_path=request.config_path,
    )
