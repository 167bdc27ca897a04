"""The options people change most (epochs, batch size, lr, devices, seed, projection, source, data dir...),
declared once.

worker.config.SHORTCUTS names each one's dotted config key; its type, bounds and help are that config field's.
`jobs submit --epochs` (jobs/cli/options.py) and the API's `"epochs"` (api/models.py) are both built from
`shortcut_fields()`, so the CLI, the API and the config cannot disagree on a bound or a help text.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo

from jobs.core.text import StorableStr
from worker.config import SHORTCUTS, PeftMethod, RunConfig  # torch-free, like every config check here

# Where a request carries a path, its length is bounded like the stage params' paths.
PATH_BOUNDS = {"min_length": 1, "max_length": 4096}
REQUEST_BOUNDS: dict[str, dict[str, Any]] = {"data_dir": PATH_BOUNDS}
CONFIG_KEY = "config_key"

PeftName = Literal[tuple(method.value for method in PeftMethod)]  # type: ignore[valid-type]
"""lora or qlora, as the API and its filters take them."""


def config_field(key: str) -> FieldInfo:
    """The RunConfig field a dotted key names (train.epochs -> TrainConfig.epochs)."""
    model: Any = RunConfig
    *sections, name = key.split(".")
    for section in sections:
        model = model.model_fields[section].annotation
    return model.model_fields[name]


def without_none(annotation: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); any other annotation -> (itself, False)."""
    if get_origin(annotation) in (Union, UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) < len(get_args(annotation)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return annotation, False


def value_type(field: FieldInfo) -> Any:
    """The field's type without None, an Enum as the Literal of its values (as JSON shows them), and plain
    text as StorableStr (what a request may store)."""
    annotation, _ = without_none(field.annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return Literal[tuple(member.value for member in annotation)]  # type: ignore[valid-type]
    if annotation is str:
        return StorableStr
    return annotation


def _shortcut(name: str, key: str) -> tuple[Any, Any]:
    field = config_field(key)
    annotation = value_type(field)
    if field.metadata:  # the config's bounds (ge, le...)
        annotation = Annotated[annotation, *field.metadata]
    return annotation | None, Field(
        None, description=field.description, json_schema_extra={CONFIG_KEY: key}, **REQUEST_BOUNDS.get(name, {})
    )


def shortcut_fields() -> dict[str, tuple[Any, Any]]:
    """name -> (annotation, Field) for every shortcut, each optional (None: the preset's value stays)."""
    return {name: _shortcut(name, key) for name, key in SHORTCUTS.items()}


def with_shortcuts(base: type[BaseModel]) -> type[BaseModel]:
    """`base` with one optional field per shortcut after its own fields."""
    name = f"{base.__name__}WithShortcuts"
    return create_model(name, __base__=base, **shortcut_fields())  # type: ignore[call-overload]


def shortcut_keys(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the dotted config key it sets, for a model built with `with_shortcuts`."""
    keys = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and CONFIG_KEY in extra:
            keys[name] = str(extra[CONFIG_KEY])
    return keys


def shortcut_overrides(values: Mapping[str, Any]) -> dict[str, str]:
    """The config overrides that shortcut values ask for (None: not given), as raw strings that the config
    loader parses exactly like `--set` values; booleans as YAML spells them."""
    overrides = {}
    for name, key in SHORTCUTS.items():
        value = values.get(name)
        if value is not None:
            overrides[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return overrides
