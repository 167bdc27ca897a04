"""The stage options `jobs submit` and `jobs run` share, and the request they make.

Nothing here is declared twice: the config shortcuts (--epochs, --peft...) come from jobs/service/shortcuts.py
(the config's own types, bounds and help), the stage params (--checkpoint, --top-k...) from StageParams; only
the options a command line spells differently (--set, --grid, --seed-list) are declared here.
"""

# No `from __future__ import annotations`: Typer reads each option from the evaluated annotation.
import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import typer

# typer vendors click and exports only BadParameter; the base of every usage error lives here.
from typer._click.exceptions import UsageError

from jobs.core.schemas import SubmitRequest
from jobs.core.stages import Stage, StageParams
from jobs.execution.refs import JOB_REF
from jobs.service import InvalidRequest
from jobs.service.shortcuts import shortcut_fields, shortcut_overrides, without_none
from worker.config import SHORTCUTS  # torch-free

F = TypeVar("F", bound=Callable[..., Any])
PANEL = "Stage options"
# Params whose values name files: relative to where the command runs, not to the repository.
PATH_PARAMS = ("siglip_checkpoint", "checkpoint")
# Params the command line spells its own way (parsed into StageParams' types below).
CLI_SPELLED = ("grid", "seed_list")


@dataclass
class StageOptions:
    """What the shared options said: the config source, `--set`, the shortcuts and the stage params."""

    preset: str | None
    config: Path | None
    set_: list[str] | None
    shortcuts: dict[str, Any]
    params: dict[str, Any]

    @property
    def images(self) -> list[str] | None:
        return self.params.get("images")

    def add_images(self, paths: list[str]) -> None:
        self.params["images"] = [*(self.images or []), *paths]

    def to_request(
        self, stage: Stage, idempotency_key: str | None = None, gpu_class: str | None = None
    ) -> SubmitRequest:
        from worker.config import parse_set_options  # torch-free

        shortcuts = dict(self.shortcuts)
        shortcuts["data_dir"] = _from_here(shortcuts.get("data_dir"))
        shortcuts["resume"] = shortcuts.get("resume") or None  # a flag: absent means "as the preset says"
        # On the command line a shortcut wins over a --set of the same key.
        overrides = parse_set_options(self.set_) | shortcut_overrides(shortcuts)
        params = dict(self.params)
        for name in PATH_PARAMS:
            params[name] = _from_here(params[name])
        params["grid"] = parse_grid(params["grid"])
        params["seed_list"] = _parse_seed_list(params["seed_list"])
        return SubmitRequest(
            stage=stage,
            preset=None if self.config else self.preset,
            config_path=_from_here(str(self.config)) if self.config else None,
            overrides=overrides,
            params=StageParams(**params),
            idempotency_key=idempotency_key,
            gpu_class=gpu_class,
        )


def _from_here(raw: str | None) -> str | None:
    """A path option as the caller meant it: relative to the working directory of this command (the job
    system resolves relative paths from the repository, and a worker may run anywhere)."""
    if raw is None or raw.startswith((JOB_REF, "~")) or "\x00" in raw:
        return raw  # a comparison child's reference, the home folder, or refused later with its field named
    return os.path.abspath(raw)


def parse_grid(items: list[str] | None) -> dict[str, list[str]] | None:
    """['peft.method=lora,qlora', 'peft.r=8,16'] -> {'peft.method': ['lora', 'qlora'], 'peft.r': ['8', '16']}."""
    if not items:
        return None
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        parts = [value.strip() for value in values.split(",")]
        if not sep or not key.strip() or not all(parts):
            raise InvalidRequest(f"--grid expects KEY=V1,V2,... (e.g. peft.r=8,16), got '{item}'")
        if key.strip() in grid:
            raise InvalidRequest(f"--grid names '{key.strip()}' twice; give all its values in one --grid")
        grid[key.strip()] = parts
    return grid


def _parse_seed_list(raw: str | None) -> list[int] | None:
    if raw is None:
        return None
    try:
        return [int(part) for part in raw.split(",")]
    except ValueError:
        message = f"--seed-list expects integers separated by commas (e.g. 1,2,3), got '{raw}'"
        raise InvalidRequest(message) from None


def command_line_type(annotation: Any) -> Any:
    """The type a command-line option parses into for a model field's annotation: choices and constrained
    text as plain str (the model checks them, naming the allowed values), lists as lists of str."""
    annotation, optional = without_none(annotation)
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is list:
        base: Any = list[str]
    elif get_origin(annotation) is Literal or annotation is str or annotation is Path:
        base = str
    else:
        base = annotation
    return base | None if optional else base


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option(name: str, annotation: Any, default: Any, help: str, flag: str | None = None) -> inspect.Parameter:
    option = typer.Option(flag or _flag(name), help=help, rich_help_panel=PANEL)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, option]
    )


def _shortcut_options() -> list[inspect.Parameter]:
    options = []
    for name, (annotation, field) in shortcut_fields().items():
        help = f"{field.description} ({field.json_schema_extra['config_key']})"
        kind = command_line_type(annotation)
        if kind == bool | None:  # a flag: given means true; absent leaves the config's value
            options.append(_option(name, bool, False, help))
        else:
            options.append(_option(name, kind, None, help))
    return options


def _param_options() -> list[inspect.Parameter]:
    return [
        _option(name, command_line_type(field.annotation), field.default, field.description or "")
        for name, field in StageParams.model_fields.items()
        if name not in CLI_SPELLED
    ]


STAGE_OPTIONS = [
    _option("preset", str | None, "smoke", "Preset under configs/ (smoke, iu-xray, medsiglip)."),
    _option("config", Path | None, None, "A YAML config file instead of a preset."),
    _option("set_", list[str] | None, None, "Override any config key: --set train.lr=3e-4 (repeatable).", "--set"),
    *_shortcut_options(),
    *_param_options(),
    _option("grid", list[str] | None, None, "sweep: KEY=V1,V2 over any config key (repeatable)."),
    _option("seed_list", str | None, None, "compare/sweep: these seeds, e.g. 1,2,3 (instead of --seeds)."),
]
SHORTCUT_NAMES = tuple(SHORTCUTS)
PARAM_NAMES = tuple(StageParams.model_fields)

# `--images a.png b.png` (a shell glob, typically): click options take one value each, so the paths after the
# first arrive as extra arguments; the commands with stage options accept them only as more images.
STAGE_COMMAND_SETTINGS = {"allow_extra_args": True}
CONTEXT = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)


def with_stage_options(function: F) -> F:
    """Add the shared stage options to a command; the function receives them as `options: StageOptions`.

    Register the command with ``context_settings=STAGE_COMMAND_SETTINGS``."""
    signature = inspect.signature(function)
    own = [p for p in signature.parameters.values() if p.name != "options"]

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        extra = kwargs.pop(CONTEXT.name).args
        options = StageOptions(
            preset=kwargs.pop("preset"),
            config=kwargs.pop("config"),
            set_=kwargs.pop("set_"),
            shortcuts={name: kwargs.pop(name) for name in SHORTCUT_NAMES},
            params={name: kwargs.pop(name) for name in PARAM_NAMES},
        )
        if extra and not options.images:
            raise UsageError(f"unexpected extra argument(s) {' '.join(extra)}; image paths go after --images")
        if extra:
            options.add_images(extra)
        return function(*args, options=options, **kwargs)

    parameters = [*own, *STAGE_OPTIONS, CONTEXT]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper  # type: ignore[return-value]
