"""WordNet 3.0 for NLTK's METEOR, built offline into an NLTK data folder of our own.

The dictionary files come from the system WordNet when it is complete (Debian's `wordnet-base` and
`wordnet-sense-index`, or ``MEDVL_WORDNET_DIR``), else from the copy this package ships
(``data/wordnet-3.0.tar.xz``: the same files, byte for byte), so METEOR needs neither root nor apt.
NLTK will not read ``/usr/share/wordnet`` in place: it expects a ``corpora/wordnet`` folder with a
``lexnames`` file, which Debian does not ship, so we write ``lexnames`` (the 45 lexicographer files of
WordNet 3.0) beside the copied files.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import warnings
from functools import lru_cache
from pathlib import Path

import nltk.data
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from worker.textmetrics.deps import INSTALL_HINT, SystemDependencyMissing

SYSTEM_WORDNET = Path(os.environ.get("MEDVL_WORDNET_DIR", "/usr/share/wordnet"))
BUNDLED_WORDNET = Path(__file__).with_name("data") / "wordnet-3.0.tar.xz"

# WordNet 3.0's lexicographer files in number order, with their part-of-speech number (lexnames(5WN)).
LEXNAMES = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1), ("noun.animal", 1),
    ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1), ("noun.cognition", 1),
    ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1), ("noun.food", 1), ("noun.group", 1),
    ("noun.location", 1), ("noun.motive", 1), ("noun.object", 1), ("noun.person", 1), ("noun.phenomenon", 1),
    ("noun.plant", 1), ("noun.possession", 1), ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1),
    ("noun.shape", 1), ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1), ("verb.body", 2),
    ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2), ("verb.competition", 2),
    ("verb.consumption", 2), ("verb.contact", 2), ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2),
    ("verb.perception", 2), ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2),
    ("adj.ppl", 3),
)
# The files NLTK's reader opens besides lexnames; index.sense comes from `wordnet-sense-index`.
REQUIRED_FILES = tuple(f for f in WordNetCorpusReader._FILES if f != "lexnames")


def _missing_files(folder: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (folder / name).is_file()]


def _fill_from_system(staging: Path, source: Path) -> None:
    for name in REQUIRED_FILES:
        shutil.copyfile(source / name, staging / name)


def _fill_from_bundle(staging: Path, archive: Path) -> None:
    # Member by member, by the names we need: no path from the archive is trusted, on every Python 3.11
    # (Debian 12's 3.11.2 predates tarfile's extraction filters).
    with tarfile.open(archive) as tar:
        for name in REQUIRED_FILES:
            member = tar.extractfile(name)
            if member is None:
                raise SystemDependencyMissing(f"{archive} holds no file {name}; reinstall the project")
            with member, (staging / name).open("wb") as copy:
                shutil.copyfileobj(member, copy)


def ensure_wordnet_data(nltk_data_dir: Path, source: Path | None = None, bundle: Path | None = None) -> Path:
    """Make ``nltk_data_dir/corpora/wordnet`` a complete WordNet for NLTK; returns that folder.

    Idempotent: an existing complete copy is reused. Takes the files from `source` (default: the system
    WordNet) when it has them all, else from the bundled archive; raises SystemDependencyMissing naming
    what is missing when neither has them.
    """
    source, bundle = source or SYSTEM_WORDNET, bundle or BUNDLED_WORDNET
    target = Path(nltk_data_dir) / "corpora" / "wordnet"
    if not _missing_files(target) and (target / "lexnames").is_file():
        return target
    missing = _missing_files(source)
    if missing and not bundle.is_file():
        raise SystemDependencyMissing(
            f"METEOR needs WordNet 3.0 with synonyms, but {source} lacks {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''} and the bundled copy {bundle} is gone (reinstall the project); "
            f"{INSTALL_HINT}"
        )
    shutil.rmtree(target, ignore_errors=True)  # an incomplete copy (say, from an interrupted run)
    staging = target.with_name(f"wordnet.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if missing:
        _fill_from_bundle(staging, bundle)
    else:
        _fill_from_system(staging, source)
    lines = (f"{i:02d}\t{name}\t{pos}\n" for i, (name, pos) in enumerate(LEXNAMES))
    (staging / "lexnames").write_text("".join(lines))
    # A rename makes the copy appear whole or not at all; a process that loses the race keeps the winner's.
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if _missing_files(target) or not (target / "lexnames").is_file():
            raise
    return target


@lru_cache(maxsize=4)
def load_wordnet(nltk_data_dir: Path) -> WordNetCorpusReader:
    """A WordNet reader over our offline copy (built on first use); cached per folder."""
    root = ensure_wordnet_data(Path(nltk_data_dir))
    # NLTK only opens corpora under a folder on its data path (its path-security check).
    data_dir = str(Path(nltk_data_dir).resolve())
    if data_dir not in nltk.data.path:
        nltk.data.path.append(data_dir)
    with warnings.catch_warnings():
        # Without the Open Multilingual WordNet NLTK warns; METEOR only needs English synonyms.
        warnings.simplefilter("ignore", UserWarning)
        reader = WordNetCorpusReader(str(root), None)
    if not reader.synsets("large"):
        raise SystemDependencyMissing(f"WordNet at {root} has no synsets for 'large'; reinstall it: {INSTALL_HINT}")
    return reader
