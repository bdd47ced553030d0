"""splinecam training package: data preparation, losses, trainer (DDP), AVD training, evaluation and
export of weights. Subcommands are registered by :func:`splinecam.training.cli.register`."""
