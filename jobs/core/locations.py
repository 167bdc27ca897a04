"""Which folders a job may read and write, and the check of a job's every file and model against them.

The same check runs when a request is accepted (CLI or API: a refusal names the key) and again in the
worker just before the stage starts (a row written by an older version, or edited by hand, cannot make a
worker open what a request could not). The rule itself is worker/locations.py.
"""

from __future__ import annotations

import re
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
