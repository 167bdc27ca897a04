"""Typed run configuration: one model per section, a one-line description per field.

A preset is a YAML file in ``configs/``; any field can be overridden with a dotted key
(``train.epochs=3``). Everything here is plain data: importing this module must stay cheap and
torch-free, because the CLI and the HTTP API validate configs with it before any GPU work starts.
"""

from __future__ import annotations

import hashlib
import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.locations import LOCATION_KEY, is_hub_id, resolve_local

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PRESETS_DIR = PROJECT_ROOT / "configs"


# libyaml's C parser when PyYAML has it: ten times faster than the pure-Python one, and every API
# submission parses a preset.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_YAML_LOADER)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and what is allowed."""


class PeftMethod(StrEnum):
    lora = "lora"
    qlora = "qlora"


class _Section(BaseModel):
    # NaN and infinities pass range checks (every comparison with NaN is false) and PostgreSQL's JSON refuses them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=True, allow_inf_nan=False)


def _names(kind: str) -> dict[str, str]:
    """Field metadata for a value that names a file ("path") or a model ("model": hub id or path); the job
    system checks every such value against the allowed roots (worker/locations.py)."""
    return {LOCATION_KEY: kind}


# The split the project always drew before the split had a seed of its own (the run seed's default).
DEFAULT_SPLIT_SEED = 42


IU_XRAY_SOURCES = ("synthetic", "kaggle", "local")
"""Sources in the Kaggle IU-Xray layout; the others each have a reader of their own (worker/data/readers)."""
OFFICIAL_SPLIT_SOURCES = {
    "mimic-cxr": "MIMIC-CXR's official split (mimic-cxr-2.0.0-split.csv)",
    "chexpert-plus": "CheXpert Plus's split column",
}
"""Sources whose datasets ship a split of their own, and how a report names it."""


class DataConfig(_Section):
    source: Literal["synthetic", "kaggle", "local", "mimic-cxr", "chexpert-plus", "manifest"] = Field(
        "synthetic",
        description="Where the data comes from: generated IU-Xray, a Kaggle IU-Xray download, or data_dir read as "
        "IU-Xray (local), MIMIC-CXR-JPG (mimic-cxr), CheXpert Plus (chexpert-plus) or your own manifest file.",
    )
    data_dir: str | None = Field(
        None,
        description="The dataset folder (or, for source=manifest, the manifest file) that data.source reads.",
        json_schema_extra=_names("path"),
    )
    kaggle_dataset: str = Field(
        "raddar/chest-xrays-indiana-university",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(/versions/[0-9]+)?$",
        max_length=200,
        description="Kaggle dataset handle for source=kaggle (owner/dataset).",
    )
    synthetic_studies: int = Field(300, ge=20, le=100_000, description="Studies the synthetic generator draws.")
    synthetic_seed: int = Field(
        0, ge=0, le=2**31 - 1, description="Seed of the synthetic dataset (apart from the split seed)."
    )
    projection: Literal["Frontal", "Lateral", "both"] = Field(
        "Frontal", description="Which views to keep: Frontal, Lateral, or both."
    )
    view_positions: list[str] | None = Field(
        None,
        max_length=8,
        description="Finer than projection, for datasets that record it: the view positions to keep "
        "(e.g. [PA] or [PA, AP]; MIMIC-CXR's ViewPosition, CheXpert Plus's and a manifest's view). None keeps all.",
    )
    images_per_study: Literal["all", "one"] = Field(
        "all",
        description="Every kept image of a study, or one (frontal before lateral, PA before AP, then file order).",
    )
    target: Literal["impression", "findings", "both"] = Field(
        "impression",
        description="Report section used as the text of each image; both: findings then impression, either "
        "alone where a report has one section only.",
    )
    official_split: bool = Field(
        True,
        description="Use the dataset's own split where it has one (MIMIC-CXR's split CSV, CheXpert Plus's split "
        "column, a manifest's split column); false draws one by patient with split_seed and split_fractions.",
    )
    image_size: int = Field(224, ge=16, le=1024, description="Side of the square cached images, in pixels.")
    split_seed: int = Field(
        DEFAULT_SPLIT_SEED,
        ge=0,
        le=2**31 - 1,
        description="Seed of the train/val/test draw, apart from the run's seed: every training seed is scored "
        "on the same studies; change it only to study the split itself.",
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.7, 0.1, 0.2), description="Train/val/test fractions of the studies, split by uid."
    )
    split_file: str | None = Field(
        None,
        description="An R2Gen-style annotation.json that fixes the split by study (split_fractions unused).",
        json_schema_extra=_names("path"),
    )
    num_workers: int = Field(2, ge=0, le=64, description="DataLoader worker processes.")
    cache_workers: int = Field(0, ge=0, le=256, description="Processes building the image cache (0: all cores).")

    def describe_split(self) -> str:
        """The split in words, for reports: the file that fixes it, or the seed and fractions of the draw."""
        if self.split_file:
            return f"split file {self.split_file}"
        percent = "/".join(f"{round(f * 100)}" for f in self.split_fractions)
        unit = "by study" if self.source in IU_XRAY_SOURCES else "by patient"
        drawn = f"split seed {self.split_seed}, {percent} train/val/test {unit}"
        # An official split without test studies (CheXpert Plus's: train and valid) has its test drawn from
        # its train by patient (worker.data.prepared._official_split).
        test_share = round(100 * self.split_fractions[2] / ((self.split_fractions[0] + self.split_fractions[2]) or 1))
        no_test = f"test drawn from its train by patient: {test_share}%, split seed {self.split_seed}"
        if self.official_split and self.source == "chexpert-plus":
            return f"{OFFICIAL_SPLIT_SOURCES[self.source]}: train, valid; {no_test}"
        if self.official_split and self.source in OFFICIAL_SPLIT_SOURCES:
            return f"{OFFICIAL_SPLIT_SOURCES[self.source]}"
        if self.official_split and self.source == "manifest":
            return f"the manifest's split column; without test studies, {no_test}; without the column, {drawn}"
        return drawn

    @field_validator("view_positions", mode="before")
    @classmethod
    def _view_positions_upper_case(cls, value: Any) -> Any:
        # "PA,AP" from a --set is the list [PA, AP]; datasets spell them in capitals (PA, AP, LATERAL, LL), and a
        # user's "pa" means the same.
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [str(v).strip().upper() for v in value if str(v).strip()] or None
        return value

    @model_validator(mode="after")
    def _data_dir_needs_a_source_that_reads_it(self) -> DataConfig:
        if self.data_dir and self.source == "synthetic":
            raise ValueError(
                "data_dir is set but source is synthetic, which ignores it: use source=local (--source local), "
                "or drop the data dir"
            )
        return self

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> DataConfig:
        if abs(sum(self.split_fractions) - 1.0) > 1e-6 or min(self.split_fractions) <= 0:
            raise ValueError("split_fractions must be three positive numbers that sum to 1, e.g. [0.7, 0.1, 0.2]")
        return self


DATA_READING_FIELDS = ("num_workers", "cache_workers")
"""Data settings that say how to read the data, not which data (a checkpoint's record and the prepared index
leave them out)."""
DATA_IDENTITY_FIELDS = tuple(name for name in DataConfig.model_fields if name not in DATA_READING_FIELDS)
"""Data settings that choose the data: its source and folder, the views, the target section, the split."""


# A hub branch, tag or commit, or the content hash a local folder is pinned to (worker/base_models.py).
REVISION_PATTERN = r"^(sha256:[0-9a-f]{64}|[A-Za-z0-9][A-Za-z0-9._/-]*)$"


class ModelConfig(_Section):
    siglip: str = Field(
        "google/siglip-base-patch16-224", description="SigLIP hub id or local path.", json_schema_extra=_names("model")
    )
    biogpt: str = Field(
        "microsoft/biogpt", description="BioGPT hub id or local path.", json_schema_extra=_names("model")
    )
    siglip_revision: str | None = Field(
        None,
        max_length=80,
        pattern=REVISION_PATTERN,
        description="Hub commit of model.siglip, or sha256:HASH of a local folder's weights; train pins it.",
    )
    biogpt_revision: str | None = Field(
        None,
        max_length=80,
        pattern=REVISION_PATTERN,
        description="Hub commit of model.biogpt, or sha256:HASH of a local folder's weights; train-full pins it.",
    )
    build_tiny_fixtures: bool = Field(
        False,
        description="Build random-init tiny models under the siglip/biogpt paths, one folder per init (smoke only).",
    )
    requires_hf_token: bool = Field(False, description="The SigLIP checkpoint is gated and needs HF_TOKEN.")


class PeftConfig(_Section):
    method: PeftMethod = Field(PeftMethod.lora, description="lora, or qlora (4-bit NF4 base + LoRA).")
    r: int = Field(16, ge=1, le=512, description="LoRA rank.")
    alpha: int = Field(32, ge=1, le=4096, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout; 0 keeps the fast path.")
    towers: Literal["vision", "text", "both"] = Field("both", description="Which SigLIP towers get adapters.")
    target_modules: str = Field(
        r".*_model\.encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))",
        description="Regex over module names; must not match the pooling head.",
    )
    double_quant: bool = Field(True, description="QLoRA: quantize the quantization constants too.")
    upcast_non_quantized: bool = Field(
        False, description="QLoRA: upcast frozen non-4-bit weights to fp32 (the PEFT default; costs memory)."
    )


INFONCE_TEMPERATURE = 0.07


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1, le=1000, description="Maximum training epochs.")
    batch_size: int = Field(16, ge=1, le=4096, description="Images per device per step.")
    lr: float = Field(1e-4, gt=0, le=1.0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, le=1.0, description="AdamW weight decay.")
    warmup_steps: int = Field(500, ge=0, le=1_000_000, description="Linear warmup steps before cosine decay.")
    loss: Literal["sigmoid", "infonce"] = Field(
        "sigmoid", description="SigLIP pairwise sigmoid (learns its logit scale and bias), or InfoNCE."
    )
    temperature: float | None = Field(
        None, gt=0, le=10, description=f"Fixed InfoNCE temperature (loss=infonce only; unset: {INFONCE_TEMPERATURE})."
    )
    max_text_length: int = Field(64, ge=8, le=512, description="SigLIP text tokens (padded to max_length).")
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = Field(
        "auto", description="Lightning precision; auto = bf16-mixed on GPUs that support it, else 32-true."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward.")
    compile: bool = Field(False, description="torch.compile the model.")
    devices: int = Field(1, ge=1, le=64, description="Devices per node; >1 uses DDP.")
    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="Lightning accelerator.")
    early_stopping_patience: int = Field(3, ge=1, le=1000, description="Epochs without val_loss gain.")
    augment: bool = Field(True, description="Light augmentation (small shifts, brightness) on train.")
    limit_train_batches: int | None = Field(None, ge=1, le=10**9, description="Cap train batches per epoch (debug).")
    resume: bool = Field(False, description="Resume from the run's last checkpoint if present.")
    max_time_s: int = Field(24 * 3600, ge=10, le=14 * 24 * 3600, description="Job time limit in seconds.")
    logit_bias_init: float | None = Field(
        None, ge=-50, le=50, description="Sigmoid loss: start the logit bias here (null: the checkpoint's value)."
    )
    loggers: list[Literal["csv", "tensorboard", "mlflow"]] = Field(
        default_factory=lambda: ["csv"],
        min_length=1,  # the learning-rate monitor needs a logger
        description="Lightning loggers: csv, tensorboard, mlflow (MLFLOW_TRACKING_URI); views, SQL stays the record.",
    )

    @property
    def infonce_temperature(self) -> float:
        return INFONCE_TEMPERATURE if self.temperature is None else self.temperature

    @field_validator("loggers", mode="before")
    @classmethod
    def _comma_separated_loggers(cls, value: Any) -> Any:
        """`--set train.loggers=csv,mlflow` arrives as one string; a list is what the field holds."""
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("loggers")
    @classmethod
    def _each_logger_once(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class GenerationConfig(_Section):
    prefix_tokens: int = Field(8, ge=1, le=256, description="K: image prefix embeddings fed to BioGPT.")
    projector: Literal["mlp", "linear"] = Field("mlp", description="Projection from SigLIP to BioGPT width.")
    features: Literal["pooled", "patches"] = Field("pooled", description="SigLIP features the projector reads.")
    biogpt_tuning: Literal["lora", "qlora", "full"] = Field("lora", description="How BioGPT is adapted.")
    lora_r: int = Field(16, ge=1, le=512, description="BioGPT LoRA rank.")
    lora_alpha: int = Field(32, ge=1, le=4096, description="BioGPT LoRA alpha.")
    epochs: int = Field(10, ge=1, le=1000, description="Report-generation training epochs.")
    batch_size: int = Field(16, ge=1, le=4096, description="Studies per step.")
    lr: float = Field(1e-4, gt=0, le=1.0, description="Peak learning rate.")
    warmup_steps: int = Field(500, ge=0, le=1_000_000, description="Linear warmup steps.")
    max_target_tokens: int = Field(96, ge=8, le=1024, description="Teacher-forced target length.")
    decoding: Literal["beam", "greedy"] = Field("beam", description="Beam search or greedy decoding.")
    num_beams: int = Field(3, ge=1, le=32, description="Beams for beam search.")
    max_new_tokens: int = Field(60, ge=1, le=1024, description="Longest generated impression.")
    no_repeat_ngram_size: int = Field(3, ge=0, le=10, description="Block repeated n-grams (0: off).")
    eval_batch_size: int = Field(16, ge=1, le=4096, description="Studies per generation batch.")


class EvalConfig(_Section):
    protocol: Literal["native", "r2gen"] = Field(
        "native", description="Text protocol: ours, or R2Gen's cleaning of findings + COCO metrics on that text."
    )
    clinical: bool = Field(
        False, description="CheXbert label F1 of model and baselines (`pip install f1chexbert`, hub for its weights)."
    )


class PathsConfig(_Section):
    var_dir: str = Field("var", description="Root for data, models, caches and artifacts (relative: to repo).")
    run_dir: str | None = Field(
        None,
        description="Where this run writes checkpoints and outputs; the job system sets one per job.",
        json_schema_extra=_names("path"),
    )


class RunConfig(_Section):
    preset: str = Field("custom", description="Name of the preset this config came from.")
    seed: int = Field(
        42, ge=0, le=2**31 - 1, description="Seed for init and data order (the split has data.split_seed)."
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    peft: PeftConfig = Field(default_factory=PeftConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)

    @model_validator(mode="after")
    def _r2gen_scores_findings(self) -> RunConfig:
        # R2Gen's numbers are on the findings section; its protocol on impressions would not compare to them.
        if self.eval.protocol == "r2gen" and self.data.target != "findings":
            raise ValueError("eval.protocol=r2gen scores the findings section: set data.target=findings as well")
        return self

    def var_path(self, *parts: str) -> Path:
        """A path under var_dir; a relative var_dir is taken from the repo root (or $MEDVL_VAR_DIR)."""
        root = Path(os.environ.get("MEDVL_VAR_DIR") or self.paths.var_dir)
        if not root.is_absolute():
            root = PROJECT_ROOT / root
        return root.joinpath(*parts)

    def run_path(self, stage: str) -> Path:
        """This run's output folder: paths.run_dir, or one per stage and config under var/artifacts."""
        if self.paths.run_dir:
            path = Path(self.paths.run_dir)
            return path if path.is_absolute() else PROJECT_ROOT / path
        return self.var_path("artifacts", f"{stage}-{self.config_hash()}")

    def local_path(self, raw: str) -> Path:
        """The file or folder a path value names: `var/...` under the var root, others from the repo root."""
        return resolve_local(raw, self.var_path())

    def resolve_model_path(self, name_or_path: str) -> str:
        """Hub ids pass through; anything else is a local path, resolved like every other path value."""
        return name_or_path if is_hub_id(name_or_path) else str(self.local_path(name_or_path))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        """Stable hash of the whole config, for grouping identical runs."""
        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


# Short CLI flags map onto dotted config keys; `run` and `submit` share them.
SHORTCUTS: dict[str, str] = {
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "peft": "peft.method",
    "devices": "train.devices",
    "seed": "seed",
    "split_seed": "data.split_seed",
    "projection": "data.projection",
    "source": "data.source",
    "data_dir": "data.data_dir",
    "resume": "train.resume",
}


DATA_DIR_KEY, DATA_SOURCE_KEY = SHORTCUTS["data_dir"], SHORTCUTS["source"]


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = _yaml_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}); fix the file") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section."""
    tree = dict(base)
    for key, value in over.items():
        both_sections = isinstance(value, dict) and isinstance(tree.get(key), dict)
        tree[key] = _merged(tree[key], value) if both_sections else value
    return tree


def _read_config_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config; ``base: PRESET`` at its top starts it from that preset, so a variant states only
    what it changes."""
    if path in seen:
        raise ConfigError(f"{path}: 'base' presets form a cycle ({' -> '.join(p.stem for p in (*seen, path))})")
    tree = _read_yaml(path)
    base = tree.pop("base", None)
    if base is None:
        return tree
    base_path = PRESETS_DIR / f"{base}.yaml"
    if not isinstance(base, str) or not base_path.is_file():
        raise ConfigError(f"{path}: unknown base preset {base!r}; allowed values: {', '.join(available_presets())}")
    return _merged(_read_config_tree(base_path, (*seen, path)), tree)


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set tree[a][b] = value for key 'a.b', refusing keys the schema does not have."""
    parts = key.split(".")
    model: type[BaseModel] = RunConfig
    node = tree
    for i, part in enumerate(parts):
        if part not in model.model_fields:
            where = ".".join(parts[:i]) or "top level"
            raise ConfigError(
                f"unknown config key '{key}': '{part}' is not a field of {where}; "
                f"allowed: {', '.join(_field_names(model))}"
            )
        annotation = model.model_fields[part].annotation
        is_last = i == len(parts) - 1
        if is_last:
            node[part] = value
            return
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise ConfigError(f"unknown config key '{key}': '{part}' is a value, not a section")
        node = node.setdefault(part, {})
        model = annotation


def _parse_scalar(raw: str) -> Any:
    """CLI values arrive as strings; YAML parsing gives numbers, booleans, null and lists their types."""
    try:
        return _yaml_load(raw)
    except yaml.YAMLError:
        return raw


def _describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    ctx = first.get("ctx") or {}
    if "expected" in ctx:
        msg = f"got {first.get('input')!r}; allowed values: {ctx['expected']}"
    elif first["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"invalid config value for '{key}': {msg}"


def load_config(
    preset: str | None = "smoke",
    overrides: dict[str, Any] | None = None,
    config_path: str | Path | None = None,
) -> RunConfig:
    """Build a RunConfig from a preset (or a YAML file) plus dotted overrides.

    Raises ConfigError with a one-line message naming the bad key and its allowed values.
    """
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass a YAML file or --preset NAME")
        tree = _read_config_tree(path)
        tree.setdefault("preset", path.stem)
    elif preset:
        # A name from the list, never a path: `../../elsewhere/x` must not reach a file outside configs/.
        if preset not in available_presets():
            raise ConfigError(f"unknown preset {preset!r}; allowed values: {', '.join(available_presets())}")
        tree = _read_config_tree(PRESETS_DIR / f"{preset}.yaml")
        tree["preset"] = preset
    else:
        tree = {}
    overrides = dict(overrides or {})
    preset_source = (tree.get("data") or {}).get("source", "synthetic")
    if overrides.get(DATA_DIR_KEY) and DATA_SOURCE_KEY not in overrides and preset_source in IU_XRAY_SOURCES:
        # A data dir given on its own means "read this folder" (as IU-Xray, unless the preset names another
        # layout, as mimic-cxr does); a preset's synthetic source would ignore it.
        overrides[DATA_SOURCE_KEY] = "local"
    for key, value in overrides.items():
        _set_dotted(tree, key, _parse_scalar(value) if isinstance(value, str) else value)
    try:
        config = RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc)) from None
    _refuse_unused_values(config)
    return config


def _refuse_unused_values(config: RunConfig) -> None:
    """A value the chosen method never reads would read, in a config or a report, as a setting that mattered.

    Checked where a user states a config (presets, files, overrides, the API), not in RunConfig itself: run
    configs recorded in older checkpoints and job rows carry the old default temperature beside the sigmoid loss.
    """
    train = config.train
    if train.loss == "sigmoid" and train.temperature is not None:
        raise ConfigError(
            f"train.temperature={train.temperature} is read only by train.loss=infonce; the sigmoid loss learns "
            "its own logit scale and bias: drop train.temperature, or set train.loss=infonce"
        )


def parse_set_options(items: list[str] | None) -> dict[str, str]:
    """Turn ['a.b=1', 'c=x'] into {'a.b': '1', 'c': 'x'}; a malformed item is a ConfigError."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. data.projection=Lateral), got '{item}'")
        result[key.strip()] = value.strip()
    return result
