"""What a benchmark ran on: CPU, GPU and the software stack (null where absent).

Absolute figures mean nothing without this, so every bench JSON carries it (``device``).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field

from splinecam.engines.cpu import cpu_info


@dataclass
class DeviceInfo:
    """The machine of a run. GPU fields and library versions are None where absent.

    cpu_flags: the ones that matter for our backends (avx2, avx512f, avx512_bf16, amx_bf16 …);
    threads: torch intra-op threads the run used.
    """

    cpu_model: str | None
    cpu_cores_logical: int | None
    cpu_cores_physical: int | None
    cpu_flags: list[str] = field(default_factory=list)
    cpu_isa: str | None = None          # engines.cpu ISA class (avx2 / avx512 / avx512_bf16 / amx)
    cpu_isa_cap: str | None = None      # the env variables that capped it (an AVX2 stand-in), or None
    threads: int | None = None
    memory_gb: float | None = None
    gpu_name: str | None = None
    gpu_count: int = 0
    compute_capability: str | None = None
    gpu_memory_gb: float | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    cudnn_version: str | None = None
    tensorrt_version: str | None = None
    onnxruntime_version: str | None = None
    onnxruntime_providers: list[str] = field(default_factory=list)
    torch_version: str | None = None
    python_version: str = field(default_factory=platform.python_version)
    os: str = field(default_factory=platform.platform)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        """Short name for tables: the GPU if any, else the CPU and its core count."""
        if self.gpu_name:
            return self.gpu_name
        cores = f" ({self.cpu_cores_logical} threads)" if self.cpu_cores_logical else ""
        return f"{self.cpu_model or 'unknown CPU'}{cores}"


def _memory_gb() -> float | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _nvidia_smi_driver() -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0].strip() if lines else None


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # an optional library that is absent or broken counts as absent
        return None
    return getattr(mod, "__version__", None)


def collect_device_info(threads: int | None = None) -> DeviceInfo:
    """Probe this machine (cheap: no network, no model)."""
    import torch

    cpu = cpu_info()
    info = DeviceInfo(cpu_model=cpu.model, cpu_cores_logical=cpu.logical_cores, cpu_cores_physical=cpu.physical_cores,
                      cpu_flags=list(cpu.flags), cpu_isa=cpu.isa, cpu_isa_cap=cpu.cap, threads=threads or torch.get_num_threads(), memory_gb=_memory_gb(),
                      torch_version=torch.__version__)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.gpu_name = props.name
        info.gpu_count = torch.cuda.device_count()
        info.compute_capability = f"{props.major}.{props.minor}"
        info.gpu_memory_gb = round(props.total_memory / 1024**3, 1)
        info.cuda_version = torch.version.cuda
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info.cudnn_version = str(cudnn) if cudnn else None
        info.driver_version = _nvidia_smi_driver()
    info.tensorrt_version = _version("tensorrt")
    info.onnxruntime_version = _version("onnxruntime")
    if info.onnxruntime_version:
        import onnxruntime

        info.onnxruntime_providers = list(onnxruntime.get_available_providers())
    return info
