"""A fixed split from an R2Gen-style ``annotation.json``: ``{"train"|"val"|"test": [{"id", "report",
"image_path": [...], "split"}, ...]}``, the split the IU-Xray literature reports on.

R2Gen names a study ``CXR<uid>_<image stem>``: ``CXR2384_IM-0942`` is Kaggle uid 2384 with images
``2384_IM-0942-<view>.dcm.png``, and ``CXR1_1_IM-0001`` is uid 1 with ``1_IM-0001-<view>.dcm.png``. A
study is found by those image-name keys (from its id, then from its image paths), and failing that by
the uid in its id. Studies the local copy lacks are listed, never a crash; local studies the file does
not name are left out of every split.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from worker.config import ConfigError
from worker.data.splits import SPLITS

# What tells the views of one study apart: "-1001" in 2384_IM-0942-1001, "-1003002" in 5_IM-2117-1003002.
_VIEW_SUFFIX = re.compile(r"(?<=IM-\d{4})-\d+$")
_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm")


class SplitFileError(ConfigError):
    """The split file cannot be read as an annotation.json; the message says what is wrong."""


@dataclass
class FixedSplit:
    uids: dict[str, list[str]]
    """Local study uids of each split, in the file's order."""
    missing: dict[str, list[str]]
    """Ids of each split that no local study matches."""
    unlisted: int
    """Local studies (with a report) that the file puts in no split."""

    @property
    def named(self) -> int:
        return sum(len(u) for u in self.uids.values()) + sum(len(m) for m in self.missing.values())


def _stem(name: str) -> str:
    stem = PurePosixPath(name.replace("\\", "/")).name
    while stem.lower().endswith(_EXTENSIONS):
        stem = stem.rsplit(".", 1)[0]
    return stem


def _keys(name: str) -> Iterable[str]:
    """Image-name keys a name may stand for: as given, without R2Gen's ``CXR<uid>_`` prefix, and each of
    those without its view suffix."""
    stem = _stem(name)
    variants = [stem]
    if stem.startswith("CXR"):
        variants.append(stem[3:])
        if "_" in stem:
            variants.append(stem.split("_", 1)[1])
    for variant in variants:
        yield variant
        yield _VIEW_SUFFIX.sub("", variant)


def _uid_in_id(study_id: str) -> str:
    return _stem(study_id).removeprefix("CXR").split("_", 1)[0]


def image_keys(filenames_by_uid: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Image-name key -> local uid, from each study's image file names (``2384_IM-0942-1001.dcm.png``
    gives ``2384_IM-0942-1001`` and ``2384_IM-0942``)."""
    keys: dict[str, str] = {}
    for uid, filenames in filenames_by_uid.items():
        for filename in filenames:
            stem = _stem(filename)
            keys.setdefault(stem, uid)
            keys.setdefault(_VIEW_SUFFIX.sub("", stem), uid)
    return keys


def match_study(entry: Mapping, keys: Mapping[str, str], uids: set[str]) -> str | None:
    """The local uid of one annotation entry, or None when the local copy lacks the study."""
    names = [str(entry["id"])]
    for path in entry.get("image_path") or []:
        names += [str(PurePosixPath(str(path).replace("\\", "/")).parent.name), str(path)]
    for name in names:
        for key in _keys(name):
            if key in keys:
                return keys[key]
    uid = _uid_in_id(str(entry["id"]))
    return uid if uid in uids else None


def manifest_name(path: str) -> str:
    """The resolved split's file name, for this file's content: an edited file gets a new manifest."""
    return f"splits-file-{hashlib.sha1(Path(path).read_bytes()).hexdigest()[:10]}.json"


def read_annotation(path: str) -> dict[str, list[dict]]:
    """The entries of each split; raises SplitFileError, with what is wrong, for a file of another shape."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SplitFileError(f"data.split_file {path} does not exist; pass an R2Gen-style annotation.json") from None
    except (OSError, ValueError) as exc:
        raise SplitFileError(f"data.split_file {path} is not readable JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or not set(data) & set(SPLITS):
        raise SplitFileError(f"data.split_file {path}: expected an object with 'train', 'val' and 'test' lists")
    for name in SPLITS:
        entries = data.get(name, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "id" in e for e in entries):
            raise SplitFileError(f"data.split_file {path}: '{name}' must be a list of objects with an 'id'")
    return {name: data.get(name, []) for name in SPLITS}


def fixed_split(path: str, report_uids: Iterable[str], filenames_by_uid: Mapping[str, Iterable[str]]) -> FixedSplit:
    """The split the file fixes, over the local studies; raises SplitFileError if one study is in two splits."""
    annotation = read_annotation(path)
    uids = set(report_uids)
    keys = image_keys(filenames_by_uid)
    split_of: dict[str, str] = {}
    result = FixedSplit(uids={n: [] for n in SPLITS}, missing={n: [] for n in SPLITS}, unlisted=0)
    for name in SPLITS:
        for entry in annotation[name]:
            uid = match_study(entry, keys, uids)
            if uid is None:
                result.missing[name].append(str(entry["id"]))
                continue
            previous = split_of.get(uid)
            if previous is None:
                split_of[uid] = name
                result.uids[name].append(uid)
            elif previous != name:
                raise SplitFileError(
                    f"data.split_file {path}: study {entry['id']} (uid {uid}) is in both {previous} and {name}"
                )
    result.unlisted = len(uids - set(split_of))
    return result
