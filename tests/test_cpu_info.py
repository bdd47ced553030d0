"""engines/cpu.py: ISA classes and the ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY caps (AVX2 stand-ins)."""

from __future__ import annotations

from splinecam.engines.cpu import cpu_info, make_cpu_info

ZEN3 = {"avx2", "fma", "f16c", "sse4_2"}
ZEN4 = ZEN3 | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}
SPR = ZEN4 | {"avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}


def test_isa_classes():
    assert make_cpu_info("zen3", 2, 2, ZEN3, {}).isa == "avx2"
    assert make_cpu_info("skx", 2, 2, ZEN3 | {"avx512f"}, {}).isa == "avx512"
    z4 = make_cpu_info("zen4", 2, 2, ZEN4, {})
    assert z4.isa == "avx512_bf16" and z4.has_bf16 and not z4.has_fp16_arithmetic
    spr = make_cpu_info("spr", 2, 2, SPR, {})
    assert spr.isa == "amx" and spr.has_bf16 and spr.has_fp16_arithmetic
    assert make_cpu_info("arm", 4, 4, {"neon", "asimd"}, {}).isa == "baseline"
    assert not make_cpu_info("zen3", 2, 2, ZEN3, {}).has_bf16


def test_isa_cap_makes_an_avx2_stand_in():
    for env in ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"ATEN_CPU_CAPABILITY": "avx2"}, {"OV_CPU_MAX_ISA": "AVX2"},
                {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}):
        info = make_cpu_info("spr", 2, 2, SPR, env)
        assert info.isa == "avx2" and not info.has_bf16, env
        assert set(info.cap.split()) == set(env) and "stand-in" in info.label   # every variable that caps is named
        assert "amx_bf16" in info.hardware_flags and "amx_bf16" not in info.flags
    # a cap at or above what the CPU has changes nothing and is not called a stand-in
    info = make_cpu_info("zen3", 2, 2, ZEN3, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"})
    assert info.isa == "avx2" and info.cap is None
    # an unknown value is ignored
    assert make_cpu_info("spr", 2, 2, SPR, {"ONEDNN_MAX_CPU_ISA": "nonsense"}).isa == "amx"


def test_this_machine_reads():
    info = cpu_info()
    assert info.logical_cores >= 1 and info.model and info.isa in ("baseline", "avx2", "avx512", "avx512_bf16", "amx")
