"""The tolerances in ``reference_tolerances`` are the ones ``../shared/reference/README.md`` states.

If the reference data's README changes a tolerance, this fails and names the sentence to re-read,
instead of the parity tests silently asserting a stale contract.
"""

from __future__ import annotations

import re

from tests.conftest import REFERENCE
from tests.reference_tolerances import (EXCEPTIONS_ABS, KEYPOINT_ABS, MAP_ABS, RELATIVE_SCALE_REL, fomm_tol,
                                        golden_tol)


def _readme() -> str:
    return re.sub(r"\s+", " ", (REFERENCE / "README.md").read_text())


def _fmt(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


def test_tpsmm_tolerances_are_the_readmes():
    text = _readme()
    tpsmm = text[: text.index("First Order Motion Model")]
    assert (f"keypoints (kp_*), bg_param and rand_tps_warped_kp_source {_fmt(KEYPOINT_ABS)}") in tpsmm
    assert f"relative_scale {_fmt(RELATIVE_SCALE_REL)} relative" in tpsmm
    assert f"every grid, map and prediction {_fmt(MAP_ABS)}" in tpsmm
    for name, tol in EXCEPTIONS_ABS.items():
        assert f"`{name}`: {_fmt(tol)}" in tpsmm


def test_fomm_tolerances_are_the_readmes():
    fomm = _readme()[_readme().index("First Order Motion Model"):]
    assert f"keypoint values and jacobians {_fmt(KEYPOINT_ABS)}" in fomm
    assert f"relative_scale {_fmt(RELATIVE_SCALE_REL)} relative" in fomm
    assert f"every map, grid and prediction {_fmt(MAP_ABS)}" in fomm


def test_lookup():
    assert golden_tol("kp_driving") == golden_tol("bg_param") == golden_tol("rand_tps_warped_kp_source") == 1e-5
    assert golden_tol("rel_prediction") == golden_tol("synth_deformation") == 1e-4
    assert golden_tol("avd_prediction") == 2e-4
    assert fomm_tol("kp_source_jacobian") == 1e-5 and fomm_tol("rel_dense_mask") == 1e-4
