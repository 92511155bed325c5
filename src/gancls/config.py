"""params.yaml's typed schema and loader, and the device and seeding helpers every stage shares (files: gancls.files)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """params.yaml is missing or holds a bad value; the message names the file and key."""


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """params.yaml checked against the schema below; a bad file or value is one ConfigError line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse_params(raw, path)


def parse_params(raw: dict, source: str | Path = DEFAULT_PARAMS) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "value_error" and isinstance(err["input"], dict):
                problems.append(err["msg"].removeprefix("Value error, "))  # a rule across keys names them
                continue
            got = "" if err["type"] == "missing" else f" (got {err['input']!r})"
            what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{key}: {what}{got}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- the params.yaml schema ---------------------------------------------------------------------
# One class per section; params.yaml holds the defaults.  Unknown keys, missing keys, wrong types and
# out-of-range values stop with one line naming the key, before any work.

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Device = Literal["auto", "cpu", "cuda"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class DataParams(Section):
    source: Literal["sample", "cub"]
    raw_dir: str
    layout: Literal["auto", "stackgan", "reed_t7", "hdf5"]


class SampleParams(Section):
    out_dir: str
    n_classes: Annotated[int, Field(ge=2)]
    images_per_class: PositiveInt
    test_fraction: Annotated[float, Field(gt=0, lt=1)]
    grayscale_fraction: Fraction
    image_size: tuple[PositiveInt, PositiveInt]
    embedding_noise: NonNegFloat
    seed: NonNegInt


class ValidateParams(Section):
    cub_counts: bool
    min_side: PositiveInt
    max_abs_embedding: PositiveFloat
    min_embedding_norm: NonNegFloat
    report_dir: str


class PrepareParams(Section):
    load_size: PositiveInt
    bbox_crop: bool
    workers: NonNegInt
    out: str
    report_dir: str


class ScorerParams(Section):
    kinds: Annotated[list[str], Field(min_length=1)]
    free_kinds: list[str]
    width: PositiveInt
    epochs: PositiveInt
    batch_size: Annotated[int, Field(ge=2)]
    lr: PositiveFloat
    weight_decay: NonNegFloat
    heldout_fraction: Annotated[float, Field(gt=0, lt=1)]
    device: Device
    out: str
    metrics: str


class ModelParams(Section):
    z_dim: PositiveInt
    embedding_dim: PositiveInt
    text_dim: PositiveInt
    ngf: PositiveInt
    ndf: PositiveInt
    g_res_blocks: NonNegInt
    d_res_blocks: NonNegInt
    image_size: Literal[64]
    leak: Annotated[float, Field(ge=0, lt=1)]
    cond_aug: bool = False  # the default only reads checkpoints of earlier versions; params.yaml sets it
    d_projection: bool = False  # likewise
    g_upsample: Literal["deconv", "nearest", "bilinear"] = "deconv"  # likewise: the seed's deconvolutions
    g_skip_rgb: bool = False  # likewise: the seed's G draws its picture in the last layer alone
    g_cond_norm: bool = False  # likewise: the seed's G reads the text at its input alone
    d_norm: Literal["batch", "spectral"] = "batch"  # likewise: the seed's BatchNorm in D
    d_uncond: NonNegFloat = 0.0  # likewise: the seed's D judges pairs only (no realism head)
    d_uncond_features: Literal["shared", "own"] = "shared"  # where the realism head reads (d_uncond > 0)
    d_uncond_ndf: PositiveInt | None = None  # own: that tower's width (null: ndf)


class TrainParams(Section):
    # How a run is watched (console, grids, checkpoints) and placed (device, processes, speed switches, folders),
    # never what it computes: dvc.yaml's train stage skips these, so changing one retrains nothing (test_config).
    RUN_KEYS: ClassVar[frozenset[str]] = frozenset(
        "device processes precision tf32 channels_last compile cuda_graph log_every checkpoint_every checkpoint_dir"
        " resume sample_every grid_size eval_every eval_images out_dir live_dir grid progress_gif".split()
    )

    epochs: PositiveInt
    batch_size: Annotated[int, Field(ge=2)]
    lr: PositiveFloat
    lr_d: PositiveFloat | None
    beta1: Annotated[float, Field(ge=0, lt=1)]
    beta2: Annotated[float, Field(ge=0, lt=1)]
    lr_decay_every: PositiveInt
    lr_decay_factor: Annotated[float, Field(gt=0, le=1)]
    captions_per_sample: PositiveInt
    wrong_weight: NonNegFloat
    int_weight: NonNegFloat
    int_beta: Fraction
    mode_seeking: NonNegFloat
    kl_weight: NonNegFloat
    g_realism: NonNegFloat | None
    loss: Literal["bce", "hinge"]
    augment: list[Literal["translation", "cutout"]]
    # the realism tower's own view (model.d_uncond_features own)
    augment_realism: list[Literal["translation", "cutout"]] = []
    penalty: Literal["none", "r1", "magp"]
    penalty_weight: NonNegFloat
    penalty_power: PositiveFloat
    penalty_every: PositiveInt
    flip: bool
    crop_jitter: NonNegInt | None
    one_pass: bool
    ema_decay: Annotated[float, Field(ge=0, lt=1)]
    ema_start: NonNegInt
    bn_stat_batches: PositiveInt
    device: Device
    processes: PositiveInt
    precision: Literal["auto", "fp32", "bf16"]
    tf32: bool
    channels_last: bool
    compile: bool
    cuda_graph: bool
    log_every: PositiveInt
    checkpoint_every: PositiveInt
    checkpoint_dir: str
    resume: bool
    sample_every: PositiveInt
    grid_size: PositiveInt
    eval_every: NonNegInt
    eval_images: Annotated[int, Field(ge=2)]
    out_dir: str
    live_dir: str
    grid: str
    progress_gif: str

    @model_validator(mode="after")
    def _rules_across_keys(self):
        if self.batch_size % self.processes:
            raise ValueError(f"train.batch_size {self.batch_size} is not divisible by train.processes {self.processes}")
        if self.compile and self.cuda_graph:
            raise ValueError("train.compile and train.cuda_graph are both true: choose one")
        return self

    @classmethod
    def model_keys(cls) -> list[str]:
        """The keys that change the trained model: what dvc.yaml's train stage depends on."""
        return [k for k in cls.model_fields if k not in cls.RUN_KEYS]

    @property
    def metrics(self) -> str:  # the training summary DVCLive writes (``dvc metrics show`` lists it)
        return f"{self.live_dir}/metrics.json"


class GenerateParams(Section):
    num_samples: PositiveInt
    batch_size: PositiveInt
    grid_captions: PositiveInt
    grid_noise: PositiveInt
    interp_pairs: PositiveInt
    interp_steps: Annotated[int, Field(ge=2)]
    out_dir: str
    grid: str
    interp_grid: str
    noise_grid: str
    sentences: Annotated[list[Annotated[str, Field(min_length=1, max_length=201)]], Field(min_length=1)]
    sentences_grid: str
    side_by_side: str
    noise_set_captions: PositiveInt
    noise_set_size: Annotated[int, Field(ge=2)]


class EvaluateParams(Section):
    feature_extractor: str
    real_features: str
    floor: str
    is_classifier: str | None
    is_splits: PositiveInt
    kid_subset_size: Annotated[int, Field(ge=2)]
    kid_subsets: PositiveInt
    diversity_feature_captions: PositiveInt
    batch_size: PositiveInt
    device: Device
    out: str
    report: str


class ArchiveParams(Section):
    url: str  # Google Drive links and plain HTTP(S) alike (gdown)
    file: Annotated[str, Field(pattern=r"^[^/\\]+$")]  # its name in fetch.download_dir
    md5: str | None  # published MD5, checked when given


class FetchParams(Section):
    data_dir: str
    download_dir: str
    checksums: str
    connect_timeout: PositiveFloat
    read_timeout: PositiveFloat
    retries: NonNegInt
    dvc_add: bool
    cub: ArchiveParams
    embeddings: ArchiveParams
    captions: ArchiveParams
    text_encoder: ArchiveParams | None = None  # Reed's pretrained CUB encoder (.t7); null: not fetched


class RegressionRule(Section):
    """How much a metric may worsen against the baseline before a scheduled run fails (null: no limit)."""

    max_drop: NonNegFloat | None = None  # higher is better (text_match.accuracy)
    max_rise: NonNegFloat | None = None  # lower is better (fid, kid_mean)


class FlowTimeouts(Section):
    """Seconds each task of the scheduled run may take; past it the task, and the run, fail."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    check: PositiveFloat  # worktree, dvc checkout, dvc status
    fetch: PositiveFloat
    validation: PositiveFloat = Field(alias="validate")  # `validate` is a pydantic method name
    prepare: PositiveFloat
    references: PositiveFloat
    train: PositiveFloat
    generate: PositiveFloat
    evaluate: PositiveFloat
    record: PositiveFloat  # dvc exp save, dvc metrics diff, artifacts

    def of(self, step: str) -> float:
        """The timeout of a step by its name in params.yaml (``validate``, ``train``, ...)."""
        return getattr(self, "validation" if step == "validate" else step)


class FlowParams(Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]  # deployment name
    cron: str
    baseline: str
    collision: Literal["enqueue", "cancel_new"]
    fetch: bool
    fetch_retries: NonNegInt
    fetch_backoff: PositiveFloat
    lock_wait: NonNegFloat
    progress_every: PositiveFloat
    timeouts: FlowTimeouts
    regression: dict[str, RegressionRule]


class ServeParams(Section):
    host: str
    port: Annotated[int, Field(ge=0, le=65535)]
    home: str
    start_timeout: PositiveFloat
    restarts: NonNegInt  # times the server serve started is started again after it dies


class DemoParams(Section):
    """``gancls demo``: the local page (not a stage; no stage reads it)."""

    host: str
    port: Annotated[int, Field(ge=0, le=65535)]  # 0: any free port
    examples: Annotated[list[Annotated[str, Field(min_length=1, max_length=201)]], Field(min_length=1)]
    n_images: Annotated[int, Field(ge=1, le=64)]
    interp_steps: Annotated[int, Field(ge=2, le=32)]
    seed: NonNegInt
    device: Device
    concurrency: PositiveInt
    queue_size: PositiveInt


class EncoderSizes(Section):
    """Widths of the char-CNN-RNN (Reed's: 384, 512, 512, 512); the output is model.embedding_dim."""

    c1: PositiveInt
    c2: PositiveInt
    c3: PositiveInt
    hidden: PositiveInt


class TextEncoderParams(Section):
    source: Literal["fit", "reed"]
    reed_t7: str  # under data.raw_dir (gancls fetch puts Reed's file there)
    sizes: EncoderSizes
    epochs: PositiveInt
    batch_size: Annotated[int, Field(ge=2)]
    lr: PositiveFloat
    contrastive_weight: NonNegFloat
    temperature: PositiveFloat
    device: Device
    weights: str
    metrics: str


class Params(Section):
    """The whole params.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    seed: NonNegInt
    # the instruments' seed (scorer, text encoder, real floor): a sweep over `seed` varies the GAN alone;
    # 0 where a params.yaml from before it has none (they used `seed`)
    reference_seed: NonNegInt = 0
    stage_times: str
    data: DataParams
    sample: SampleParams
    validation: ValidateParams = Field(alias="validate")  # `validate` is a pydantic method name
    prepare: PrepareParams
    scorer: ScorerParams
    model: ModelParams
    train: TrainParams
    generate: GenerateParams
    evaluate: EvaluateParams
    text_encoder: TextEncoderParams
    fetch: FetchParams
    flow: FlowParams
    serve: ServeParams
    demo: DemoParams

    @model_validator(mode="after")
    def _rules_across_sections(self):
        m = self.model
        if self.train.augment_realism and not (m.d_uncond > 0 and m.d_uncond_features == "own"):
            raise ValueError(
                "train.augment_realism needs a realism tower of its own (model.d_uncond > 0, d_uncond_features: own)"
            )
        return self
