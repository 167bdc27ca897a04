import pytest

from worker.config import ConfigError, PeftMethod, load_config, parse_set_options


def test_presets_load_with_seed_defaults():
    cfg = load_config("iu-xray")
    assert cfg.train.batch_size == 16
    assert cfg.train.epochs == 10
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.warmup_steps == 500
    assert cfg.train.loss == "sigmoid"
    assert cfg.train.temperature is None  # the sigmoid loss learns its scale: no temperature listed
    assert cfg.data.projection == "Frontal"
    assert cfg.model.siglip == "google/siglip-base-patch16-224"
    assert load_config("medsiglip").model.requires_hf_token is True


def test_overrides_reach_nested_fields():
    cfg = load_config("smoke", {"train.epochs": "3", "peft.method": "qlora", "data.projection": "Lateral"})
    assert cfg.train.epochs == 3
    assert cfg.peft.method == PeftMethod.qlora.value
    assert cfg.data.projection == "Lateral"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"data.projection": "Oblique"}, "'data.projection'"),
        ({"data.projection": "Oblique"}, "'Frontal', 'Lateral' or 'both'"),
        ({"data.nope": "1"}, "unknown config key 'data.nope'"),
        ({"train.epochs": "many"}, "'train.epochs'"),
        ({"train.epochs": "0"}, "greater than or equal to 1"),
        ({"train.epochs.x": "1"}, "is a value, not a section"),
    ],
)
def test_bad_overrides_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config("smoke", overrides)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset_lists_the_presets():
    allowed = "iu-xray, iu-xray-r2gen, medsiglip, mimic-cxr, mimic-cxr-r2gen, smoke"
    with pytest.raises(ConfigError, match=f"allowed values: {allowed}"):
        load_config("nope")


def test_set_options_parse_and_reject_malformed():
    assert parse_set_options(["a.b=1", "c = x"]) == {"a.b": "1", "c": "x"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_options(["novalue"])


def test_config_hash_changes_with_content():
    assert load_config("smoke").config_hash() == load_config("smoke").config_hash()
    assert load_config("smoke").config_hash() != load_config("smoke", {"seed": "1"}).config_hash()


def test_r2gen_preset_is_iu_xray_with_the_literature_protocol():
    base, r2gen = load_config("iu-xray").to_dict(), load_config("iu-xray-r2gen").to_dict()
    assert r2gen["eval"] == {"protocol": "r2gen", "clinical": False}
    assert base["eval"] == {"protocol": "native", "clinical": False}
    assert r2gen["data"]["target"] == "findings"
    # Everything the variant does not state comes from its base preset.
    for section in ("model", "peft", "train"):
        assert r2gen[section] == base[section], section
    assert r2gen["data"]["source"] == base["data"]["source"] == "kaggle"


def test_r2gen_protocol_refuses_the_impression_target():
    with pytest.raises(ConfigError, match=r"data\.target=findings"):
        load_config("iu-xray", {"eval.protocol": "r2gen"})
    assert load_config("smoke", {"eval.protocol": "r2gen", "data.target": "findings"}).eval.protocol == "r2gen"


def test_a_config_file_can_start_from_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: smoke\ntrain:\n  epochs: 2\n")
    cfg = load_config(config_path=path)
    assert cfg.train.epochs == 2 and cfg.train.lr == load_config("smoke").train.lr
    path.write_text("base: nope\n")
    with pytest.raises(ConfigError, match="unknown base preset 'nope'"):
        load_config(config_path=path)


def test_a_temperature_under_the_sigmoid_loss_is_refused_in_one_line():
    with pytest.raises(ConfigError) as refused:
        load_config("iu-xray", {"train.temperature": "0.05"})
    message = str(refused.value)
    assert "\n" not in message
    assert "train.temperature=0.05" in message and "train.loss=infonce" in message


def test_a_temperature_is_used_by_the_infonce_loss():
    cfg = load_config("smoke", {"train.loss": "infonce", "train.temperature": "0.05"})
    assert cfg.train.infonce_temperature == pytest.approx(0.05)
    assert load_config("smoke", {"train.loss": "infonce"}).train.infonce_temperature == pytest.approx(0.07)


def test_the_split_seed_is_apart_from_the_run_seed():
    cfg = load_config("smoke", {"seed": "7"})
    assert (cfg.seed, cfg.data.split_seed) == (7, 42)
    assert load_config("smoke", {"data.split_seed": "7"}).data.split_seed == 7
