"""The main loop's batches: the pair dataset of the clips, a resumable order (:class:`EpochSampler`,
or ``DistributedSampler`` under DDP), and the loader that skips what a resumed epoch has done."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from splinecam.engines.errors import SplinecamError
from splinecam.engines.tpsmm.config import ModelConfig
from splinecam.training.data import Augmentation, PairDataset
from splinecam.training.distributed import Dist
from splinecam.training.options import TrainSchedule


class EpochSampler(torch.utils.data.Sampler):
    """A shuffled order that depends only on (seed, epoch): resumable mid-epoch."""

    def __init__(self, dataset, seed: int):
        self.n = len(dataset)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


@dataclass
class TrainData:
    """The dataset, its sampler and loader, and the run's length in steps."""

    dataset: PairDataset
    sampler: torch.utils.data.Sampler
    loader: DataLoader
    steps_per_epoch: int
    total_steps: int

    def epoch_batches(self, epoch: int, skip: int):
        """The batches of ``epoch`` after the first ``skip`` (already done before a resume)."""
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        it = iter(self.loader)
        for _ in range(skip):
            next(it)
        return it


def build_train_data(cfg: ModelConfig, clips, image_size: int, schedule: TrainSchedule, d: Dist, seed: int,
                     mirror: np.ndarray | None, max_steps: int | None) -> TrainData:
    """The pairs of ``clips`` at ``image_size``, this rank's share of each global batch."""
    dataset = PairDataset(clips, image_size, schedule.num_repeats,
                          Augmentation.from_dataset_params(cfg.dataset_params), seed,
                          mirror=mirror, require_landmarks=cfg.landmark_keypoints,
                          still_p=float(cfg.dataset_params.get("still_pairs", 0.0)))
    per_rank = max(1, schedule.batch_size // d.world)
    if d.world > 1:
        sampler = DistributedSampler(dataset, d.world, d.rank, shuffle=True, seed=seed, drop_last=True)
    else:
        sampler = EpochSampler(dataset, seed)
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True, num_workers=0,
                        generator=torch.Generator().manual_seed(seed))  # keeps the global RNG untouched
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise SplinecamError(f"batch size {schedule.batch_size} is larger than an epoch ({len(dataset)} pairs): "
                             f"lower --batch-size or raise num_repeats")
    total_steps = schedule.num_epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    return TrainData(dataset, sampler, loader, steps_per_epoch, total_steps)
