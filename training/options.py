"""What a ``train`` run is asked to do: the command-line options (:class:`TrainOptions`, stored in the
checkpoint) and the config's ``train_params`` resolved and checked (:class:`TrainSchedule`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import yaml

from splinecam.engines.errors import SplinecamError
from splinecam.engines.tpsmm.config import ModelConfig
from splinecam.engines.validate import Range, ValidationError

# what the config's train_params may hold (engines/validate.py); a bad value is one line, never a traceback
TRAIN_PARAMS = {
    "num_epochs": Range(int, 1, 10**6), "num_repeats": Range(int, 1, 10**6), "epoch_milestones": Range(int, 0, 10**6),
    "lr_generator": Range(float, 0, 1, low_open=True), "batch_size": Range(int, 1, 4096),
    "scales": Range(float, 0, 1, low_open=True), "dropout_epoch": Range(int, 0, 10**6),
    "dropout_maxp": Range(float, 0, 1), "dropout_startp": Range(float, 0, 1), "dropout_inc_epoch": Range(int, 1, 10**6),
    "bg_start": Range(int, 0, 10**6),
}
LOSS_WEIGHT = Range(float, 0, 1e6)
LOSS_KEYS = ("perceptual", "pixel", "equivariance_value", "warp_loss", "bg", "landmark", "fold", "fold_cross")
DEFAULT_LOSS_WEIGHTS = {"perceptual": [10, 10, 10, 10, 10], "equivariance_value": 10, "warp_loss": 10, "bg": 10,
                        "pixel": 0, "landmark": 0, "fold": 0, "fold_cross": 0}
DEFAULT_TRANSFORM = {"sigma_affine": 0.05, "sigma_tps": 0.005, "points_tps": 5}


@dataclass
class TrainOptions:
    """Everything a run depends on besides the model config (stored in the checkpoint)."""

    data: list[str]      # prepare-data folders (``--data``, repeatable): the clips of all of them
    out: str
    resume: bool = False
    init: str | None = None
    max_steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    threads: int | None = None
    image_size: int | None = None
    bf16: bool = False
    vgg_weights: str | None = None
    perceptual_width: float = 0.25
    lr: float | None = None
    epoch_milestones: list[int] | None = None
    train_param: list[str] | None = None
    num_repeats: int | None = None
    checkpoint_minutes: float = 5.0
    checkpoint_steps: int | None = None
    log_every: int = 10
    vis_every: int = 200
    warmstart_steps: int = 0
    warmstart_lr: float = 1e-3
    warmstart_batch: int = 16
    landmark_augment: bool = False
    landmark_weight: float | None = None
    freeze_keypoints: bool = False
    pixel_weight: float | None = None
    seed: int = 0


def options_from_args(args) -> TrainOptions:
    """The :class:`TrainOptions` of parsed ``train`` arguments."""
    fields = TrainOptions.__dataclass_fields__
    return TrainOptions(**{k: getattr(args, k) for k in fields if hasattr(args, k)})


def with_train_params(cfg: ModelConfig, assignments: list[str]) -> ModelConfig:
    """``--train-param KEY=VALUE`` overrides of the config's ``train_params`` (VALUE is YAML)."""
    tp = dict(cfg.train_params)
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SplinecamError(f"--train-param {item!r}: expected KEY=VALUE, e.g. dropout_epoch=0")
        tp[key.strip()] = yaml.safe_load(value)
    return dataclasses.replace(cfg, train_params=tp)


def _param(cfg: ModelConfig, key: str, default):
    """The config's (or --train-param's) value of ``key``, checked (engines/validate.py)."""
    value = (cfg.train_params or {}).get(key, default)
    rng = TRAIN_PARAMS[key]
    try:
        if isinstance(default, list):
            if not isinstance(value, (list, tuple)):
                raise ValidationError(f"train_params.{key} must be a list, got {value!r:.40}")
            return [rng.check(v, f"train_params.{key}[{i}]") for i, v in enumerate(value)]
        return rng.check(value, f"train_params.{key}")
    except ValidationError as err:
        raise SplinecamError(f"config {cfg.name!r}: {err}") from None


def _loss_weights(cfg: ModelConfig, opts: TrainOptions) -> dict:
    """``train_params.loss_weights`` with the defaults and the command line's overrides, checked."""
    lw = (cfg.train_params or {}).get("loss_weights") or {}
    if not isinstance(lw, dict):
        raise SplinecamError(f"config {cfg.name!r}: train_params.loss_weights must be a mapping")
    lw = dict(lw)
    for key, value in DEFAULT_LOSS_WEIGHTS.items():
        lw.setdefault(key, list(value) if isinstance(value, list) else value)
    if opts.landmark_weight is not None:
        lw["landmark"] = opts.landmark_weight
    if opts.pixel_weight is not None:
        lw["pixel"] = opts.pixel_weight
    for k, v in lw.items():
        try:
            for i, w in enumerate(v if isinstance(v, (list, tuple)) else [v]):
                LOSS_WEIGHT.check(w, f"train_params.loss_weights.{k}" + (f"[{i}]" if isinstance(v, list) else ""))
        except ValidationError as err:
            raise SplinecamError(f"config {cfg.name!r}: {err}") from None
    return lw


@dataclass
class TrainSchedule:
    """The training section of the config, resolved (official ``train_params`` names)."""

    num_epochs: int
    num_repeats: int
    epoch_milestones: list[int]
    lr: float
    batch_size: int
    scales: list[float]
    dropout_epoch: int
    dropout_maxp: float
    dropout_startp: float
    dropout_inc_epoch: int
    bg_start: int
    transform_params: dict
    loss_weights: dict

    @classmethod
    def from_config(cls, cfg: ModelConfig, opts: TrainOptions) -> "TrainSchedule":
        def param(key, default):
            return _param(cfg, key, default)

        transform = (cfg.train_params or {}).get("transform_params") or dict(DEFAULT_TRANSFORM)
        if not isinstance(transform, dict):
            raise SplinecamError(f"config {cfg.name!r}: train_params.transform_params must be a mapping")
        return cls(
            num_epochs=opts.epochs or param("num_epochs", 100),
            num_repeats=opts.num_repeats or param("num_repeats", 1),
            epoch_milestones=(list(opts.epoch_milestones) if opts.epoch_milestones is not None
                              else param("epoch_milestones", [])),
            lr=float(opts.lr or param("lr_generator", 2e-4)),
            batch_size=opts.batch_size or param("batch_size", 8),
            scales=[float(x) for x in param("scales", [1, 0.5, 0.25, 0.125])],
            dropout_epoch=param("dropout_epoch", 0),
            dropout_maxp=float(param("dropout_maxp", 0.3)),
            dropout_startp=float(param("dropout_startp", 0.1)),
            dropout_inc_epoch=max(1, param("dropout_inc_epoch", 10)),
            bg_start=param("bg_start", 0),
            transform_params=dict(transform),
            loss_weights=_loss_weights(cfg, opts),
        )

    def dropout_p(self, epoch: int) -> float | None:
        """TPS dropout probability of an epoch (None = off)."""
        if epoch >= self.dropout_epoch:
            return None
        return min(self.dropout_startp + 0.1 * (epoch // self.dropout_inc_epoch), self.dropout_maxp)
