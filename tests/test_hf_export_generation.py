"""The Hugging Face output of report generation (BioGPT adapter or whole model, projector, the SigLIP adapter
it reads), `jobs run export`, and pushing to the Hub without a network."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from jobs_fixtures import JobEnv, invoke
from safetensors.torch import load_file

from jobs.core.settings import reset_settings
from worker.base_models import base_dir
from worker.config import RunConfig
from worker.recorder import MemoryRecorder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def siglip_checkpoint(smoke_config: RunConfig, smoke_prepared, tmp_path_factory) -> str:
    from worker.siglip.stage import train_siglip

    config = smoke_config.model_copy(update={
        "paths": smoke_config.paths.model_copy(update={"run_dir": str(tmp_path_factory.mktemp("train"))}),
        "train": smoke_config.train.model_copy(update={"epochs": 1}),
    })  # fmt: skip
    return train_siglip(config, MemoryRecorder()).artifacts["best_checkpoint"]


@pytest.fixture(scope="module")
def generators(smoke_config: RunConfig, siglip_checkpoint, tmp_path_factory):
    """``generators(tuning)``: a two-epoch train-full run with BioGPT fully tuned (the smoke default) or with
    LoRA, trained on first use and shared by the module's tests."""
    from worker.generation.stage import train_full

    runs: dict[str, SimpleNamespace] = {}

    def run(tuning: str) -> SimpleNamespace:
        if tuning not in runs:
            config = smoke_config.model_copy(update={
                "paths": smoke_config.paths.model_copy(update={"run_dir": str(tmp_path_factory.mktemp(tuning))}),
                "generation": smoke_config.generation.model_copy(update={"epochs": 2, "biogpt_tuning": tuning}),
            })  # fmt: skip
            result = train_full(config, MemoryRecorder(), siglip_checkpoint=siglip_checkpoint)
            out = Path(result.artifacts["hf_output"])
            runs[tuning] = SimpleNamespace(tuning=tuning, config=config, result=result, out=out)
        return runs[tuning]

    return run


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_biogpt_folder_loads_with_plain_transformers_and_peft_and_matches_the_product(generators, tuning):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from worker.generation.checkpoint import load_report_model

    generator = generators(tuning)
    product = load_report_model(generator.result.artifacts["best_checkpoint"], generator.config).captioner.causal_lm
    folder = generator.out / "biogpt"
    base_path = base_dir(generator.config, "biogpt")
    if generator.tuning == "full":
        plain = AutoModelForCausalLM.from_pretrained(folder)  # whole weights: no base model needed
    else:
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), folder)
    ids = torch.tensor([[2, 11, 25, 40, 7, 19]])
    with torch.no_grad():
        expected, got = product.eval()(input_ids=ids).logits, plain.eval()(input_ids=ids).logits
        untrained = AutoModelForCausalLM.from_pretrained(base_path).eval()(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert (untrained - expected).abs().max() > 1e-3  # training changed the model: the match means something


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_projector_and_siglip_adapter_are_in_the_output(generators, tuning):
    generator = generators(tuning)
    checkpoint = torch.load(generator.result.artifacts["best_checkpoint"], map_location="cpu", weights_only=False)
    tensors = load_file(generator.out / "projector" / "model.safetensors")
    trained = {k.removeprefix("captioner.projector."): v for k, v in checkpoint["state_dict"].items()
               if k.startswith("captioner.projector.")}  # fmt: skip
    assert tensors.keys() == trained.keys()
    assert all(torch.equal(tensors[name], trained[name].float()) for name in tensors)
    described = json.loads((generator.out / "projector" / "config.json").read_text())
    assert described["feature_dim"] == checkpoint["feature_dim"] and described["prefix_tokens"] == 4
    assert (generator.out / "siglip" / "adapter_config.json").is_file()
    card = (generator.out / "README.md").read_text()
    assert f"BioGPT ({generator.tuning})" in card and "Not for clinical use" in card
    assert "The SigLIP checkpoint it reads:" in card


def test_jobs_run_export_with_merge(job_env: JobEnv, smoke_config, generators, monkeypatch, tmp_path_factory):
    # The smoke data and models live in the session's var folder: the var root of this job system too; the
    # checkpoints and images in other temp folders of the session, which become a data root.
    monkeypatch.setenv("MEDVL_VAR_DIR", str(smoke_config.paths.var_dir))
    monkeypatch.setenv("MEDVL_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))
    reset_settings()
    generator = generators("full")
    result = invoke("run", "export", "--set", f"paths.var_dir={smoke_config.paths.var_dir}",
                    "--checkpoint", generator.result.artifacts["best_checkpoint"], "--merge", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["state"] == "SUCCEEDED"
    out = Path(payload["artifacts"]["hf_output"])
    assert {"siglip", "siglip-merged", "biogpt", "projector", "README.md", "run_config.yaml"} <= {
        p.name for p in out.iterdir()
    }
    assert (out / "siglip-merged" / "model.safetensors").is_file()


def test_push_without_network_fails_naming_it_and_keeps_the_local_export(generators, monkeypatch):
    from worker.export.hub import HubPushError
    from worker.export.stage import export

    generator = generators("lora")
    checkpoint = generator.result.artifacts["best_checkpoint"]
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubPushError, match="HF_TOKEN"):
        export(generator.config, MemoryRecorder(), checkpoint=checkpoint, push_to_hub="someone/medvl-test")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: as offline as it gets
    with pytest.raises(HubPushError, match="over the network") as raised:
        export(generator.config, MemoryRecorder(), checkpoint=checkpoint, push_to_hub="someone/medvl-test")
    assert "nothing was uploaded" in str(raised.value)
    folder = Path(str(raised.value).split("The export is complete at ")[1].split(":")[0])
    assert (folder / "README.md").is_file() and (folder / "siglip" / "adapter_model.safetensors").is_file()


def test_a_bad_repo_id_is_refused_before_any_work(smoke_config):
    from worker.export.stage import export

    with pytest.raises(ValueError, match="not a repo id"):
        export(smoke_config, MemoryRecorder(), checkpoint="/nonexistent.ckpt", push_to_hub="no spaces/allowed")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_a_foreign_checkpoint_is_refused_naming_the_file(tmp_path, content):
    from worker.export.stage import read_training_checkpoint

    path = tmp_path / "model.ckpt"
    if content is None:
        torch.save({"state_dict": {}}, path)  # a checkpoint, but of something else
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.ckpt is not a checkpoint of the train or train-full stage"):
        read_training_checkpoint(path)
