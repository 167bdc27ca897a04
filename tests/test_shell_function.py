"""`jobs` as a user types it: in a real interactive bash after the documented activation step.

`jobs` is a shell builtin, so the program on PATH never runs when typed; the activation script defines a
function (scripts/jobs-function.sh) that runs the CLI for its subcommands and the builtin for its own uses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from jobs_fixtures import REPO

ACTIVATE = REPO / ".venv/bin/activate"
FUNCTION = REPO / "scripts/jobs-function.sh"


def interactive_bash(script: str, env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    """`bash -ic SCRIPT` with an empty home (no user rc file) and the documented activation first."""
    return subprocess.run(
        ["bash", "-ic", f"source {ACTIVATE}\n{script}"],
        cwd=REPO,
        env={**env, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_install_hooks_the_function_into_the_activation_script():
    assert f'. "{FUNCTION}"' in ACTIVATE.read_text(), "run `make install`: it adds the hook to .venv/bin/activate"


def test_jobs_as_typed_reaches_the_cli_and_the_builtin_still_lists_shell_jobs(job_env, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"} | job_env.variables
    script = (
        "jobs submit --help; echo submit-help-exit=$?\n"
        "jobs list; echo list-exit=$?\n"
        "sleep 30 &\n"
        "echo builtin:; jobs; echo with-pid:; jobs -l; echo spec:; jobs %1\n"
        "kill %1\n"
    )
    completed = interactive_bash(script, env, tmp_path)
    out = completed.stdout
    assert "Usage: jobs submit" in out, completed.stderr
    assert "submit-help-exit=0" in out and "list-exit=0" in out, out + completed.stderr
    assert "no such job" not in completed.stderr
    # The builtin's listing, its -l form (with the pid) and a job spec each name the background sleep.
    listing, with_pid, spec = (part.strip() for part in re.split(r"with-pid:|spec:", out.split("builtin:", 1)[1]))
    assert re.fullmatch(r"\[1\]\+\s+Running\s+sleep 30 &", listing), out
    assert re.fullmatch(r"\[1\]\+\s+\d+ Running\s+sleep 30 &", with_pid), out
    assert spec == listing


def test_without_the_environment_every_use_goes_to_the_builtin(tmp_path):
    completed = subprocess.run(
        ["bash", "-ic", f"source {FUNCTION}\nunset VIRTUAL_ENV\njobs list; echo exit=$?"],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The builtin's answer to an argument that is not a job: what the shell did before the function.
    assert "no such job" in completed.stderr and "exit=1" in completed.stdout


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_reaches_the_cli_too(job_env, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"} | job_env.variables
    completed = subprocess.run(
        ["zsh", "-ic", f"source {ACTIVATE}; jobs submit --help; sleep 30 & jobs -l; kill %1"],
        cwd=REPO,
        env={**env, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Usage: jobs submit" in completed.stdout, completed.stderr
    assert re.search(r"\[1\]  \+ \d+ running\s+sleep 30", completed.stdout), completed.stdout


def test_the_docker_image_sources_the_function_for_interactive_bash():
    dockerfile = (REPO / "Dockerfile.gpu").read_text()
    assert ". /app/scripts/jobs-function.sh" in dockerfile and "/etc/bash.bashrc" in dockerfile
