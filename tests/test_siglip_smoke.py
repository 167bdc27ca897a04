"""Done-when of the SigLIP stage on the smoke preset: LoRA and QLoRA each lower the validation loss and
retrieve the right report well above chance (synthetic IU-Xray data, tiny random-init SigLIP, CPU)."""

from __future__ import annotations

import pytest
import torch

from worker.config import load_config
from worker.recorder import MemoryRecorder
from worker.siglip.stage import train_siglip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(smoke_config, smoke_prepared, tmp_path_factory):
    """Both methods trained once on the smoke preset: {method: (result, recorder)}."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared cores: extra threads only contend (and change the numerics)
    runs = {}
    for method in ("lora", "qlora"):
        config = load_config("smoke", {
            "paths.var_dir": smoke_config.paths.var_dir,
            "paths.run_dir": str(tmp_path_factory.mktemp(f"train-{method}")),
            "peft.method": method,
        })
        recorder = MemoryRecorder()
        runs[method] = (train_siglip(config, recorder), recorder)
    torch.set_num_threads(threads)
    return runs


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_each_method_learns_the_synthetic_signal(trained, method):
    result, recorder = trained[method]
    metrics = result.metrics
    summary = {k: metrics[k] for k in ("i2t_recall@1", "i2t_recall@1_chance", "best_val_loss", "epochs_run")}
    assert result.status == "succeeded"
    first_val_loss = recorder.series("val_loss")[0]
    assert metrics["best_val_loss"] < 0.9 * first_val_loss, summary
    assert metrics["i2t_recall@1"] >= 3 * metrics["i2t_recall@1_chance"], summary
    assert metrics["pos_cosine"] > metrics["neg_cosine"]


def test_qlora_holds_its_weights_in_less_memory(trained):
    lora, _ = trained["lora"]
    qlora, _ = trained["qlora"]
    assert qlora.metrics["weight_memory_mb"] < 0.75 * lora.metrics["weight_memory_mb"]
    assert qlora.metrics["trainable_params"] == lora.metrics["trainable_params"]
