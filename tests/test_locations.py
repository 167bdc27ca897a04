"""The rule for values that name a file or a model (worker/locations.py) and its use by the job system
(jobs/core/locations.py): hub ids pass, paths must resolve under the allowed roots, symlinks followed."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.core.locations import LocationRefused, check_job_inputs, config_file
from jobs.core.settings import reset_settings
from worker.config import load_config
from worker.locations import PROJECT_ROOT, is_hub_id, location_problem, resolve_local


@pytest.mark.parametrize(
    ("value", "hub"),
    [
        ("google/siglip-base-patch16-224", True),
        ("microsoft/biogpt", True),
        ("google/medsiglip-448", True),
        ("configs/../../../../etc", False),
        ("owner/..", False),
        ("a..b/c", False),
        ("var/models", False),  # var/ is always a local path
        ("./models/x", False),
        ("../x", False),
        ("/etc/ssl", False),
        ("~/models", False),
        ("a/b/c", False),
        ("-a/b", False),
        ("gpt2", False),
        ("owner/name\x00", False),
        ("owner/na me", False),
    ],
)
def test_a_hub_id_is_owner_slash_name_without_dot_dot(value: str, hub: bool) -> None:
    assert is_hub_id(value) is hub


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    var = tmp_path / "var"
    (var / "models" / "tiny").mkdir(parents=True)
    return var.resolve(), (tmp_path / "artifacts").resolve()


def test_paths_under_the_roots_pass_and_var_means_the_var_root(roots: tuple[Path, Path]) -> None:
    var, artifacts = roots

    assert location_problem("model.siglip", "var/models/tiny", "model", roots, var) is None
    assert location_problem("data.data_dir", str(artifacts / "x"), "path", roots, var) is None
    assert resolve_local("var/models/tiny", var) == var / "models" / "tiny"
    assert resolve_local("configs/smoke.yaml", var) == PROJECT_ROOT / "configs" / "smoke.yaml"


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("model", "configs/../../../../etc"),
        ("model", "/etc"),
        ("model", "gpt2"),  # not owner/name: a relative path from the repository, outside the roots
        ("path", "var/../../outside"),
        ("path", "~/datasets"),
        ("path", "/etc/passwd"),
        ("path", "x" * 5000),  # too long a name for the file system: refused, not an OSError
    ],
)
def test_values_outside_the_roots_are_refused_naming_the_key_and_the_roots(
    roots: tuple[Path, Path], kind: str, value: str
) -> None:
    problem = location_problem("model.siglip", value, kind, roots, roots[0])  # type: ignore[arg-type]

    assert problem is not None
    assert problem.startswith("model.siglip: ") and "outside the allowed roots" in problem
    assert all(str(root) in problem for root in roots)


def test_a_nul_byte_is_refused_not_an_error_from_the_file_system(roots: tuple[Path, Path]) -> None:
    problem = location_problem("data.data_dir", "var/data\x00/x", "path", roots, roots[0])

    assert problem is not None and "NUL" in problem and problem.startswith("data.data_dir")


def test_symlinks_are_followed(roots: tuple[Path, Path]) -> None:
    var = roots[0]
    (var / "escape").symlink_to("/etc")
    (var / "alias").symlink_to(var / "models" / "tiny")

    assert "outside the allowed roots" in str(location_problem("k", "var/escape", "path", roots, var))
    assert "outside the allowed roots" in str(location_problem("k", "var/escape/ssl", "model", roots, var))
    assert location_problem("k", "var/alias", "model", roots, var) is None


def test_a_hub_id_that_is_also_a_local_folder_is_refused(
    roots: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # from_pretrained would load the folder from the working directory instead of downloading the hub model.
    (tmp_path / "etc" / "ssl").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    problem = location_problem("model.siglip", "etc/ssl", "model", roots, roots[0])

    assert problem is not None and "working directory" in problem


@pytest.fixture
def settings_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    var = tmp_path / "var"
    var.mkdir()
    monkeypatch.setenv("MEDVL_VAR_DIR", str(var))
    monkeypatch.delenv("JOBS_ARTIFACTS_DIR", raising=False)
    monkeypatch.delenv("MEDVL_DATA_ROOTS", raising=False)
    reset_settings()
    yield var
    reset_settings()


def test_every_model_and_path_of_a_config_is_checked(settings_roots: Path) -> None:
    for key, value in [
        ("model.siglip", "configs/../../../../etc"),
        ("model.biogpt", "/usr/share"),
        ("data.data_dir", "/etc"),
        ("paths.run_dir", "/tmp/elsewhere"),
    ]:
        with pytest.raises(LocationRefused) as refused:
            check_job_inputs(load_config("smoke", {key: value, "model.build_tiny_fixtures": "false"}), {})
        assert refused.value.key == key and "MEDVL_DATA_ROOTS" in str(refused.value)


def test_params_come_back_as_the_absolute_files_that_were_checked(settings_roots: Path) -> None:
    config = load_config("smoke")

    params = check_job_inputs(config, {"checkpoint": "var/runs/a.ckpt", "siglip_checkpoint": "job:12", "split": "t"})

    checkpoint = str(settings_roots / "runs" / "a.ckpt")
    assert params == {"checkpoint": checkpoint, "siglip_checkpoint": "job:12", "split": "t"}
    with pytest.raises(LocationRefused) as refused:
        check_job_inputs(config, {"checkpoint": "/etc/passwd"})
    assert refused.value.key == "params.checkpoint"


def test_extra_roots_come_from_medvl_data_roots(
    settings_roots: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = tmp_path / "datasets" / "iu-xray"
    config = load_config("iu-xray", {"data.data_dir": str(dataset)})
    with pytest.raises(LocationRefused):
        check_job_inputs(config, {})

    monkeypatch.setenv("MEDVL_DATA_ROOTS", f"{tmp_path / 'datasets'}:/nonexistent")
    reset_settings()

    assert check_job_inputs(config, {}) == {}


def test_config_files_may_also_come_from_configs(settings_roots: Path) -> None:
    assert config_file("configs/smoke.yaml") == PROJECT_ROOT / "configs" / "smoke.yaml"
    with pytest.raises(LocationRefused) as refused:
        config_file("configs/../../secrets.yaml")
    assert refused.value.key == "config"


def test_a_data_dir_alone_means_source_local_and_a_contradicting_source_is_refused(tmp_path: Path) -> None:
    from worker.config import ConfigError

    assert load_config("smoke", {"data.data_dir": str(tmp_path)}).data.source == "local"
    assert load_config("iu-xray", {"data.data_dir": str(tmp_path)}).data.source == "local"
    with pytest.raises(ConfigError, match="source=local"):
        load_config("smoke", {"data.data_dir": str(tmp_path), "data.source": "synthetic"})


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "[.nan, 0.5, 0.5]"])
def test_configs_refuse_non_finite_numbers(value: str) -> None:
    from worker.config import ConfigError

    key = "data.split_fractions" if value.startswith("[") else "train.lr"
    with pytest.raises(ConfigError, match=key.split(".")[-1]):
        load_config("smoke", {key: value})


def test_the_stages_resolve_a_model_path_as_the_check_does(settings_roots: Path) -> None:
    config = load_config("smoke")

    assert config.resolve_model_path("var/models/tiny-siglip") == str(settings_roots / "models" / "tiny-siglip")
    assert config.resolve_model_path("google/siglip-base-patch16-224") == "google/siglip-base-patch16-224"
    assert config.resolve_model_path("configs/../../../../etc") == "/etc"
