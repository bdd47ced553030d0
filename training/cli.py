"""The training subcommands: ``prepare-data``, ``train``, ``train-avd``, ``evaluate``, ``export-weights``.

``register(subparsers)`` adds them to the ``splinecam`` dispatcher. Each handler is ``func(args) -> int``; user errors are
:class:`splinecam.engines.errors.SplinecamError` with a one-line message.
"""

from __future__ import annotations

from splinecam.engines.validate import SEED, THREADS, non_negative_int, number_arg, positive_int


def _out(path, flag: str, kind: str, inputs=(), suffixes=None):
    """An output path checked before any work (engines/outputs.py)."""
    from splinecam.engines.outputs import check_output

    return check_output(path, flag, kind=kind, inputs=inputs, suffixes=suffixes)


def _prepare(args) -> int:
    from splinecam.training.prepare import run

    _out(args.out, "--out", "dir", [args.videos])
    return run(args)


def _train(args) -> int:
    from splinecam.training.trainer import run

    _out(args.out, "--out", "dir", [*args.data, args.init])
    return run(args)


def _train_avd(args) -> int:
    from splinecam.training.avd import run

    _out(args.out, "--out", "dir", [args.data, args.checkpoint])
    return run(args)


def _evaluate(args) -> int:
    from splinecam.training.evaluate import run

    if args.json:
        _out(args.json, "--json", "file", [args.checkpoint, *args.data])
    return run(args)


def _export(args) -> int:
    from splinecam.training.export import run

    _out(args.out, "--out", "file", [args.run, args.avd], suffixes=(".safetensors",))
    return run(args)


def register(subparsers) -> None:
    """Add the training subcommands to an argparse ``subparsers`` object."""
    from splinecam.training.prepare import CROP_MODES  # cv2 / numpy: already loaded by the dispatcher

    p = subparsers.add_parser("prepare-data", help="face-crop raw videos into training clips",
                              description="Split videos into shots, crop each shot around the face "
                                          "(one stable crop per shot) and write .npy clips + landmarks.")
    p.add_argument("--videos", required=True, help="folder of videos (or one video)")
    p.add_argument("--out", required=True, help="output folder (clips + manifest.json)")
    p.add_argument("--size", type=number_arg(int, 32, 4096), default=256, help="crop size in pixels (default 256)")
    p.add_argument("--no-landmarks", action="store_true", help="skip face-mesh landmarks (no keypoint warm start)")
    p.add_argument("--crop", choices=CROP_MODES, default=CROP_MODES[0],
                   help="inside (default): each shot's face crop lies inside the video frame (moved, or shrunk to the "
                        "frame's short side), so no pixel is made up; pad: the crop as before 2026-12-07, reaching "
                        "past the frame with its edge pixels replicated (to reproduce older data)")
    p.set_defaults(func=_prepare)

    p = subparsers.add_parser("train", help="train a TPSMM model (resumable; DDP under torchrun)",
                              description="Train the keypoint detector, dense motion and inpainting networks "
                                          "with the TPSMM recipe. Run under torchrun for multi-process DDP.")
    p.add_argument("--config", required=True, help="config name (vox-256, lite-256, …) or YAML path")
    p.add_argument("--data", required=True, action="append",
                   help="prepare-data output folder (repeatable: the clips of all of them, e.g. train + validation)")
    p.add_argument("--out", required=True, help="run directory (checkpoint, logs, visualisations)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--init", help="initial weights: a training checkpoint, .safetensors or official .pth.tar")
    p.add_argument("--max-steps", type=non_negative_int(),
                   help="stop after this many optimisation steps (in total; 0: the warm start alone)")
    p.add_argument("--epochs", type=positive_int(), help="number of epochs (default: the config's num_epochs)")
    p.add_argument("--batch-size", type=number_arg(int, 1, 4096), help="global batch size (default: the config's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--threads", type=number_arg(THREADS), help="torch threads per process (e.g. 1 to leave cores free)")
    p.add_argument("--image-size", type=number_arg(int, 32, 4096), help="train at this resolution (default: the config's)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the networks on --device, CPU or CUDA (TPS maths stays float32)")
    p.add_argument("--vgg-weights", help="torchvision vgg19-dcbb9e9d.pth for the perceptual loss")
    p.add_argument("--perceptual-width", type=number_arg(float, 0, 4, low_open=True), default=0.25,
                   help="channel width of the random-weight VGG19 fallback (default 0.25)")
    p.add_argument("--lr", type=number_arg(float, 0, 1, low_open=True), help="learning rate (default: the config's lr_generator)")
    p.add_argument("--epoch-milestones", type=non_negative_int(), nargs="*",
                   help="epochs where the lr drops ×0.1 (default: the config's; may change on --resume)")
    p.add_argument("--train-param", action="append", metavar="KEY=VALUE",
                   help="override a train_params entry of the config (YAML value; repeatable), "
                        "e.g. dropout_epoch=0")
    p.add_argument("--num-repeats", type=positive_int(), help="dataset repeats per epoch (default: the config's)")
    p.add_argument("--checkpoint-minutes", type=number_arg(float, 0, 10**6, low_open=True), default=5.0, help="checkpoint interval (default 5 min)")
    p.add_argument("--checkpoint-steps", type=positive_int(), help="also/instead checkpoint every N steps")
    p.add_argument("--log-every", type=positive_int(), default=10, help="progress line every N steps")
    p.add_argument("--vis-every", type=non_negative_int(), default=200, help="visualisation PNG every N steps (0: never)")
    p.add_argument("--warmstart-steps", type=non_negative_int(), default=0,
                   help="regress the keypoints onto face-mesh landmarks for N steps first")
    p.add_argument("--warmstart-lr", type=number_arg(float, 0, 1, low_open=True), default=1e-3, help="peak lr of the warm start (cosine decay)")
    p.add_argument("--warmstart-batch", type=number_arg(int, 1, 4096), default=16, help="frames per warm-start step (default 16)")
    p.add_argument("--landmark-augment", action="store_true",
                   help="landmark supervision on augmented frames too (rotation/zoom/shift, mirrored flips, "
                        "colour, blur, cut-outs): keypoints that follow unseen faces")
    p.add_argument("--landmark-weight", type=number_arg(float, 0, 1e6), help="weight of the landmark loss in the main loop")
    p.add_argument("--freeze-keypoints", action="store_true",
                   help="main loop: keep the keypoint detector as the warm start (or --init) left it; train "
                        "dense motion and inpainting only (keypoints stay on the landmarks: generalises "
                        "best with few identities)")
    p.add_argument("--pixel-weight", type=number_arg(float, 0, 1e6), help="weight of the pixel pyramid L1 loss")
    p.add_argument("--seed", type=number_arg(SEED), default=0)
    p.set_defaults(func=_train)

    p = subparsers.add_parser("train-avd", help="train the AVD network of a trained run",
                              description="Train the animation-via-disentanglement network on the keypoints of "
                                          "a trained model (frozen), with random anisotropic keypoint scaling.")
    p.add_argument("--checkpoint", required=True, help="the trained model: run dir, checkpoint.pth or .safetensors")
    p.add_argument("--data", required=True, help="prepare-data output folder")
    p.add_argument("--out", required=True, help="run directory for the AVD stage")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-steps", type=positive_int())
    p.add_argument("--epochs", type=positive_int())
    p.add_argument("--batch-size", type=number_arg(int, 1, 4096))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=number_arg(THREADS))
    p.add_argument("--image-size", type=number_arg(int, 32, 4096))
    p.add_argument("--checkpoint-minutes", type=number_arg(float, 0, 10**6, low_open=True), default=5.0)
    p.add_argument("--log-every", type=positive_int(), default=50)
    p.add_argument("--seed", type=number_arg(SEED), default=0)
    p.set_defaults(func=_train_avd)

    p = subparsers.add_parser("evaluate", help="video reconstruction metrics (L1, PSNR, AKD) vs no motion",
                              description="Reconstruct each video from its first frame and each frame's "
                                          "keypoints (standard mode); report L1, PSNR and AKD beside the "
                                          "no-motion baseline.")
    p.add_argument("--checkpoint", help="weights (.safetensors, .pth.tar, run dir or checkpoint.pth; "
                                        "default: the bundled cpu-256)")
    p.add_argument("--config", help="config for an official .pth.tar without a matching built-in")
    p.add_argument("--data", required=True, action="append",
                   help="a video, a folder of videos, or prepare-data output (repeatable)")
    p.add_argument("--max-frames", type=number_arg(int, 2, 10**9), help="frames per video (default all)")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--still-faces", metavar="DIR",
                   help="also score a still face for every portrait in DIR: driving = its own face crop, output vs "
                        "that crop, PSNR (dB)")
    p.add_argument("--threads", type=number_arg(THREADS))
    p.add_argument("--batch-size", type=number_arg(int, 1, 4096), default=8)
    p.add_argument("--image-size", type=number_arg(int, 32, 4096), help="evaluate at this resolution (default: the model's)")
    p.add_argument("--crop", choices=CROP_MODES, default=CROP_MODES[0],
                   help="how raw videos are face-cropped, as prepare-data --crop (default inside; pad reproduces "
                        "figures measured before 2026-12-07)")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("export-weights", help="export a trained run, or convert an official checkpoint, to "
                                                     ".safetensors (family and config included)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="main run dir (or its checkpoint.pth)")
    src.add_argument("--checkpoint", help="an official TPSMM / FOMM .pth.tar (vox.pth.tar, vox-adv-cpk.pth.tar …) to "
                                          "convert: no pickle left, no --config needed afterwards")
    p.add_argument("--config", help="with --checkpoint: its config, when it is not recognised by shape")
    p.add_argument("--avd", help="AVD run dir (or its checkpoint.pth) to include")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.add_argument("--half", action="store_true", help="store float16 weights (half the size)")
    p.set_defaults(func=_export)
