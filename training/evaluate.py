"""``evaluate``: video reconstruction, as the paper measures it (TPSMM §4, official ``reconstruction.py``).

For every video the first frame is the source and every frame is reconstructed from the source and
that frame's own keypoints (standard mode: raw driving keypoints; background motion when the model
has it). Metrics per video, each beside the no-motion baseline (output = the source frame):

- ``l1``: mean absolute error on [0,1] RGB;
- ``psnr``: mean over frames of 10·log10(1/MSE) (dB; ``engines/quality.psnr``, 100 for identical frames);
- ``akd``: average keypoint distance, mean Euclidean distance in pixels (at the evaluation image size,
  the model's unless ``--image-size`` says otherwise)
  between mediapipe face-mesh landmarks of the output and of the real frame, over frames where both
  have a face;
- ``psnr_still``: the still face — PSNR (dB) of frame 0 reconstructed from itself (driving = source, its own
  keypoints): what a model gives back when nothing moves (the no-motion baseline's is infinite).

Raw videos are face-cropped exactly as ``prepare-data`` crops them (one stable crop per shot; each shot
is one item); ``prepare-data`` output is used as is.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from splinecam.engines.errors import SplinecamError
from splinecam.engines.quality import psnr as frame_psnr

METRICS = ("l1", "l1_no_motion", "psnr", "psnr_no_motion", "akd", "akd_no_motion", "psnr_still")


@dataclass
class VideoResult:
    """Metrics of one video (see the module docstring); akd values are None if no face was measured.
    ``psnr_still`` is frame 0's reconstruction from itself (the prediction every evaluation makes first)."""

    name: str
    frames: int
    l1: float
    l1_no_motion: float
    psnr: float
    psnr_no_motion: float
    akd: float | None
    akd_no_motion: float | None
    psnr_still: float | None = None


@dataclass
class StillFaceResult:
    """A still face: driving = the avatar's own face crop repeated; ``psnr`` of the output against it (dB)."""

    name: str
    psnr: float


@dataclass
class EvaluationResult:
    checkpoint: str
    image_size: int
    videos: list[VideoResult]
    mean: dict[str, float | None]
    still_faces: list[StillFaceResult] = field(default_factory=list)

    def to_json(self) -> dict:
        out = {"checkpoint": self.checkpoint, "image_size": self.image_size,
               "videos": [asdict(v) for v in self.videos], "mean": self.mean}
        if self.still_faces:
            out["still_faces"] = [asdict(s) for s in self.still_faces]
            out["still_face_min_psnr"] = min(s.psnr for s in self.still_faces)
        return out


def load_model(path: str | Path | None, config: str | None = None):
    """(TPSMM in eval mode, description) from a .safetensors / .pth.tar / run dir / checkpoint.pth."""
    from splinecam.engines.tpsmm.checkpoint import load_checkpoint
    from splinecam.training.checkpoint import CHECKPOINT, model_from_training_checkpoint, read_training_checkpoint

    from splinecam.engines.model_options import default_checkpoint

    p = Path(path) if path else default_checkpoint()
    if p.is_dir():
        p = p / CHECKPOINT
    if p.suffix == ".pth" and not p.name.endswith(".pth.tar"):
        model = model_from_training_checkpoint(read_training_checkpoint(p))
    else:
        model = load_checkpoint(p, config).model
    return model.eval(), str(p)


def load_items(data: str | Path, size: int, crop_mode: str = "inside") -> list[tuple[str, np.ndarray]]:
    """(name, frames (T,size,size,3) uint8) for a video, a folder of videos, or prepare-data output
    (raw videos cropped as ``prepare-data --crop crop_mode`` would; prepare-data output is used as is)."""
    from splinecam.training.prepare import MIN_SHOT_FRAMES, crop_frames, list_videos, read_video, split_shots

    data = Path(data)
    items: list[tuple[str, np.ndarray]] = []
    if data.is_dir() and (data / "manifest.json").is_file():
        from splinecam.training.data import load_clips

        for clip in load_clips(data):
            frames = np.asarray(clip.frames)
            if frames.shape[1] != size:
                frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
            items.append((clip.name, np.array(frames)))
        return items
    for video in list_videos(data):
        frames, _ = read_video(video)
        shots = [(a, b) for a, b in split_shots(frames) if b - a >= MIN_SHOT_FRAMES]
        for k, (a, b) in enumerate(shots):
            clip, _ = crop_frames(frames[a:b], size, f"{video.name} frames {a}-{b}", crop_mode)
            items.append((video.stem if len(shots) == 1 else f"{video.stem}--{k:03d}", clip))
    if not items:
        raise SplinecamError(f"nothing to evaluate in {data}: no shot of {MIN_SHOT_FRAMES}+ frames with a face")
    return items


def mesh_keypoints(model, landmarks: list[np.ndarray | None], size: int) -> np.ndarray:
    """Keypoints (T,K,2) of a landmark config from per-frame face-mesh landmarks (468,2) in pixels of
    size×size frames; a frame without a face repeats the previous one's (the first found, for leading
    misses), as the live loop does."""
    from splinecam.engines.tpsmm.landmarks import landmarks_to_grid

    found = [lm for lm in landmarks if lm is not None]
    if not found:
        raise SplinecamError("the face mesh found no face in this clip: a landmark model cannot be evaluated on it")
    idx = np.asarray(model.config.keypoint.landmarks)
    last, out = found[0], []
    for lm in landmarks:
        last = lm if lm is not None else last
        out.append(landmarks_to_grid(last[idx], size))
    return np.stack(out).astype(np.float32)


@torch.no_grad()
def reconstruct(model, frames: np.ndarray, batch_size: int = 8, keypoints: np.ndarray | None = None,
                blend_masks: list[np.ndarray] | None = None) -> np.ndarray:
    """Frames (T,S,S,3) uint8 → reconstructions (T,S,S,3) float32 in [0,1] from frame 0 (standard mode).

    ``keypoints`` (T,K,2): every frame's keypoints, for landmark configs (which have no keypoint detector).
    ``blend_masks``: a list that receives the generator's (n,S,S) blend masks per batch, where it has one
    (the CPU warp-refine generator; training/error_regions.py).
    FOMM models reconstruct as the official FOMM ``reconstruction.py`` does: the generator driven by every
    frame's raw keypoints and jacobians."""
    if getattr(model.config, "family", "tpsmm") == "fomm":
        return _reconstruct_fomm(model, frames, batch_size)
    src = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 255
    kp_src = model.kp_detector(src) if keypoints is None else torch.from_numpy(keypoints[:1])
    enc = model.inpainting_network.encode(src)
    out = []
    for i in range(0, len(frames), batch_size):
        drv = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch_size])).permute(0, 3, 1, 2).float() / 255
        n = drv.shape[0]
        kp_drv = model.kp_detector(drv) if keypoints is None else torch.from_numpy(keypoints[i:i + n])
        s = src.expand(n, -1, -1, -1)
        bg = model.bg_predictor(s, drv) if model.bg_predictor is not None else None
        motion = model.dense_motion_network(s, kp_drv, kp_src.expand(n, -1, -1), bg)
        decoded = model.inpainting_network.decode_motion([e.expand(n, -1, -1, -1) for e in enc], s, motion)
        if blend_masks is not None and decoded.blend_mask is not None:
            blend_masks.append(decoded.blend_mask[:, 0].float().numpy())
        out.append(decoded.prediction.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


@torch.no_grad()
def _reconstruct_fomm(model, frames: np.ndarray, batch_size: int) -> np.ndarray:
    """FOMM reconstruction from frame 0 (standard mode), the source encoder run once."""
    from splinecam.engines.fomm.networks import FommKeypoints

    src = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 255
    kp_src = model.kp_detector.detect(src)
    gen = model.generator
    feat = gen.encode(src)
    out = []
    for i in range(0, len(frames), batch_size):
        drv = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch_size])).permute(0, 3, 1, 2).float() / 255
        n = drv.shape[0]
        kp_s = FommKeypoints(kp_src.value.expand(n, -1, -1),
                             None if kp_src.jacobian is None else kp_src.jacobian.expand(n, -1, -1, -1))
        motion = gen.dense_motion_network(src.expand(n, -1, -1, -1), model.kp_detector.detect(drv), kp_s)
        pred = gen.decode(feat.expand(n, -1, -1, -1), motion.deformation, motion.occlusion_map)
        out.append(pred.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def evaluate_video(model, name: str, frames: np.ndarray, mesh, batch_size: int = 8) -> VideoResult:
    """Metrics of one clip (T,S,S,3) uint8."""
    real_landmarks = [mesh.landmarks(r) for r in frames]
    keypoints = mesh_keypoints(model, real_landmarks, frames.shape[1]) if model.kp_detector is None else None
    pred = reconstruct(model, frames, batch_size, keypoints)
    real = frames.astype(np.float32) / 255
    src = real[0]
    l1 = float(np.abs(pred - real).mean())
    l1_nm = float(np.abs(src[None] - real).mean())
    psnr = float(np.mean([frame_psnr(p, r, peak=1.0) for p, r in zip(pred, real)]))
    psnr_nm = float(np.mean([frame_psnr(src, r, peak=1.0) for r in real]))
    lm_src = real_landmarks[0]
    d_model, d_nm = [], []
    for p, r, lm_r in zip(pred, frames, real_landmarks):
        if lm_r is None:
            continue
        lm_p = mesh.landmarks((np.clip(p, 0, 1) * 255).round().astype(np.uint8))
        if lm_p is not None:
            d_model.append(float(np.linalg.norm(lm_p - lm_r, axis=1).mean()))
        if lm_src is not None:
            d_nm.append(float(np.linalg.norm(lm_src - lm_r, axis=1).mean()))
    return VideoResult(name, len(frames), l1, l1_nm, psnr, psnr_nm,
                       float(np.mean(d_model)) if d_model else None, float(np.mean(d_nm)) if d_nm else None,
                       frame_psnr(pred[0], real[0], peak=1.0))


def still_face(model, face: np.ndarray, mesh) -> float:
    """PSNR (dB) of the output against ``face`` (S,S,3 uint8, a face crop) when the driving frame is ``face``
    itself: a still face must come back intact."""
    frames = np.stack([face, face])
    keypoints = mesh_keypoints(model, [mesh.landmarks(face)] * 2, face.shape[0]) if model.kp_detector is None else None
    pred = reconstruct(model, frames, 2, keypoints)[1]
    return frame_psnr(pred, face.astype(np.float32) / 255, peak=1.0)


def still_faces(model, folder: str | Path, size: int, mesh, progress=print) -> list[StillFaceResult]:
    """:func:`still_face` of every portrait in ``folder``, face-cropped as the live loop crops an avatar."""
    from splinecam.engines.faces.detection import face_crop
    from splinecam.engines.media import read_image
    from splinecam.engines.outputs import IMAGE_SUFFIXES

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SplinecamError(f"--still-faces {folder}: no pictures in it")
    out = []
    for p in paths:
        face = face_crop(read_image(p), str(p), size)
        r = StillFaceResult(p.name, round(still_face(model, face, mesh), 2))
        progress(f"still face {r.name}: {r.psnr:.2f} dB")
        out.append(r)
    return out


def evaluate(checkpoint: str | None, data: list[str], max_frames: int | None = None, config: str | None = None,
             batch_size: int = 8, image_size: int | None = None, progress=print,
             still_faces_dir: str | Path | None = None, crop_mode: str = "inside") -> EvaluationResult:
    """Evaluate a model on every video of ``data`` (see the module docstring)."""
    from splinecam.engines.faces.mesh import FaceMesh

    from splinecam.engines.tpsmm.config import check_image_size
    from splinecam.engines.validate import COUNT

    if still_faces_dir is not None and not Path(still_faces_dir).is_dir():  # before any work
        raise SplinecamError(f"--still-faces {still_faces_dir}: not a folder; give a folder of portraits")
    COUNT.check(batch_size, "--batch-size")
    if max_frames is not None:
        COUNT.check(max_frames, "--max-frames")
    model, desc = load_model(checkpoint, config)
    size = check_image_size(model.config, image_size or model.config.image_size, "--image-size")
    videos = []
    with FaceMesh(static=True) as mesh:
        for d in data:
            for name, frames in load_items(d, size, crop_mode):
                if max_frames:
                    frames = frames[:max_frames]
                if len(frames) < 2:
                    continue
                r = evaluate_video(model, name, frames, mesh, batch_size)
                progress(f"{name}: {r.frames} frames | L1 {r.l1:.4f} (no motion {r.l1_no_motion:.4f}) | "
                         f"PSNR {r.psnr:.2f} ({r.psnr_no_motion:.2f}) dB | AKD {_fmt(r.akd)} ({_fmt(r.akd_no_motion)}) px")
                videos.append(r)
        still = still_faces(model, still_faces_dir, size, mesh, progress) if still_faces_dir else []
    if not videos:
        raise SplinecamError("no video with 2 or more frames to evaluate")
    mean = {}
    for k in METRICS:
        vals = [getattr(v, k) for v in videos if getattr(v, k) is not None]
        mean[k] = float(np.mean(vals)) if vals else None
    return EvaluationResult(desc, size, videos, mean, still)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def run(args) -> int:
    """CLI entry of ``evaluate``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    res = evaluate(args.checkpoint, args.data, args.max_frames, args.config, args.batch_size,
                   getattr(args, "image_size", None), still_faces_dir=getattr(args, "still_faces", None),
                   crop_mode=getattr(args, "crop", "inside"))
    m = res.mean
    gain = 100 * (1 - m["l1"] / m["l1_no_motion"]) if m["l1_no_motion"] else float("nan")
    print(f"mean over {len(res.videos)} video(s): L1 {m['l1']:.4f} vs no motion {m['l1_no_motion']:.4f} "
          f"({gain:.1f}% lower) | PSNR {m['psnr']:.2f} vs {m['psnr_no_motion']:.2f} dB | "
          f"AKD {_fmt(m['akd'])} vs {_fmt(m['akd_no_motion'])} px | still face PSNR {_fmt(m['psnr_still'])} dB")
    if res.still_faces:
        worst = min(res.still_faces, key=lambda r: r.psnr)
        print(f"still faces: {len(res.still_faces)} portraits, worst {worst.psnr:.2f} dB ({worst.name}), mean "
              f"{np.mean([r.psnr for r in res.still_faces]):.2f} dB")
    if args.json:
        from splinecam.engines.outputs import write_text_atomic

        out = write_text_atomic(Path(args.json), json.dumps(res.to_json(), indent=1), "--json")
        print(f"wrote {out}")
    return 0
