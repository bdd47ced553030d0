"""The CPU splinecam runs on: model name, cores, and the instruction-set features our backends care about.

One place reads ``/proc/cpuinfo`` (the backends' ``auto`` policy, the tests' skips and the benchmarks'
device labels all ask :func:`cpu_info`). The features are the *usable* ones: when the user caps the
instruction set of the libraries we run on — ``ONEDNN_MAX_CPU_ISA`` (oneDNN: torch's CPU convolutions and
OpenVINO's), ``OV_CPU_MAX_ISA`` (OpenVINO's own kernels) or ``ATEN_CPU_CAPABILITY`` (torch's own kernels) —
features above the cap are reported absent, so a run with
``ONEDNN_MAX_CPU_ISA=AVX2 OV_CPU_MAX_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` on an AVX-512/AMX machine behaves,
and is labelled, as an AVX2 stand-in. (Seen with OpenVINO 2026.4 on an AMX Xeon: its profiling counters
name ``jit_avx2_f32`` / ``brgconv_avx2_f32`` kernels under both caps, and a bf16 hint falls back to f32;
with ``ONEDNN_MAX_CPU_ISA`` alone 13 of OpenVINO's own nodes stay AVX-512.) ONNX Runtime's MLAS picks its
kernels from CPUID and has no such cap: its rows in a stand-in run are the real CPU's. The ISA classes,
lowest first:

    avx2         AVX2 + FMA: most laptops and desktops (Zen 1-3, Intel before Ice Lake / client parts)
    avx512       AVX-512 (F, BW, VL …) without bf16
    avx512_bf16  AVX-512 with bf16 dot products (Zen 4+, Cooper Lake)
    amx          AMX tiles with bf16 (Sapphire Rapids and later Xeons)

Others (no AVX2, ARM) are ``"baseline"``.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from dataclasses import dataclass, field

#: the flags that matter to our backends, in the order reports list them
INTERESTING_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                     "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd")

ISA_CLASSES = ("baseline", "avx2", "avx512", "avx512_bf16", "amx")

# ONEDNN_MAX_CPU_ISA (and OV_CPU_MAX_ISA, which takes the same names) / ATEN_CPU_CAPABILITY values → the
# highest ISA class they allow
_ONEDNN_CAPS = {"sse41": "baseline", "avx": "baseline", "avx2": "avx2", "avx2_vnni": "avx2",
                "avx2_vnni_2": "avx2", "avx512_core": "avx512", "avx512_core_vnni": "avx512",
                "avx512_core_bf16": "avx512_bf16", "avx10_1_512": "avx512_bf16",
                "avx512_core_fp16": "avx512_bf16", "avx512_core_amx": "amx", "avx10_1_512_amx": "amx",
                "avx512_core_amx_fp16": "amx", "avx10_1_512_amx_fp16": "amx", "all": "amx"}
_ATEN_CAPS = {"default": "baseline", "avx2": "avx2", "avx512": "amx"}  # aten's avx512 kernels cover bf16/amx CPUs

# features that belong to each class (dropped when the cap is below it)
_CLASS_OF_FLAG = {"avx2": "avx2", "fma": "avx2", "f16c": "avx2", "avx_vnni": "avx2", "avx512f": "avx512",
                  "avx512_vnni": "avx512", "avx512_bf16": "avx512_bf16", "avx512_fp16": "avx512_bf16",
                  "amx_tile": "amx", "amx_bf16": "amx", "amx_int8": "amx"}


@dataclass(frozen=True)
class CpuInfo:
    """What the CPU offers. ``flags``: the usable :data:`INTERESTING_FLAGS`; ``hardware_flags``: what the
    CPU has before any ISA cap; ``cap``: the environment variable that lowered it, or None."""

    model: str
    logical_cores: int
    physical_cores: int | None
    flags: tuple[str, ...] = field(default_factory=tuple)
    hardware_flags: tuple[str, ...] = field(default_factory=tuple)
    cap: str | None = None

    @property
    def isa(self) -> str:
        """The highest usable ISA class (see the module doc)."""
        f = set(self.flags)
        if {"amx_tile", "amx_bf16"} <= f:
            return "amx"
        if "avx512_bf16" in f:
            return "avx512_bf16"
        if "avx512f" in f:
            return "avx512"
        if {"avx2", "fma"} <= f:
            return "avx2"
        return "baseline"

    @property
    def has_bf16(self) -> bool:
        """bf16 dot products in hardware (AVX-512 bf16 or AMX): where bf16 pays on a CPU."""
        return self.isa in ("avx512_bf16", "amx")

    @property
    def has_fp16_arithmetic(self) -> bool:
        """Native fp16 arithmetic (AVX-512 FP16 / AMX-FP16); without it fp16 on a CPU is emulated."""
        return "avx512_fp16" in self.flags

    @property
    def label(self) -> str:
        """For figures: ``AMD EPYC (2 threads, AVX-512 bf16)``; a capped run says so."""
        names = {"amx": "AMX", "avx512_bf16": "AVX-512 bf16", "avx512": "AVX-512", "avx2": "AVX2",
                 "baseline": "no AVX2"}
        stand_in = f", stand-in via {self.cap}" if self.cap else ""
        return f"{self.model} ({self.logical_cores} threads, {names[self.isa]}{stand_in})"

    def to_dict(self) -> dict:
        return {"model": self.model, "logical_cores": self.logical_cores, "physical_cores": self.physical_cores,
                "isa": self.isa, "flags": list(self.flags), "hardware_flags": list(self.hardware_flags),
                "isa_cap": self.cap}


def _read_cpuinfo() -> tuple[str, int | None, set[str]]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU", None, set()
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    model = m.group(1).strip() if m else (platform.processor() or platform.machine() or "unknown CPU")
    cores = set(re.findall(r"physical id\s*:\s*(\d+).*?core id\s*:\s*(\d+)", text, re.S))
    m = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M)
    return model, (len(cores) or None), set(m.group(1).split()) if m else set()


def isa_cap(environ=os.environ) -> tuple[str | None, str | None]:
    """(the lowest ISA class allowed by ONEDNN_MAX_CPU_ISA / OV_CPU_MAX_ISA / ATEN_CPU_CAPABILITY, the variables
    that set it, space-separated) or (None, None)."""
    caps = []
    for var, table in (("ONEDNN_MAX_CPU_ISA", _ONEDNN_CAPS), ("OV_CPU_MAX_ISA", _ONEDNN_CAPS),
                       ("ATEN_CPU_CAPABILITY", _ATEN_CAPS)):
        value = environ.get(var, "").strip().lower()
        if value and value in table:
            caps.append((ISA_CLASSES.index(table[value]), var))
    if not caps:
        return None, None
    level = min(c[0] for c in caps)
    return ISA_CLASSES[level], " ".join(var for lvl, var in caps if lvl == level)


def make_cpu_info(model: str, logical: int, physical: int | None, hardware: set[str],
                  environ=os.environ) -> CpuInfo:
    """CpuInfo from raw facts (testable without /proc): flags above an ISA cap are dropped."""
    hw = tuple(f for f in INTERESTING_FLAGS if f in hardware)
    cap, var = isa_cap(environ)
    if cap is None:
        return CpuInfo(model, logical, physical, hw, hw, None)
    limit = ISA_CLASSES.index(cap)
    usable = tuple(f for f in hw if ISA_CLASSES.index(_CLASS_OF_FLAG.get(f, "baseline")) <= limit)
    return CpuInfo(model, logical, physical, usable, hw, var if usable != hw else None)


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once per process)."""
    model, physical, hardware = _read_cpuinfo()
    return make_cpu_info(model, os.cpu_count() or 1, physical, hardware)
