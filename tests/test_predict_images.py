"""`predict` end to end on the smoke preset: a trained SigLIP + report generator on PNG, JPEG and DICOM
files made here (one 16-bit MONOCHROME1), a corrupt file among them; through the stage function and
through `jobs run predict`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from dicom_files import write_dicom
from jobs_fixtures import JobEnv, invoke
from PIL import Image

from jobs.core.settings import reset_settings
from worker.config import RunConfig
from worker.recorder import MemoryRecorder

pytestmark = pytest.mark.slow

TOP_K = 3


def _in_run_dir(config: RunConfig, run_dir: Path, **train: object) -> RunConfig:
    return config.model_copy(update={
        "paths": config.paths.model_copy(update={"run_dir": str(run_dir)}),
        "train": config.train.model_copy(update=train),
    })  # fmt: skip


@pytest.fixture(scope="module")
def trained(smoke_config: RunConfig, smoke_prepared, tmp_path_factory) -> SimpleNamespace:
    from worker.generation.stage import train_full
    from worker.siglip.stage import train_siglip

    # A short SigLIP run is enough: the generator only needs image features that differ between studies.
    siglip = train_siglip(_in_run_dir(smoke_config, tmp_path_factory.mktemp("train"), epochs=2), MemoryRecorder())
    config = _in_run_dir(smoke_config, tmp_path_factory.mktemp("train-full"))
    full = train_full(config, MemoryRecorder(), siglip_checkpoint=siglip.artifacts["best_checkpoint"])
    return SimpleNamespace(siglip=siglip, full=full, checkpoint=full.artifacts["best_checkpoint"])


@pytest.fixture(scope="module")
def inputs(smoke_prepared, tmp_path_factory) -> SimpleNamespace:
    """A folder of 5 PNG (one 16-bit), 1 JPEG and a corrupt PNG; two DICOM files beside it."""
    images = np.asarray(smoke_prepared.split("test").images[:7])
    root = tmp_path_factory.mktemp("inputs")
    folder = root / "folder"
    folder.mkdir()
    big = [Image.fromarray(image).resize((256, 256), Image.Resampling.BICUBIC) for image in images]
    for i in range(4):
        big[i].save(folder / f"study-{i}.png")
    Image.fromarray(np.asarray(big[4], dtype=np.uint16) * 257).save(folder / "study-4-16bit.png")
    big[5].convert("RGB").save(folder / "study-5.jpg", quality=95)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x13" * 200)
    mono2 = write_dicom(root / "study-6.dcm", images[6], window=(127.5, 256.0))
    # The first PNG's picture again, as a 16-bit MONOCHROME1 film (white is the lowest value) whose window
    # spans the 16-bit range: it must decode to the PNG's pixels.
    stored = ((255 - np.asarray(big[0], dtype=np.uint32)) * 257).astype(np.uint16)
    mono1 = write_dicom(root / "study-0-mono1.dcm", stored, photometric="MONOCHROME1", window=(32767.5, 65535.0))
    return SimpleNamespace(paths=[str(folder), str(mono2), str(mono1)], folder=folder, mono1=str(mono1))


@pytest.fixture(scope="module")
def predicted(smoke_config: RunConfig, trained, inputs, tmp_path_factory) -> SimpleNamespace:
    from worker.inference.stage import predict_images

    config = _in_run_dir(smoke_config, tmp_path_factory.mktemp("predict"))
    result = predict_images(config, MemoryRecorder(), checkpoint=trained.checkpoint, images=inputs.paths, top_k=TOP_K)
    records = [json.loads(line) for line in Path(result.artifacts["predictions"]).read_text().splitlines()]
    return SimpleNamespace(result=result, records=records)


def test_every_readable_file_is_predicted_and_the_corrupt_one_reported(predicted, inputs, smoke_prepared):
    records = predicted.records
    assert len(records) == 9
    failed = [r for r in records if r["status"] == "error"]
    assert [Path(r["path"]).name for r in failed] == ["corrupt.png"]
    assert "does not decode" in failed[0]["error"]
    done = [r for r in records if r["status"] == "predicted"]
    assert len(done) == 8
    assert sorted(r["format"] for r in done) == ["dicom"] * 2 + ["jpeg"] + ["png"] * 5
    training_texts = set(smoke_prepared.split("train").texts)
    for record in done:
        assert record["impression"].strip()
        cosines = [hit["cosine"] for hit in record["similar_reports"]]
        assert len(cosines) == TOP_K and cosines == sorted(cosines, reverse=True)
        assert all(-1.0 <= c <= 1.0 for c in cosines)
        assert {hit["report"] for hit in record["similar_reports"]} <= training_texts
    metrics = predicted.result.metrics
    assert (metrics["num_files"], metrics["num_predicted"], metrics["num_failed"]) == (9, 8, 1)


def test_the_monochrome1_dicom_reads_as_the_same_picture_as_its_png(predicted, inputs):
    by_name = {Path(r["path"]).name: r for r in predicted.records}
    png, dicom = by_name["study-0.png"], by_name[Path(inputs.mono1).name]
    assert dicom["similar_reports"] == png["similar_reports"]
    assert dicom["impression"] == png["impression"]


def test_the_html_page_is_self_contained_with_every_file(predicted):
    page = Path(predicted.result.artifacts["html"]).read_text()
    assert page.count("data:image/png;base64,") == 8
    assert "corrupt.png" in page and "not predicted" in page
    assert "not for clinical use" in page
    assert "src=\"http" not in page and "<link" not in page


def test_a_siglip_checkpoint_gives_retrieval_without_impressions(smoke_config, trained, inputs, tmp_path):
    from worker.inference.stage import predict_images

    config = _in_run_dir(smoke_config, tmp_path)
    png = str(inputs.folder / "study-1.png")
    result = predict_images(config, MemoryRecorder(), checkpoint=trained.siglip.artifacts["best_checkpoint"],
                            images=[png], top_k=2)
    record = json.loads(Path(result.artifacts["predictions"]).read_text())
    assert record["impression"] is None and len(record["similar_reports"]) == 2


def test_jobs_run_predict_records_a_job(job_env: JobEnv, smoke_config, trained, inputs, monkeypatch, tmp_path_factory):
    # The smoke data and models live in the session's var folder: the var root of this job system too; the
    # checkpoints and images in other temp folders of the session, which become a data root.
    monkeypatch.setenv("MEDVL_VAR_DIR", str(smoke_config.paths.var_dir))
    monkeypatch.setenv("MEDVL_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))
    reset_settings()
    args = ["run", "predict", "--set", f"paths.var_dir={smoke_config.paths.var_dir}", "--checkpoint",
            trained.checkpoint, "--images", inputs.paths[0], inputs.mono1, "--top-k", "2", "--json"]  # PATH...
    result = invoke(*args)
    assert result.exit_code == 1, result.output  # one of the files is not an image (--allow-unreadable: 0)
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["state"] == "SUCCEEDED"
    assert payload["metrics"]["num_predicted"] == 7 and payload["metrics"]["num_failed"] == 1
    lines = Path(payload["artifacts"]["predictions"]).read_text().splitlines()
    assert len(lines) == 8 and Path(payload["artifacts"]["html"]).is_file()


def test_predict_needs_images(job_env: JobEnv):
    result = invoke("run", "predict", "--checkpoint", "var/x.ckpt")
    assert result.exit_code == 2 and "needs --images" in result.output
    result = invoke("run", "predict", "scan.png", "--checkpoint", "var/x.ckpt")
    assert result.exit_code == 2 and "image paths go after --images" in result.output
