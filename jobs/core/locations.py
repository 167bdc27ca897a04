"""Which folders a job may read and write, and the check of a job's every file and model against them.

The same check runs when a request is accepted (CLI or API: a refusal names the key) and again in the
worker just before the stage starts (a row written by an older version, or edited by hand, cannot make a
worker open what a request could not). The rule itself is worker/locations.py.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.core.settings import PROJECT_ROOT, get_settings
from jobs.core.storage import StorageError, is_url, require_bucket

if TYPE_CHECKING:
    from worker.config import RunConfig

CONFIG_DIR = PROJECT_ROOT / "configs"
# Stage params that name a file; a comparison's child names an earlier child's checkpoint as job:<id> instead.
PATH_PARAMS = ("siglip_checkpoint", "checkpoint")
JOB_REFERENCE = re.compile(r"job:[1-9][0-9]{0,9}")
REMEDY = "put it under one of them, or add its folder to MEDVL_DATA_ROOTS"
MISSING_REMEDY = "check the path (a relative one is taken from where you run `jobs`)"


class LocationRefused(ValueError):
    """A value names a file or model outside the allowed roots; `key` is the config key or param."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def data_roots() -> tuple[Path, ...]:
    """Where jobs may open files: the var root, the artifacts folder and MEDVL_DATA_ROOTS."""
    from worker.locations import resolved_roots  # torch-free

    settings = get_settings()
    return resolved_roots([settings.resolved_var_dir(), settings.artifacts_root, *settings.extra_data_roots])


def config_file(raw: str) -> Path:
    """The config file `raw` names (resolved like every path; `configs/` allowed too), or LocationRefused."""
    from worker.locations import location_problem, resolve_local, resolved_roots

    settings = get_settings()
    roots = (*data_roots(), *resolved_roots([CONFIG_DIR]))
    if problem := location_problem("config", raw, "path", roots, settings.resolved_var_dir(), REMEDY):
        raise LocationRefused("config", problem)
    return resolve_local(raw, settings.resolved_var_dir())


def check_job_inputs(config: RunConfig, params: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse (LocationRefused) any file or model of the config or params outside the roots; returns the
    params with each path made the absolute file that was checked, so the stage opens exactly that."""
    from worker.locations import location_problem, named_locations

    roots = data_roots()
    var_root = config.var_path()
    if not any(var_root.resolve().is_relative_to(root) for root in roots):
        raise LocationRefused(
            "paths.var_dir",
            f"paths.var_dir: {str(var_root)!r} is not under the allowed roots ({', '.join(map(str, roots))}); "
            "leave it unset or set MEDVL_VAR_DIR",
        )
    for key, value, kind in named_locations(config):
        if problem := location_problem(key, value, kind, roots, var_root, REMEDY):
            raise LocationRefused(key, problem)
    checked = dict(params)
    for name in PATH_PARAMS:
        value = params.get(name)
        if not isinstance(value, str) or JOB_REFERENCE.fullmatch(value):
            continue
        if is_url(value):  # an artifact in the bucket: only under JOBS_ARTIFACTS_URL
            try:
                require_bucket(value)
            except StorageError as exc:
                raise LocationRefused(f"params.{name}", f"params.{name}: {exc}") from None
            continue
        if problem := location_problem(f"params.{name}", value, "path", roots, var_root, REMEDY):
            raise LocationRefused(f"params.{name}", problem)
        checked[name] = str(config.local_path(value))
    images = params.get("images") or []
    for index, value in enumerate(images):
        if problem := location_problem(f"params.images.{index}", value, "path", roots, var_root, REMEDY):
            raise LocationRefused(f"params.images.{index}", problem)
    if images:
        checked["images"] = [str(config.local_path(value)) for value in images]
    return checked


class WorkerInputRefused(ValueError):
    """A job's input refused by the worker that was to run it: one line naming the worker's host, the key and
    the fix (a worker's settings are its own, not the submitting shell's). No traceback: nothing crashed."""


def missing_input(config: RunConfig, params: Mapping[str, Any], *, images: bool = True) -> str | None:
    """One line naming the first local input of the job that does not exist on this host, or None.

    Only what the job reads and cannot make: the stage's checkpoints, a local data folder and (`images`)
    predict's images. Models and var/ folders are built on first use, so their absence is not a mistake."""
    candidates = [(f"params.{name}", params.get(name)) for name in PATH_PARAMS]
    if images:
        candidates += [(f"params.images.{i}", value) for i, value in enumerate(params.get("images") or [])]
    if config.data.source not in ("synthetic", "kaggle"):  # the sources that read data_dir (IU-Xray or another layout)
        candidates.append(("data.data_dir", config.data.data_dir))
    for key, value in candidates:
        if not isinstance(value, str) or JOB_REFERENCE.fullmatch(value) or is_url(value):
            continue
        if not config.local_path(value).exists():
            return f"{key}: {value!r} does not exist; {MISSING_REMEDY}"
    return None


def check_inputs_exist(config: RunConfig, params: Mapping[str, Any]) -> None:
    """LocationRefused when an input the job reads is missing here (`jobs run`: this host runs the job)."""
    if problem := missing_input(config, params):
        raise LocationRefused(problem.partition(":")[0], problem)


def check_on_worker(config: RunConfig, params: Mapping[str, Any]) -> dict[str, Any]:
    """check_job_inputs, then that the inputs exist, as the worker runs it: a refusal is WorkerInputRefused
    naming this host, since the roots (MEDVL_DATA_ROOTS) and the files are this worker's."""
    host = socket.gethostname()
    try:
        checked = check_job_inputs(config, params)
    except LocationRefused as exc:
        raise WorkerInputRefused(
            f"on worker host {host}: {exc} (the worker's setting: set MEDVL_DATA_ROOTS in the worker's "
            "environment or .env and restart it; the submitting shell's does not reach the worker)"
        ) from None
    # A missing image is predict's to report beside the others it predicts, not a reason to fail them all.
    if problem := missing_input(config, checked, images=False):
        raise WorkerInputRefused(f"on worker host {host}: {problem.partition('; ')[0]} on this host")
    return checked
