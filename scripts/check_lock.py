"""Check requirements.lock against the requirements files, and an environment against requirements.lock.

    python scripts/check_lock.py              # the requirements files and the lock agree
    python scripts/check_lock.py --installed  # this interpreter's environment holds exactly the lock's versions

Each problem is one line that names it and the fix; the exit status is 1 when there is any. Only the standard
library is used, so the first check runs before the virtual environment exists (`make install` runs it first).

The lock is pip-compile's output for requirements-dev.txt (`make lock`), resolved with torch as PyPI serves it:
the CUDA build, with the CUDA libraries it depends on, which the GPU image installs. A host that installs a
build of torch of its own (a local version such as 2.13.0+cpu from a find-links folder) skips the packages that
only that CUDA build needs; every other package must be installed at the lock's version.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
REQUIREMENTS = REPO / "requirements-dev.txt"
PROJECT = "medvl-peft"
# The one package whose build is chosen by the host (CUDA from PyPI, or a local CPU wheel).
PLATFORM_BUILD = "torch"
FIX_LOCK = "run make lock"
FIX_INSTALL = "run make install"

REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;.*)?$")
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*\\)?$")


def normalize(name: str) -> str:
    """The comparable form of a distribution name (PEP 503): pip-compile, pip freeze and humans spell them apart."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Locked:
    version: str
    via: set[str] = field(default_factory=set)


def read_requirements(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (specifier, the file that names it), following `-r` includes."""
    found: dict[str, tuple[str, str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            found.update(read_requirements(path.parent / line.split(maxsplit=1)[1]))
            continue
        if line.startswith("-"):
            continue
        match = REQUIREMENT.match(line)
        if match:
            found[normalize(match.group(1))] = (match.group(2).replace(" ", ""), path.name)
    return found


def read_lock(path: Path = LOCK) -> dict[str, Locked]:
    """name -> version and what needs it (`-r FILE` or another package), from pip-compile's annotations."""
    locked: dict[str, Locked] = {}
    current: Locked | None = None
    for raw in path.read_text().splitlines():
        match = PINNED.match(raw)
        if match:
            current = locked[normalize(match.group(1))] = Locked(match.group(2))
            continue
        comment = raw.strip().removeprefix("#").strip()
        if current is None or not raw.startswith(" ") or not comment:
            continue
        parent = comment.removeprefix("via").strip() if comment.startswith("via") else comment
        if parent:
            current.via.add(parent if parent.startswith("-r ") else normalize(parent))
    return locked


def lock_problems(requirements: Path = REQUIREMENTS, lock: Path = LOCK) -> list[str]:
    """Where the requirements files and the lock disagree."""
    if not lock.is_file():
        return [f"{lock.name} is missing: {FIX_LOCK}"]
    wanted = read_requirements(requirements)
    locked = read_lock(lock)
    problems = []
    for name, (specifier, source) in sorted(wanted.items()):
        if name not in locked:
            problems.append(f"{source} names {name} but {lock.name} does not: {FIX_LOCK}")
        elif specifier.startswith("==") and "," not in specifier and specifier[2:] != locked[name].version:
            problems.append(
                f"{source} pins {name}{specifier} but {lock.name} has {name}=={locked[name].version}: {FIX_LOCK}"
            )
    for name, entry in sorted(locked.items()):
        files = {parent.removeprefix("-r ") for parent in entry.via if parent.startswith("-r ")}
        packages = {parent for parent in entry.via if not parent.startswith("-r ")}
        if files and name not in wanted:
            problems.append(
                f"{lock.name} has {name} for {', '.join(sorted(files))}, which no longer names it: {FIX_LOCK}"
            )
        elif not files and not packages & locked.keys():
            needed_by = ", ".join(sorted(packages)) or "nothing"
            problems.append(f"{lock.name} has {name}, needed by {needed_by}, none of which it holds: {FIX_LOCK}")
    return problems


def only_for(locked: dict[str, Locked], root: str) -> set[str]:
    """The lock's packages that nothing but `root`, directly or through each other, needs."""
    found: set[str] = set()
    while True:
        more = {
            name for name, entry in locked.items() if name not in found and entry.via and entry.via <= found | {root}
        }
        if not more:
            return found
        found |= more


def frozen(python: str = sys.executable) -> tuple[dict[str, str], list[str]]:
    """`pip freeze --all` of an interpreter: name -> version, and the lines that are no plain pin."""
    output = subprocess.run(
        [python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    versions: dict[str, str] = {}
    other: list[str] = []
    for line in output.splitlines():
        if not line or line.startswith("#"):
            continue
        match = PINNED.match(line)
        if match:
            versions[normalize(match.group(1))] = match.group(2)
        else:
            other.append(line)
    return versions, other


def installed_problems(python: str = sys.executable, lock: Path = LOCK) -> list[str]:
    """Where an environment differs from the lock; the project itself and the host's torch build excepted."""
    locked = read_lock(lock)
    versions, other = frozen(python)
    problems = [f"installed other than from the lock: {line}: {FIX_INSTALL}" for line in other if not _is_project(line)]
    versions.pop(PROJECT, None)
    for name, version in sorted(versions.items()):
        if name not in locked:
            problems.append(f"{name}=={version} is installed but {lock.name} does not hold it: {FIX_INSTALL}")
        elif version != locked[name].version and not (
            name == PLATFORM_BUILD and version.split("+")[0] == locked[name].version and "+" in version
        ):
            problems.append(f"{name}=={version} is installed but {lock.name} has {locked[name].version}: {FIX_INSTALL}")
    # A local torch build (2.13.0+cpu) needs none of the CUDA libraries that PyPI's build depends on.
    host_build = "+" in versions.get(PLATFORM_BUILD, "")
    optional = only_for(locked, PLATFORM_BUILD) if host_build else set()
    for name in sorted(locked.keys() - versions.keys() - optional - {PROJECT}):
        problems.append(f"{lock.name} has {name}=={locked[name].version} but it is not installed: {FIX_INSTALL}")
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, timeout=120, check=False)
    if check.returncode != 0:
        problems += [f"pip check: {line}: {FIX_INSTALL}" for line in check.stdout.splitlines() if line.strip()]
    return problems


def _is_project(line: str) -> bool:
    """The project's own editable install, as pip freeze writes it (a path, or a VCS URL with its egg name)."""
    return line.startswith("-e ") and (
        Path(line[3:].strip()).resolve() == REPO or f"egg={PROJECT.replace('-', '_')}" in line
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--installed", action="store_true", help="check this interpreter's environment too")
    args = parser.parse_args(argv)
    problems = lock_problems()
    if args.installed:
        problems += installed_problems()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
