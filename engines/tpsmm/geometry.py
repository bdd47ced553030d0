"""TPS, Gaussian heatmaps, coordinate grids and keypoint normalisation (official numerics).

Conventions: coordinates are (x, y) in [-1, 1] (``grid_sample`` with ``align_corners=True``);
keypoints come in groups of 5 per TPS transformation, so K keypoints = num_tps × 5.
Everything here is meant to run in float32 or better, also when the networks run in fp16/bf16:
``log(r² + 1e-9)`` is NaN in fp16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from splinecam.engines.relative_motion import convex_hull_area, relative_keypoints, relative_scale  # noqa: F401

KP_VARIANCE = 0.01  # the official Gaussian variance of keypoint heatmaps
TPS_REGULARISER = 0.01  # the official 0.01 added to the whole (n+3)×(n+3) TPS diagonal
#: where the 0.01 goes: "all" — the official whole diagonal (the affine block too, so even identical
#: keypoint sets give a TPS that is not the identity: harmless for keypoints spread over the frame, a
#: distortion of many pixels for a small group of face landmarks); "kernel" — the radial block only (a
#: smoothing TPS: affine maps, the identity included, are reproduced exactly)
TPS_REGULARISE = ("all", "kernel")
LOG_EPS = 1e-9  # U(r) = r² · log(r² + 1e-9)


def make_coordinate_grid(height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Pixel-centre grid in [-1, 1]: (H, W, 2), last axis (x, y)."""
    x = torch.arange(width, dtype=dtype, device=device)
    y = torch.arange(height, dtype=dtype, device=device)
    x = 2 * (x / (width - 1)) - 1
    y = 2 * (y / (height - 1)) - 1
    yy = y.view(-1, 1).repeat(1, width)
    xx = x.view(1, -1).repeat(height, 1)
    return torch.stack([xx, yy], dim=2)


def kp2gaussian(kp: torch.Tensor, height: int, width: int, variance: float = KP_VARIANCE) -> torch.Tensor:
    """Gaussian heatmaps of keypoints: kp (N, K, 2) → (N, K, H, W), exp(-½|p-kp|²/variance)."""
    grid = make_coordinate_grid(height, width, dtype=kp.dtype, device=kp.device).view(1, 1, height, width, 2)
    diff = grid - kp.view(kp.shape[0], kp.shape[1], 1, 1, 2)
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


def tps_kernel(sq_dist: torch.Tensor) -> torch.Tensor:
    """The TPS radial basis on squared distances: U = r² · log(r² + 1e-9)."""
    return sq_dist * torch.log(sq_dist + LOG_EPS)


@dataclass
class TPSParams:
    """Thin-plate splines mapping points near ``control_points`` (driving) to the source.

    theta: (N, T, 2, 3) affine part; control_points: (N, T, P, 2); control_params: (N, T, P, 2).
    N = batch, T = number of transformations (10), P = control points per transformation (5).
    """

    theta: torch.Tensor
    control_points: torch.Tensor
    control_params: torch.Tensor


def tps_system(kp_1: torch.Tensor, regularise: str = "all") -> torch.Tensor:
    """The regularised TPS system matrix L: kp_1 (N, T, P, 2) → (N, T, P+3, P+3); ``regularise``: one of
    :data:`TPS_REGULARISE`."""
    n, t, p, _ = kp_1.shape
    sq = ((kp_1[:, :, :, None] - kp_1[:, :, None, :]) ** 2).sum(-1)
    k = tps_kernel(sq)
    ones = torch.ones(n, t, p, 1, dtype=kp_1.dtype, device=kp_1.device)
    kp_1p = torch.cat([kp_1, ones], 3)  # (N,T,P,3)
    zero = torch.zeros(n, t, 3, 3, dtype=kp_1.dtype, device=kp_1.device)
    top = torch.cat([k, kp_1p], 3)  # (N,T,P,P+3)
    bottom = torch.cat([kp_1p.transpose(2, 3), zero], 3)  # (N,T,3,P+3)
    system = torch.cat([top, bottom], 2)
    diag = torch.ones(p + 3, dtype=kp_1.dtype, device=kp_1.device)
    if regularise == "kernel":
        diag[p:] = 0
    elif regularise != "all":
        raise ValueError(f"TPS regularisation {regularise!r}: one of {', '.join(TPS_REGULARISE)}")
    return system + TPS_REGULARISER * torch.diag(diag)


@dataclass(frozen=True)
class AffineGroups:
    """TPS groups solved as one least-squares affine map instead of a spline (config
    ``dense_motion_params.affine_tps`` / ``affine_fit``): each of ``tps`` (group indices) gets the affine map
    that best carries the driving keypoints of the ``fit`` groups (all groups when empty) onto the source's,
    and no radial part. Five landmarks a few pixels apart fix a spline's extrapolation poorly (the hair gets the
    forehead group's); twenty-five spread over the rigid part of the face fix a rigid motion well."""

    tps: tuple[int, ...] = ()
    fit: tuple[int, ...] = ()


def solve_tps(kp_driving: torch.Tensor, kp_source: torch.Tensor, num_tps: int, regularise: str = "all",
              affine: AffineGroups | None = None) -> TPSParams:
    """Fit the T thin-plate splines that map driving keypoints onto source keypoints.

    kp_driving, kp_source: (N, K, 2) with K = num_tps × 5. The small (P+3)² systems are solved as
    the official code does (explicit inverse, then a product) in float32, or in float64 when the
    inputs are float64; half-precision inputs are promoted (the log in U(r) is NaN in fp16). This
    runs on the host side: never inside an exported graph (no ONNX/TensorRT op for an inverse).
    ``regularise``: :data:`TPS_REGULARISE` ("all", the official system, by default); ``affine``: the groups
    solved as an affine map instead (:class:`AffineGroups`; none by default, as officially).
    """
    dtype = kp_driving.dtype if kp_driving.dtype == torch.float64 else torch.float32
    n = kp_driving.shape[0]
    kp_1 = kp_driving.reshape(n, num_tps, -1, 2).to(dtype)
    kp_2 = kp_source.reshape(n, num_tps, -1, 2).to(dtype)
    p = kp_1.shape[2]
    system = tps_system(kp_1, regularise)
    rhs = torch.cat([kp_2, torch.zeros(n, num_tps, 3, 2, dtype=dtype, device=kp_1.device)], 2)
    param = torch.matmul(torch.linalg.inv(system), rhs)  # (N,T,P+3,2)
    theta, control_params = param[:, :, p:, :].transpose(2, 3), param[:, :, :p, :]
    if affine is not None and affine.tps:
        fit = list(affine.fit) or list(range(num_tps))
        x = kp_1[:, fit].reshape(n, -1, 2)
        x = torch.cat([x, torch.ones_like(x[..., :1])], -1)                    # (N,M,3)
        a = torch.linalg.solve(x.transpose(1, 2) @ x, x.transpose(1, 2) @ kp_2[:, fit].reshape(n, -1, 2))
        idx = list(affine.tps)
        theta, control_params = theta.clone(), control_params.clone()
        theta[:, idx] = a.transpose(1, 2).unsqueeze(1)                          # (N,1,2,3)
        control_params[:, idx] = 0
    return TPSParams(theta=theta, control_points=kp_1, control_params=control_params)


def tps_warp_points(params: TPSParams, points: torch.Tensor) -> torch.Tensor:
    """Apply every TPS to points: points (N or 1, M, 2) → (N, T, M, 2)."""
    theta, cp, cparams = params.theta, params.control_points, params.control_params
    n, t = theta.shape[:2]
    # affine part: (N,T,2,2) @ (·,1,2,M) + (N,T,2,1) → (N,T,2,M)
    affine = torch.matmul(theta[:, :, :, :2], points.transpose(1, 2).unsqueeze(1)) + theta[:, :, :, 2:]
    diff = points.view(points.shape[0], 1, 1, -1, 2) - cp.view(n, t, -1, 1, 2)  # (N,T,P,M,2)
    u = tps_kernel((diff**2).sum(-1))  # (N,T,P,M)
    radial = torch.matmul(u.transpose(2, 3), cparams)  # (N,T,M,2)
    return affine.transpose(2, 3) + radial


def tps_warp_grid(params: TPSParams, height: int, width: int) -> torch.Tensor:
    """Sampling grids of every TPS for an H×W frame: (N, T, H, W, 2)."""
    grid = make_coordinate_grid(height, width, dtype=params.theta.dtype, device=params.theta.device)
    warped = tps_warp_points(params, grid.view(1, height * width, 2))
    return warped.view(warped.shape[0], warped.shape[1], height, width, 2)


@dataclass
class RandomTPS:
    """A random TPS for the equivariance loss (official ``TPS(mode='random')``).

    theta: (N, 2, 3); control_points: (1, G*G, 2) on a regular grid; control_params: (N, 1, G*G).
    """

    theta: torch.Tensor
    control_points: torch.Tensor
    control_params: torch.Tensor

    @classmethod
    def sample(cls, batch: int, sigma_affine: float, sigma_tps: float, points_tps: int,
               generator: torch.Generator | None = None, device=None) -> "RandomTPS":
        """Draw N random transformations as the official training does."""
        noise = torch.randn(batch, 2, 3, generator=generator) * sigma_affine
        theta = noise + torch.eye(2, 3).view(1, 2, 3)
        cp = make_coordinate_grid(points_tps, points_tps).view(1, -1, 2)
        params = torch.randn(batch, 1, points_tps**2, generator=generator) * sigma_tps
        return cls(theta.to(device), cp.to(device), params.to(device))

    def warp_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (N or 1, M, 2) → (N, M, 2)."""
        theta = self.theta.to(coords.dtype).unsqueeze(1)  # (N,1,2,3)
        out = torch.matmul(theta[:, :, :, :2], coords.unsqueeze(-1)) + theta[:, :, :, 2:]
        out = out.squeeze(-1)
        diff = coords.view(coords.shape[0], -1, 1, 2) - self.control_points.to(coords.dtype).view(1, 1, -1, 2)
        u = tps_kernel((diff**2).sum(-1)) * self.control_params.to(coords.dtype)
        return out + u.sum(dim=2).view(self.theta.shape[0], coords.shape[1], 1)

    def transform_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """Sampling grid warping a frame (N, C, H, W): (N, H, W, 2)."""
        h, w = frame.shape[2:]
        grid = make_coordinate_grid(h, w, dtype=frame.dtype, device=frame.device).view(1, h * w, 2)
        return self.warp_coordinates(grid).view(self.theta.shape[0], h, w, 2)


def deform(inp: torch.Tensor, deformation: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """Warp ``inp`` (N,C,H,W) by a sampling grid (N,h,w,2) in [-1,1], the grid resized bilinearly to H×W
    when it is smaller (TPSMM's generators use ``align_corners=True``, FOMM's ``False``)."""
    _, h_old, w_old, _ = deformation.shape
    h, w = inp.shape[2:]
    if h_old != h or w_old != w:
        deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                    align_corners=align_corners).permute(0, 2, 3, 1)
    return F.grid_sample(inp, deformation.to(inp.dtype), align_corners=align_corners)


def apply_affine_to_grid(grid: torch.Tensor, bg_param: torch.Tensor) -> torch.Tensor:
    """Background motion: grid (N, 1, H, W, 2) warped by 3×3 matrices (N, 3, 3), homogeneous divide."""
    n = grid.shape[0]
    ones = torch.ones_like(grid[..., :1])
    homo = torch.cat([grid, ones], dim=-1)
    out = torch.matmul(bg_param.view(n, 1, 1, 1, 3, 3), homo.unsqueeze(-1)).squeeze(-1)
    return out[..., :2] / out[..., 2:3]


def fold_fraction_and_depth(deformation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a sampling grid folds over itself: deformation (N,h,w,2), grid coordinates in [-1, 1] →
    (the share of its (h−1)(w−1) cells whose Jacobian determinant is ≤ 0, per sample (N,);
    mean over cells of relu(−det / det(identity)), per sample (N,)).

    A fold is where the dense motion's softmax mix of warps switches between two whose displacements
    differ, so that neighbouring output pixels sample the source in the reverse order: a lock of hair or
    a patch of background doubling back over itself. Each TPS alone hardly ever folds; their mixture does.
    """
    d = deformation.float()
    h, w = d.shape[1:3]
    dx = d[:, :-1, 1:, :] - d[:, :-1, :-1, :]       # (N,h-1,w-1,2): along x
    dy = d[:, 1:, :-1, :] - d[:, :-1, :-1, :]       # along y
    det = (dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]) / ((2.0 / (w - 1)) * (2.0 / (h - 1)))
    return (det <= 0).float().mean(dim=(1, 2)), F.relu(-det).mean(dim=(1, 2))


# ---------------------------------------------------------------- keypoint normalisation (host)
