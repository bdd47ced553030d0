"""Model configs: the official TPSMM YAML layout, as typed dataclasses.

A config is named (``vox-256``, ``taichi-256``, ``ted-384``, ``mgif-256``, ``lite-256`` …: the YAML
files in ``engines/tpsmm/configs/``) or given as a path to a YAML file in the official layout
(``model_params`` / ``train_params`` / ``train_avd_params`` / ``dataset_params``). ``--config``
takes either, everywhere.

FOMM configs (built-in ``fomm-vox-256`` / ``fomm-vox-adv-256``, or an official FOMM YAML) are accepted by
the same two entry points, :func:`load_config` and :func:`config_from_dict`, which hand them to
:mod:`splinecam.engines.fomm.config` and return its ``FommConfig``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from splinecam.engines.errors import ConfigError
from splinecam.engines.validate import Range, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


GENERATOR_KINDS = ("inpainting", "warp-refine", "keypoint-mask")
DENSE_MOTION_KINDS = ("hourglass", "light", "none")
KEYPOINT_HEADS = ("fc", "heatmap", "landmarks")


@dataclass(frozen=True)
class GeneratorParams:
    """Inpainting network widths (official ``generator_params``).

    ``kind`` is ours: ``inpainting`` (official), ``warp-refine``
    (:class:`splinecam.engines.tpsmm.light.WarpRefineGenerator`, the CPU config's) or ``keypoint-mask``
    (:class:`splinecam.engines.tpsmm.kpmask.KeypointMaskGenerator`: no warp, the frame synthesised from
    the source and keypoint masks; it goes with dense motion ``kind: none``).
    """

    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 3
    kind: str = "inpainting"

    def __post_init__(self) -> None:
        if self.kind not in GENERATOR_KINDS:
            raise ValueError(f"generator_params.kind must be one of {', '.join(GENERATOR_KINDS)}, not {self.kind!r}")


@dataclass(frozen=True)
class DenseMotionParams:
    """Dense motion network widths (official ``dense_motion_params``).

    ``kind`` is ours: ``hourglass`` (official), ``light`` (:class:`splinecam.engines.tpsmm.light.LightDenseMotion`)
    or ``none`` (:class:`splinecam.engines.tpsmm.kpmask.KeypointMasks`: no motion estimated, keypoint masks
    only; with the ``keypoint-mask`` generator; only ``scale_factor`` applies, the masks' size).
    """

    block_expansion: int = 64
    max_features: int = 1024
    num_blocks: int = 5
    scale_factor: float = 0.25
    kind: str = "hourglass"
    #: where the TPS systems' 0.01 regulariser goes (engines/tpsmm/geometry.py TPS_REGULARISE): "all" is
    #: the official system; "kernel" reproduces affine maps exactly (a still face stays still)
    tps_regularise: str = "all"
    #: TPS groups solved as one least-squares affine map of the ``affine_fit`` groups' keypoints (all when
    #: empty) instead of a spline (engines/tpsmm/geometry.py AffineGroups); none officially
    affine_tps: tuple[int, ...] = ()
    affine_fit: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for key in ("affine_tps", "affine_fit"):
            value = getattr(self, key)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and v >= 0 for v in value):
                raise ValueError(f"dense_motion_params.{key} must be a list of TPS group indices, not {value!r:.40}")
            object.__setattr__(self, key, tuple(value))
        if self.kind not in DENSE_MOTION_KINDS:
            raise ValueError(f"dense_motion_params.kind must be one of {', '.join(DENSE_MOTION_KINDS)}, "
                             f"not {self.kind!r}")
        if self.tps_regularise not in ("all", "kernel"):
            raise ValueError(f"dense_motion_params.tps_regularise must be 'all' (official) or 'kernel', "
                             f"not {self.tps_regularise!r}")


@dataclass(frozen=True)
class AVDParams:
    """AVD network bottlenecks (official ``avd_network_params``)."""

    id_bottle_size: int = 128
    pose_bottle_size: int = 128


@dataclass(frozen=True)
class KeypointParams:
    """Keypoint detector / background predictor backbone.

    ``width`` scales every ResNet18 channel count (64 in the official model); ``depth`` is the
    number of BasicBlocks per stage (2 in ResNet18). ``head`` is how keypoints come out of the
    backbone: ``fc`` (official: global pooling + a linear layer regressing all coordinates) or
    ``heatmap`` (ours: one spatial-softmax heatmap per keypoint at S/8, coordinates by soft-argmax;
    translation-equivariant, so it follows faces it never saw far better; see
    :class:`splinecam.engines.tpsmm.networks.HeatmapHead`) or ``landmarks`` (ours: no keypoint network —
    the keypoints are the face-mesh landmarks listed in ``landmarks``, 5 per TPS, in the mediapipe
    face mesh's numbering; :mod:`splinecam.engines.tpsmm.landmarks`). Only our own configs change them;
    the official configs have no such section and get the ResNet18 defaults, so official checkpoints load.
    """

    width: int = 64
    depth: int = 2
    head: str = "fc"
    landmarks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.head not in KEYPOINT_HEADS:
            raise ValueError(f"kp_detector_params.head must be one of {', '.join(KEYPOINT_HEADS)}, not {self.head!r}")
        object.__setattr__(self, "landmarks", tuple(int(i) for i in self.landmarks))
        if (self.head == "landmarks") != bool(self.landmarks):
            raise ValueError("kp_detector_params.landmarks (the face-mesh indices) goes with head: landmarks")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build the five TPSMM networks, plus the raw training sections.

    ``image_size`` is the square frame size the networks run at (256 for vox/taichi/mgif, 384 for
    ted). ``train_params`` / ``train_avd_params`` / ``dataset_params`` are kept as the YAML gave them
    (the training package reads them).
    """

    name: str
    num_tps: int = 10
    num_channels: int = 3
    bg: bool = True
    multi_mask: bool = True
    image_size: int = 256
    generator: GeneratorParams = field(default_factory=GeneratorParams)
    dense_motion: DenseMotionParams = field(default_factory=DenseMotionParams)
    avd: AVDParams = field(default_factory=AVDParams)
    keypoint: KeypointParams = field(default_factory=KeypointParams)
    train_params: dict = field(default_factory=dict, compare=False)
    train_avd_params: dict = field(default_factory=dict, compare=False)
    dataset_params: dict = field(default_factory=dict, compare=False)

    @property
    def num_kp(self) -> int:
        """Keypoints per frame: 5 per TPS transformation (50 for the official configs)."""
        return self.num_tps * 5

    @property
    def num_source_features(self) -> int:
        """F: how many inpainting-encoder maps the generator caches per avatar."""
        if self.generator.kind == "keypoint-mask":
            return self.generator.num_down_blocks
        return 3 if self.generator.kind == "warp-refine" else self.generator.num_down_blocks + 1

    @property
    def landmark_keypoints(self) -> bool:
        """Keypoints are face-mesh landmarks (no keypoint network; ``kp_detector_params.head: landmarks``)."""
        return self.keypoint.head == "landmarks"

    def to_yaml_dict(self) -> dict[str, Any]:
        """The config in the official YAML layout (round-trips through :func:`config_from_dict`)."""
        model_params = {
            "common_params": {
                "num_tps": self.num_tps,
                "num_channels": self.num_channels,
                "bg": self.bg,
                "multi_mask": self.multi_mask,
            },
            "generator_params": _without_defaults(asdict(self.generator), {"kind": "inpainting"}),
            "dense_motion_params": {k: list(v) if isinstance(v, tuple) else v for k, v in _without_defaults(
                asdict(self.dense_motion), {"kind": "hourglass", "affine_tps": (), "affine_fit": ()}).items()},
            "avd_network_params": asdict(self.avd),
        }
        if self.keypoint != KeypointParams():
            kp = asdict(self.keypoint)
            kp["landmarks"] = list(kp["landmarks"])
            model_params["kp_detector_params"] = _without_defaults(kp, {"landmarks": []})
        return {
            "name": self.name,
            "image_size": self.image_size,
            "dataset_params": self.dataset_params,
            "model_params": model_params,
            "train_params": self.train_params,
            "train_avd_params": self.train_avd_params,
        }


def _without_defaults(d: dict, defaults: dict) -> dict:
    """``d`` without the given keys where they hold their default (official YAMLs stay official)."""
    return {k: v for k, v in d.items() if not (k in defaults and v == defaults[k])}


def builtin_config_names() -> list[str]:
    """Names accepted by ``--config`` besides a YAML path."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _image_size_from_name(name: str) -> int | None:
    m = re.search(r"-(\d{3,4})$", name)
    return int(m.group(1)) if m else None


# what each number of a config may be (engines/validate.py); anything else is a ConfigError
LIMITS = {
    "num_tps": Range(int, 1, 64), "num_channels": Range(int, 1, 4), "image_size": Range(int, 32, 4096),
    "block_expansion": Range(int, 1, 4096), "max_features": Range(int, 1, 16384),
    "num_down_blocks": Range(int, 1, 8), "num_blocks": Range(int, 1, 8),
    "scale_factor": Range(float, 0, 1, low_open=True),
    "id_bottle_size": Range(int, 1, 8192), "pose_bottle_size": Range(int, 1, 8192),
    "width": Range(int, 1, 4096), "depth": Range(int, 1, 16),
}
LANDMARK_INDEX = Range(int, 0, 477)  # mediapipe face mesh (478 with the irises)


def _mapping(value: Any, where: str, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config {name!r}: {where} must be a mapping (key: value lines), "
                          f"got {type(value).__name__}")
    return value


def _checked(key: str, value: Any, where: str, name: str) -> Any:
    try:
        if key in LIMITS:
            return LIMITS[key].check(value, where)
        if key in ("kind", "head", "tps_regularise"):
            if not isinstance(value, str):
                raise ValidationError(f"{where} must be a name, got {value!r:.40}")
            return value
        if key == "landmarks":
            if not isinstance(value, (list, tuple)):
                raise ValidationError(f"{where} must be a list of face-mesh indices, got {value!r:.40}")
            return tuple(LANDMARK_INDEX.check(v, f"{where}[{i}]") for i, v in enumerate(value))
        if key in ("bg", "multi_mask"):
            if not isinstance(value, bool):
                raise ValidationError(f"{where} must be true or false, got {value!r:.40}")
            return value
    except ValidationError as err:
        raise ConfigError(f"config {name!r}: {err}") from None
    return value


def _section(mp: dict, key: str, cls, name: str):
    """One ``model_params`` section as its dataclass, every value checked."""
    raw = _mapping(mp.get(key), f"model_params.{key}", name)
    known = {f.name for f in fields(cls)}
    values = {}
    for k, v in raw.items():
        if k not in known:
            raise ConfigError(f"config {name!r}: unexpected model parameter {key}.{k} "
                              f"(known: {', '.join(sorted(known))})")
        values[k] = _checked(k, v, f"model_params.{key}.{k}", name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {name!r}: unexpected model parameter ({exc})") from None


def image_size_step(cfg: "ModelConfig") -> int:
    """The network sizes must be multiples of this (and at least it): the dense motion network halves
    S × scale_factor ``num_blocks`` times (its skips must match, and its instance norms need more than
    one pixel), the inpainting network halves S ``num_down_blocks`` times, a heatmap keypoint head
    works on an S/32 feature pyramid."""
    dm = cfg.dense_motion
    step = int(round((2 ** dm.num_blocks if getattr(dm, "kind", "hourglass") != "none" else 1) / dm.scale_factor))
    if getattr(cfg, "family", "tpsmm") == "fomm":  # FOMM: its keypoint hourglass halves S × scale too
        kp = cfg.keypoint
        return math.lcm(step, int(round(2 ** kp.num_blocks / kp.scale_factor)), 2 ** cfg.generator.num_down_blocks)
    g = cfg.generator
    step = math.lcm(step, 2 ** (g.num_down_blocks if g.kind in ("inpainting", "keypoint-mask") else 3))
    if cfg.keypoint.head == "heatmap" or cfg.bg:
        step = math.lcm(step, 32)
    return step


def check_image_size(cfg: "ModelConfig", size: Any, what: str) -> int:
    """``size`` as an int if the networks of ``cfg`` can run at it, else ConfigError naming ``what``."""
    try:
        size = LIMITS["image_size"].check(size, what)
    except ValidationError as err:
        raise ConfigError(str(err)) from None
    step = image_size_step(cfg)
    if size < step or size % step:
        raise ConfigError(f"{what} {size} does not fit config {cfg.name!r}: its networks need a multiple of {step} "
                          f"(e.g. {max(step, round(size / step) * step)})")
    return size


def _all_builtin_names() -> list[str]:
    from splinecam.engines.fomm.config import builtin_config_names as fomm_names

    return builtin_config_names() + fomm_names()


def config_from_dict(data: dict[str, Any], name: str) -> ModelConfig:
    """Build a :class:`ModelConfig` from a dict in the official YAML layout (a FOMM layout gives a
    ``FommConfig``, :mod:`splinecam.engines.fomm.config`). Every section must be a mapping and every
    number pass :data:`LIMITS` (engines/validate.py); else ConfigError (one line)."""
    from splinecam.engines.fomm.config import fomm_config_from_dict, is_fomm_layout

    if is_fomm_layout(data):
        return fomm_config_from_dict(data, name)
    if not isinstance(data, dict) or "model_params" not in data:
        raise ConfigError(
            f"config {name!r} has no 'model_params' section: give an official-layout TPSMM or FOMM YAML "
            f"or one of {', '.join(_all_builtin_names())}"
        )
    mp = _mapping(data["model_params"], "model_params", name)
    common = _mapping(mp.get("common_params"), "model_params.common_params", name)
    for k in common:
        if k not in ("num_tps", "num_channels", "bg", "multi_mask"):
            raise ConfigError(f"config {name!r}: unexpected model parameter common_params.{k}")
    common = {k: _checked(k, v, f"model_params.common_params.{k}", name) for k, v in common.items()}
    generator = _section(mp, "generator_params", GeneratorParams, name)
    dense = _section(mp, "dense_motion_params", DenseMotionParams, name)
    avd = _section(mp, "avd_network_params", AVDParams, name)
    keypoint = _section(mp, "kp_detector_params", KeypointParams, name)
    if not math.log2(1 / dense.scale_factor).is_integer():
        raise ConfigError(f"config {name!r}: dense_motion_params.scale_factor must be 1, 1/2, 1/4, … "
                          f"(got {dense.scale_factor:g})")
    if (generator.kind == "keypoint-mask") != (dense.kind == "none"):
        raise ConfigError(f"config {name!r}: generator_params.kind: keypoint-mask goes with dense_motion_params.kind: "
                          f"none (its masks, no motion field), and only with it (got {generator.kind} with "
                          f"{dense.kind})")
    num_tps = common.get("num_tps", 10)
    for key in ("affine_tps", "affine_fit"):
        if any(i >= num_tps for i in getattr(dense, key)):
            raise ConfigError(f"config {name!r}: dense_motion_params.{key} {list(getattr(dense, key))} names a TPS group "
                              f"beyond num_tps ({num_tps}; groups count from 0)")
    if keypoint.head == "landmarks" and len(keypoint.landmarks) != 5 * num_tps:
        raise ConfigError(f"config {name!r}: kp_detector_params.landmarks lists {len(keypoint.landmarks)} indices, "
                          f"num_tps × 5 = {5 * num_tps} are needed")
    dataset = _mapping(data.get("dataset_params"), "dataset_params", name)
    image_size = data.get("image_size")
    if image_size is None:
        frame_shape = dataset.get("frame_shape")
        if frame_shape:
            if not isinstance(frame_shape, (list, tuple)):
                raise ConfigError(f"config {name!r}: dataset_params.frame_shape must be a list like [256, 256, 3]")
            image_size = frame_shape[0]
    if image_size is None:
        image_size = _image_size_from_name(name) or 256
    image_size = _checked("image_size", image_size, "image_size", name)
    config = ModelConfig(
        name=str(data.get("name", name)),
        num_tps=num_tps,
        num_channels=common.get("num_channels", 3),
        bg=common.get("bg", False),
        multi_mask=common.get("multi_mask", True),
        image_size=image_size,
        generator=generator,
        dense_motion=dense,
        avd=avd,
        keypoint=keypoint,
        train_params=dict(_mapping(data.get("train_params"), "train_params", name)),
        train_avd_params=dict(_mapping(data.get("train_avd_params"), "train_avd_params", name)),
        dataset_params=dict(dataset),
    )
    check_image_size(config, image_size, f"config {name!r}: image_size")
    return config


def load_config(name_or_path: str | Path) -> ModelConfig:
    """Load a built-in config by name (``vox-256``, ``fomm-vox-256``) or an official-layout TPSMM or FOMM
    YAML file by path."""
    from splinecam.engines.fomm.config import builtin_config_path as fomm_builtin

    text = str(name_or_path)
    builtin = CONFIG_DIR / f"{text}.yaml"
    if builtin.is_file() and "/" not in text and "\\" not in text:
        path, name = builtin, text
    elif fomm_builtin(text) is not None:
        path, name = fomm_builtin(text), text
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"config {text!r} is neither a built-in name ({', '.join(_all_builtin_names())}) "
                f"nor an existing YAML file"
            )
        name = path.stem
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"config {str(path)!r} is not readable YAML: {str(exc).splitlines()[0]}") from None
    return config_from_dict(data, name)
