"""Random but not default TPSMM weights, for benchmarks and tests that need a full-size model.

Default initialisation leaves every norm layer an identity (InstanceNorm weight 1 / bias 0,
BatchNorm running mean 0 / var 1) and the background predictor an exact identity, which hides
numerical differences between backends and precisions. :func:`perturbed_random_model` perturbs
them the way ``reference/golden-small`` was made: norm affine weights 1 + N(0, 0.1²), biases and
BatchNorm running means N(0, 0.1²), running variances 1 + U(0, 0.2), and a background predictor
slightly off the identity. FOMM configs (``fomm-vox-256`` …) give FOMM networks perturbed the way
``reference/fomm-golden-small`` was made: norm layers as above and a jacobian head off the identity.
"""

from __future__ import annotations

import torch
from torch import nn

from splinecam.engines.tpsmm.checkpoint import LoadedModel, weights_hash
from splinecam.engines.tpsmm.config import ModelConfig, load_config
from splinecam.engines.tpsmm.networks import TPSMM

NORM_STD = 0.1
VAR_SPREAD = 0.2
BG_FC_STD = 0.003
JACOBIAN_STD = 0.003


@torch.no_grad()
def perturb_norm_layers(model: nn.Module, generator: torch.Generator) -> None:
    """Perturb every InstanceNorm/BatchNorm affine parameter and BatchNorm running statistic in place."""
    for module in model.modules():
        if isinstance(module, (nn.InstanceNorm2d, nn.BatchNorm1d, nn.BatchNorm2d)):
            if module.weight is not None:
                module.weight.copy_(1 + NORM_STD * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(NORM_STD * torch.randn(module.bias.shape, generator=generator))
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.copy_(NORM_STD * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(1 + VAR_SPREAD * torch.rand(module.running_var.shape, generator=generator))


@torch.no_grad()
def perturbed_random_model(config: ModelConfig | str = "vox-256", seed: int = 0) -> LoadedModel:
    """A float32 eval-mode model with seeded random weights and perturbed norm layers.

    ``config``: a ModelConfig or a config name / YAML path (default the full vox-256 network).
    Returned as a :class:`LoadedModel` (path None, AVD and background present) so it goes wherever
    a loaded checkpoint goes: backends, export, benchmarks.
    """
    if isinstance(config, str):
        config = load_config(config)
    torch.manual_seed(seed)  # module initialisers draw from the global generator
    if getattr(config, "family", "tpsmm") == "fomm":
        return _perturbed_fomm(config, seed)
    model = TPSMM(config)
    gen = torch.Generator().manual_seed(seed + 1)
    perturb_norm_layers(model, gen)
    if model.bg_predictor is not None:
        fc = model.bg_predictor.bg_encoder.fc
        fc.weight.copy_(BG_FC_STD * torch.randn(fc.weight.shape, generator=gen))
    model.eval()
    return LoadedModel(model, config, None, has_avd=True, has_bg=model.bg_predictor is not None,
                       model_hash=weights_hash(model), metadata={"random_seed": seed})


@torch.no_grad()
def _perturbed_fomm(config, seed: int) -> LoadedModel:
    """FOMM networks with seeded random weights, perturbed norm layers and jacobian head (no AVD, no bg)."""
    from splinecam.engines.fomm.networks import FOMM

    model = FOMM(config)
    gen = torch.Generator().manual_seed(seed + 1)
    perturb_norm_layers(model, gen)
    head = model.kp_detector.jacobian
    if head is not None:  # default init: every jacobian exactly the identity, whatever the image
        head.weight.copy_(JACOBIAN_STD * torch.randn(head.weight.shape, generator=gen))
    model.eval()
    return LoadedModel(model, config, None, has_avd=False, has_bg=False, model_hash=weights_hash(model),
                       metadata={"random_seed": seed})
