"""The shortcut options (--epochs, "epochs"...) are declared once, by the config: the CLI and the API agree."""

from __future__ import annotations

import annotated_types
import pytest
from pydantic import ValidationError

from api.models import JobSubmission
from jobs.cli.options import STAGE_OPTIONS
from jobs.service.shortcuts import config_field
from worker.config import SHORTCUTS

# annotated-types rule -> (its attribute, the JSON schema keyword)
BOUNDS = {
    annotated_types.Ge: ("ge", "minimum"),
    annotated_types.Le: ("le", "maximum"),
    annotated_types.Gt: ("gt", "exclusiveMinimum"),
}


def _bounds_of(key: str) -> dict[str, float]:
    bounds = {}
    for rule in config_field(key).metadata:
        if type(rule) in BOUNDS:
            attribute, keyword = BOUNDS[type(rule)]
            bounds[keyword] = getattr(rule, attribute)
    return bounds


@pytest.mark.parametrize(("name", "key"), SHORTCUTS.items())
def test_each_api_shortcut_has_the_config_fields_description_and_bounds(name: str, key: str) -> None:
    schema = JobSubmission.model_json_schema()["properties"][name]
    shown = next((branch for branch in schema.get("anyOf", []) if branch.get("type") != "null"), schema)

    assert schema["config_key"] == key
    assert schema["description"] == config_field(key).description
    assert {bound: shown[bound] for bound in _bounds_of(key)} == _bounds_of(key)


@pytest.mark.parametrize(("name", "key"), SHORTCUTS.items())
def test_each_cli_shortcut_has_the_config_fields_help(name: str, key: str) -> None:
    option = next(parameter for parameter in STAGE_OPTIONS if parameter.name == name)
    typer_option = option.annotation.__metadata__[0]

    # typer keeps the first name given to Option() as `default` when it is used inside Annotated
    assert "--" + name.replace("_", "-") in (typer_option.default, *typer_option.param_decls)
    assert typer_option.help == f"{config_field(key).description} ({key})"


def test_the_api_refuses_a_shortcut_beyond_the_configs_bound() -> None:
    maximum = _bounds_of("train.epochs")["maximum"]
    JobSubmission(stage="train", epochs=maximum)

    with pytest.raises(ValidationError, match="epochs"):
        JobSubmission(stage="train", epochs=maximum + 1)
