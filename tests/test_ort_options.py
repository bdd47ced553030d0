"""ONNX Runtime's CPU session settings: explicit BackendOptions.ort (OrtOptions) reach the sessions, and
``splinecam bench --ort-sweep`` measures them one change at a time (no figure is asserted: speed lives in
the bench's JSON, measured on a quiet machine)."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from splinecam.engines.backends import BackendOptions, create_backend
from splinecam.engines.backends.onnxruntime_runner import session_options
from splinecam.engines.backends.options import OrtOptions


def test_defaults_are_what_splinecam_always_used():
    opts, disabled = session_options(BackendOptions(threads=2))
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.enable_mem_pattern and opts.enable_cpu_mem_arena
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert disabled == []


def test_every_setting_reaches_the_session_options():
    tuning = OrtOptions(graph_optimization="extended", nchwc=False, inter_op_threads=2, spinning=True,
                        memory_pattern=False, cpu_arena=False)
    opts, disabled = session_options(BackendOptions(threads=1, ort=tuning))
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert opts.inter_op_num_threads == 2 and opts.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert not opts.enable_mem_pattern and not opts.enable_cpu_mem_arena
    assert disabled == ["NchwcTransformer"]
    assert tuning.label() == "opt=extended,no-nchwc,inter=2,spin,no-mempattern,no-arena"
    with pytest.raises(ValueError):
        session_options(BackendOptions(ort=OrtOptions(graph_optimization="max")))


def test_settings_do_not_change_the_pictures(tmp_path_factory, golden_model):
    from tests.test_backends import golden_export

    directory = golden_export(tmp_path_factory, golden_model, "fp32")
    import numpy as np

    from splinecam.benchmarks.inputs import drawn_face

    face = drawn_face(golden_model.config.image_size)
    outs = []
    for tuning in (OrtOptions(), OrtOptions(graph_optimization="basic", nchwc=False, memory_pattern=False,
                                            cpu_arena=False, inter_op_threads=2)):
        backend = create_backend(golden_model, "onnxruntime", "cpu", "fp32", BackendOptions(onnx_dir=directory, ort=tuning))
        state = backend.prepare_source(face)
        outs.append(backend.generate(state, state.kp + 0.02))
    assert np.abs(outs[0].astype(int) - outs[1].astype(int)).max() <= 1


def test_ort_sweep_measures_every_variant(golden_model):
    from splinecam.benchmarks.inputs import load_inputs
    from splinecam.benchmarks.ort_sweep import format_sweep, run_ort_sweep, variants

    inputs = load_inputs(golden_model.config.image_size, 2)
    rows = run_ort_sweep(golden_model, inputs, threads=2, precisions=("fp32",), warmup=0)
    assert [r["variant"] for r in rows] == [v[0] for v in variants(2)]
    assert all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows]
    assert rows[0]["speedup_vs_default"] == 1.0 and rows[0]["max_abs_diff_vs_default"] == 0
    assert all(r["max_abs_diff_vs_default"] <= 2 for r in rows)
    assert "default" in format_sweep(rows)
