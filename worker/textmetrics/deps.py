"""The system packages METEOR needs, and the error raised when one is missing."""

from __future__ import annotations

import shutil

INSTALL_HINT = (
    "install it with `sudo apt-get install wordnet-base wordnet-sense-index default-jre-headless` "
    "(or `make system-deps`)"
)


class SystemDependencyMissing(RuntimeError):
    """A metric cannot be computed honestly because a system package is missing."""


def require_java() -> str:
    """Path of the `java` executable; raises SystemDependencyMissing when there is none."""
    java = shutil.which("java")
    if java is None:
        raise SystemDependencyMissing(f"METEOR (COCO toolkit) needs a Java runtime and none is on PATH; {INSTALL_HINT}")
    return java
