"""How the extra DDP ranks of a multi-device job start.

Lightning's DDP launcher starts ranks 1..N-1 by re-running this process's command line. For a job that
command line is `jobs run ...` or `jobs worker`, and re-running either would create a second job or start
a second worker. So while a multi-device stage runs, the command line reads `jobs _rank` and the job's
effective config travels in an environment variable (which the launcher passes on); `jobs _rank` runs the
same stage as a follower: no claim and no database writes, since rank 0 reports for every rank.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.core.stages import Stage, stage_function

if TYPE_CHECKING:
    from worker.config import RunConfig

RANK_ENV = "MEDVL_RANK_JOB"
FOLLOWER_COMMAND = "_rank"


def _jobs_script() -> str:
    if Path(sys.argv[0]).name == "jobs":
        return sys.argv[0]
    return shutil.which("jobs") or str(Path(sys.executable).with_name("jobs"))


@contextmanager
def follower_launch(stage: Stage, config: RunConfig, params: dict[str, Any]) -> Iterator[None]:
    """While a stage with train.devices > 1 runs, make re-launched ranks start as `jobs _rank` followers."""
    if config.train.devices <= 1:
        yield
        return
    saved_argv, saved_env = sys.argv[:], os.environ.get(RANK_ENV)
    os.environ[RANK_ENV] = json.dumps({"stage": stage.value, "config": config.to_dict(), "params": params})
    sys.argv = [_jobs_script(), FOLLOWER_COMMAND]
    try:
        yield
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop(RANK_ENV, None)
        else:
            os.environ[RANK_ENV] = saved_env


def run_follower() -> None:
    """Body of `jobs _rank`: the same stage and config as rank 0, reporting nothing itself."""
    from worker.config import RunConfig
    from worker.recorder import MemoryRecorder

    payload = os.environ.get(RANK_ENV)
    if not payload:
        raise RuntimeError(f"`jobs {FOLLOWER_COMMAND}` is started by a multi-device job's rank 0, not by hand")
    from jobs.execution.artifacts import stage_inputs

    job = json.loads(payload)
    config = RunConfig.model_validate(job["config"])
    # The inputs named as rank 0 names them (by bucket URL, from the mirror): the run folder's name hangs on
    # them, and every rank must write into the same one.
    with stage_inputs():
        stage_function(Stage(job["stage"]))(config, MemoryRecorder(), **job["params"])
