"""requirements.lock: it agrees with the requirements files, and the venv holds exactly its versions."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.execution.runner import lock_digest
from scripts import check_lock

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_lock.py"


@pytest.fixture
def copies(tmp_path: Path) -> Path:
    """The requirements files and the lock, copied where a test may edit them."""
    for name in ("requirements.txt", "requirements-dev.txt", "requirements.lock"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def problems_in(folder: Path) -> list[str]:
    return check_lock.lock_problems(folder / "requirements-dev.txt", folder / "requirements.lock")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}: the test needs another example"
    path.write_text(text.replace(old, new, 1))


# --- the requirements files and the lock --------------------------------------------------------------------


def test_the_requirements_files_and_the_lock_agree() -> None:
    problems = check_lock.lock_problems()

    assert not problems, "\n".join(problems)


def test_the_lock_holds_every_direct_requirement_at_its_pin() -> None:
    wanted = check_lock.read_requirements(check_lock.REQUIREMENTS)
    locked = check_lock.read_lock()

    assert len(wanted) > 50 and len(locked) > len(wanted)
    assert locked["torch"].version == wanted["torch"][0].removeprefix("==")
    assert "-r requirements.txt" in locked["transformers"].via
    assert "psycopg" in locked["psycopg-binary"].via  # an extra's packages are locked, the extra is not


def test_a_package_added_to_a_requirements_file_but_not_the_lock_is_named(copies: Path) -> None:
    (copies / "requirements.txt").write_text((copies / "requirements.txt").read_text() + "leftpad==1.0.0\n")

    assert problems_in(copies) == ["requirements.txt names leftpad but requirements.lock does not: run make lock"]


def test_a_pin_changed_in_a_requirements_file_but_not_the_lock_is_named(copies: Path) -> None:
    edit(copies / "requirements-dev.txt", "ruff==0.17.6", "ruff==0.17.7")

    assert problems_in(copies) == [
        "requirements-dev.txt pins ruff==0.17.7 but requirements.lock has ruff==0.17.6: run make lock"
    ]


def test_a_package_removed_from_a_requirements_file_but_left_in_the_lock_is_named(copies: Path) -> None:
    edit(copies / "requirements.txt", "sacremoses==0.2.0\n", "")

    assert problems_in(copies) == [
        "requirements.lock has sacremoses for requirements.txt, which no longer names it: run make lock"
    ]


def test_a_package_added_to_the_lock_alone_is_named(copies: Path) -> None:
    edit(copies / "requirements.lock", "absl-py==", "leftpad==1.0.0\n    # via nothing-we-hold\nabsl-py==")

    assert problems_in(copies) == [
        "requirements.lock has leftpad, needed by nothing-we-hold, none of which it holds: run make lock"
    ]


def test_the_script_prints_each_problem_and_fails(copies: Path) -> None:
    # The same check as make install runs it: the system's Python, with nothing but the standard library.
    (copies / "scripts").mkdir()
    shutil.copy(SCRIPT, copies / "scripts" / SCRIPT.name)
    (copies / "requirements.txt").write_text((copies / "requirements.txt").read_text() + "leftpad==1.0.0\n")

    result = subprocess.run(
        [sys.executable, "-I", str(copies / "scripts" / SCRIPT.name)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    assert result.stderr == "requirements.txt names leftpad but requirements.lock does not: run make lock\n"


def test_the_lock_names_no_machine_and_no_host_build() -> None:
    text = (REPO / "requirements.lock").read_text()

    assert "make lock" in text, "the lock's header names the command that refreshes it"
    assert not re.search(r"^--(extra-)?index-url|^--find-links|^-f ", text, flags=re.MULTILINE), (
        "requirements.lock names a machine's index or find-links: run make lock (it leaves them out)"
    )
    assert not re.search(r"^\S+==\S+\+", text, flags=re.MULTILINE), (
        "requirements.lock pins a local build (such as torch +cpu): run make lock (it leaves find-links out)"
    )
    assert "[" not in "".join(line for line in text.splitlines() if not line.startswith(("#", " ")))


# --- the venv and the lock ------------------------------------------------------------------------------------


def test_the_venv_holds_exactly_the_locks_versions() -> None:
    problems = check_lock.installed_problems()

    assert not problems, "\n".join(problems)


def test_a_host_torch_build_may_skip_only_what_torch_alone_needs() -> None:
    # Of these, pip check (part of the venv check) still demands what the installed build requires (sympy...).
    optional = check_lock.only_for(check_lock.read_lock(), "torch")

    assert {"triton", "cuda-toolkit", "nvidia-cublas", "nvidia-cudnn-cu13", "sympy"} <= optional
    assert not {"jinja2", "filelock", "fsspec", "typing-extensions", "numpy"} & optional


def test_a_venv_that_differs_from_the_lock_is_named(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    text = (REPO / "requirements.lock").read_text()
    rich = check_lock.read_lock()["rich"].version
    text = text.replace(f"\nrich=={rich}\n", "\nrich==0.0.1\n")
    text = re.sub(r"\nruff==\S+\n(    #[^\n]*\n)*", "\n", text)
    lock.write_text(text + "leftpad==1.0.0\n    # via -r requirements.txt\n")

    problems = check_lock.installed_problems(lock=lock)

    ruff = check_lock.frozen()[0]["ruff"]
    assert problems == [
        f"rich=={rich} is installed but requirements.lock has 0.0.1: run make install",
        f"ruff=={ruff} is installed but requirements.lock does not hold it: run make install",
        "requirements.lock has leftpad==1.0.0 but it is not installed: run make install",
    ]


# --- what an experiment records -------------------------------------------------------------------------------


def test_the_lock_digest_follows_the_files_bytes(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_bytes(b"rich==15.0.0\n")
    first = lock_digest(lock)
    lock.write_bytes(b"rich==15.0.1\n")

    assert first == "sha256:" + hashlib.sha256(b"rich==15.0.0\n").hexdigest()
    assert lock_digest(lock) != first
    assert lock_digest(tmp_path / "missing.lock") is None
