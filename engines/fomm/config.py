"""FOMM configs: the official FOMM YAML layout (``config/vox-256.yaml`` …) as typed dataclasses.

An official FOMM config has ``model_params.common_params.num_kp`` (TPSMM's has ``num_tps``) and the
dense motion parameters nested in ``generator_params.dense_motion_params``. Built-in names are
``fomm-vox-256`` and ``fomm-vox-adv-256`` (``engines/fomm/configs/``). ``--config`` takes them or an
official FOMM YAML anywhere a TPSMM config is accepted: :func:`splinecam.engines.tpsmm.config.load_config`
and ``config_from_dict`` hand FOMM layouts to this module.

This module imports nothing of TPSMM's (the TPSMM config module calls into it, not the other way).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from splinecam.engines.errors import ConfigError

FAMILY = "fomm"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: columns of one FOMM keypoint row: x, y, then the 2×2 jacobian row-major (see :mod:`.keypoints`)
KP_WIDTH = 6


@dataclass(frozen=True)
class FommKeypointParams:
    """Official ``kp_detector_params``: an hourglass on the anti-aliased ``scale_factor`` image, a
    ``temperature`` softmax heatmap per keypoint and (``estimate_jacobian``) 4 jacobian maps per keypoint
    (one shared set with ``single_jacobian_map``); ``pad`` is the 7×7 heads' padding."""

    temperature: float = 0.1
    block_expansion: int = 32
    max_features: int = 1024
    scale_factor: float = 0.25
    num_blocks: int = 5
    single_jacobian_map: bool = False
    pad: int = 0


@dataclass(frozen=True)
class FommDenseMotionParams:
    """Official ``generator_params.dense_motion_params``."""

    block_expansion: int = 64
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25


@dataclass(frozen=True)
class FommGeneratorParams:
    """Official ``generator_params`` (the occlusion-aware generator, Johnson-style encoder/decoder)."""

    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    num_bottleneck_blocks: int = 6
    estimate_occlusion_map: bool = True


@dataclass(frozen=True)
class FommConfig:
    """Everything needed to build FOMM's two networks (``kp_detector``, ``generator``).

    The attributes the model-neutral code reads are TPSMM's names: ``name``, ``image_size``, ``num_kp``,
    ``num_channels``, ``kp_width`` (6: keypoints carry jacobians), ``landmark_keypoints`` (False), ``bg``
    (False: FOMM has no background motion), ``family`` ("fomm"). The other YAML sections are kept as
    given (``extra``) so a config round-trips through our safetensors.
    """

    name: str
    num_kp: int = 10
    num_channels: int = 3
    estimate_jacobian: bool = True
    image_size: int = 256
    keypoint: FommKeypointParams = field(default_factory=FommKeypointParams)
    generator: FommGeneratorParams = field(default_factory=FommGeneratorParams)
    dense_motion: FommDenseMotionParams = field(default_factory=FommDenseMotionParams)
    discriminator_params: dict = field(default_factory=dict, compare=False)
    extra: dict = field(default_factory=dict, compare=False)

    family = FAMILY
    kp_width = KP_WIDTH
    landmark_keypoints = False
    bg = False

    @property
    def num_source_features(self) -> int:
        """F: the generator caches one encoder map per avatar (the bottleneck input)."""
        return 1

    @property
    def motion_size(self) -> int:
        """s: the dense motion resolution (S × dense-motion scale factor)."""
        return int(self.image_size * self.dense_motion.scale_factor)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The config in the official FOMM YAML layout (round-trips through :func:`fomm_config_from_dict`)."""
        generator = asdict(self.generator)
        generator["dense_motion_params"] = asdict(self.dense_motion)
        kp = {k: v for k, v in asdict(self.keypoint).items()
              if not (k in ("single_jacobian_map", "pad") and v == getattr(FommKeypointParams, k))}
        model_params = {"common_params": {"num_kp": self.num_kp, "num_channels": self.num_channels,
                                          "estimate_jacobian": self.estimate_jacobian},
                        "kp_detector_params": kp, "generator_params": generator}
        if self.discriminator_params:
            model_params["discriminator_params"] = dict(self.discriminator_params)
        out = {"family": FAMILY, "name": self.name, "image_size": self.image_size, **self.extra,
               "model_params": model_params}
        return out


def is_fomm_layout(data: Any) -> bool:
    """Whether a parsed YAML dict is a FOMM config (``family: fomm``, or the official FOMM layout)."""
    if not isinstance(data, dict):
        return False
    if data.get("family") == FAMILY:
        return True
    mp = data.get("model_params") or {}
    if not isinstance(mp, dict):
        return False
    common = mp.get("common_params") or {}
    gen = mp.get("generator_params") or {}
    if not isinstance(common, dict):
        common = {}
    return ("num_kp" in common and "num_tps" not in common) or (isinstance(gen, dict) and "dense_motion_params" in gen)


def builtin_config_names() -> list[str]:
    """FOMM names accepted by ``--config`` besides a YAML path."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def builtin_config_path(name: str) -> Path | None:
    """The YAML of a built-in FOMM config name, or None."""
    path = CONFIG_DIR / f"{name}.yaml"
    return path if "/" not in name and "\\" not in name and path.is_file() else None


def fomm_config_from_dict(data: dict[str, Any], name: str) -> FommConfig:
    """Build a :class:`FommConfig` from a dict in the official FOMM YAML layout."""
    mp = data.get("model_params") or {}
    common = dict(mp.get("common_params") or {})
    gen = dict(mp.get("generator_params") or {})
    dense = gen.pop("dense_motion_params", None)
    if dense is None:
        raise ConfigError(f"FOMM config {name!r} has no generator_params.dense_motion_params: a generator without "
                          f"dense motion cannot animate")
    try:
        num_kp = int(common.pop("num_kp", 10))
        num_channels = int(common.pop("num_channels", 3))
        estimate_jacobian = bool(common.pop("estimate_jacobian", False))
        if common:
            raise TypeError(f"common_params has {', '.join(sorted(common))}")
        keypoint = FommKeypointParams(**(mp.get("kp_detector_params") or {}))
        generator = FommGeneratorParams(**gen)
        dense_motion = FommDenseMotionParams(**dense)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"FOMM config {name!r}: unexpected model parameter ({exc})") from None
    dataset = data.get("dataset_params") or {}
    image_size = data.get("image_size")
    if image_size is None and dataset.get("frame_shape"):
        image_size = int(dataset["frame_shape"][0])
    extra = {k: v for k, v in data.items() if k not in ("model_params", "family", "name", "image_size")}
    return FommConfig(name=str(data.get("name", name)), num_kp=num_kp, num_channels=num_channels,
                      estimate_jacobian=estimate_jacobian, image_size=int(image_size or 256), keypoint=keypoint,
                      generator=generator, dense_motion=dense_motion,
                      discriminator_params=dict(mp.get("discriminator_params") or {}), extra=extra)


def load_fomm_config(path: Path, name: str) -> FommConfig:
    """A FOMM config from a YAML file (built-in or official)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"config {str(path)!r} is not readable YAML: {str(exc).splitlines()[0]}") from None
    if not is_fomm_layout(data):
        raise ConfigError(f"config {str(path)!r} is not an official-layout FOMM config")
    return fomm_config_from_dict(data, name)
