"""A stand-in ``tensorrt`` module for CPU tests of the TensorRT runner (no GPU, TensorRT not installable).

It has the names the runner uses, with the signatures of the 10.12 / 11.x Python bindings (Logger,
Builder, create_network, OnnxParser, builder config flags / memory pool / optimisation level,
build_serialized_network, Runtime, deserialize_cuda_engine, the engine's I/O queries,
create_execution_context, set_tensor_address, execute_async_v3), and records what is done with them.

Plans are JSON: ``{"graph": name, "io": [[tensor, shape, dtype, "in"|"out"], …]}``. An execution
context "runs" a plan on the CPU: it views the bound addresses as numpy arrays (the tests bind CPU
tensors) and calls ``FakeTensorRT.compute[graph](arrays)``, which writes the outputs — so data
really flows through the bindings, and a wrong or stale address shows in the results.
"""

from __future__ import annotations

import ctypes
import json
import types

import numpy as np

_NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64, "uint8": np.uint8}


class _DType:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"trt.{self.name}"


def array_at(address: int, shape, dtype: str) -> np.ndarray:
    """A writable numpy view of CPU memory at ``address``."""
    count = int(np.prod(shape, dtype=np.int64))
    itemsize = np.dtype(_NP[dtype]).itemsize
    buf = (ctypes.c_byte * (count * itemsize)).from_address(address)
    return np.frombuffer(buf, dtype=_NP[dtype]).reshape(shape)


def plan_bytes(graph: str, io: list) -> bytes:
    return json.dumps({"graph": graph, "io": [[n, list(s), d, m] for n, s, d, m in io]}).encode()


def make_fake_tensorrt(version: str = "10.12.0.36"):
    """A fresh module object; ``trt.record`` holds what was done (loggers, builds, contexts, executions)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    record = types.SimpleNamespace(loggers=[], builders=[], parsers=[], runtimes=[], configs=[], networks=[],
                                   contexts=[], executions=[])
    trt.record = record
    trt.compute = {}

    for name in ("float32", "float16", "int32", "int64", "uint8", "bfloat16"):
        setattr(trt, name, _DType(name))
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    if major >= 11:  # 11.0 / 11.1: STRONGLY_TYPED kept, value 0, deprecated and ignored; no FP16 builder flag
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
        trt.BuilderFlag = types.SimpleNamespace(DEBUG=2, GPU_FALLBACK=3, REFIT=4, TF32=6)
    else:
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
        trt.BuilderFlag = types.SimpleNamespace(FP16=0, INT8=1, DEBUG=2, GPU_FALLBACK=3, REFIT=4, TF32=6)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)

    class Logger:
        WARNING = 2

        def __init__(self, severity=2):
            self.severity = severity
            record.loggers.append(self)

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.onnx = None
            record.networks.append(self)

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.logger = network, logger
            self.num_errors = 0
            record.parsers.append(self)

        def parse_from_file(self, path):
            self.network.onnx = str(path)
            return True

        def get_error(self, i):  # pragma: no cover - parse never fails here
            return "no error"

    class BuilderConfig:
        def __init__(self):
            self.flags = {trt.BuilderFlag.TF32}  # TF32 is on by default in 10.12 and 11.x
            self.pools = {}
            self.builder_optimization_level = 3
            self.progress_monitor = None
            record.configs.append(self)

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

    class Builder:
        def __init__(self, logger):
            self.logger = logger
            record.builders.append(self)

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def build_serialized_network(self, network, config):
            return json.dumps({"onnx": network.onnx, "flags": network.flags, "tf32": config.get_flag(trt.BuilderFlag.TF32),
                               "workspace": config.pools.get(trt.MemoryPoolType.WORKSPACE),
                               "level": config.builder_optimization_level}).encode()

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.handles: list[int] = []
            record.contexts.append(self)

        def set_tensor_address(self, name, address):
            if name not in self.engine.specs:
                return False
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle):
            self.handles.append(int(stream_handle))
            record.executions.append((self.engine.graph, int(stream_handle), dict(self.addresses), self))
            fn = trt.compute.get(self.engine.graph)
            if fn is not None:
                fn({n: array_at(self.addresses[n], s, d) for n, (s, d, _m) in self.engine.specs.items()})
            return True

    class Engine:
        def __init__(self, plan):
            data = json.loads(bytes(plan).decode())
            self.graph = data["graph"]
            self.specs = {n: (tuple(s), d, m) for n, s, d, m in data["io"]}
            self.names = [n for n, _s, _d, _m in data["io"]]

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_shape(self, name):
            return self.specs[name][0]

        def get_tensor_dtype(self, name):
            return getattr(trt, self.specs[name][1])

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if self.specs[name][2] == "in" else trt.TensorIOMode.OUTPUT

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            record.runtimes.append(self)

        def deserialize_cuda_engine(self, plan):
            return Engine(plan)

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


# ------------------------------------------------------------------ a tiny model's four plans


def tiny_plans(size: int = 16, num_tps: int = 2, background: bool = True) -> dict[str, bytes]:
    """Plans with the real graphs' tensor names (engines/export/graphs.py), tiny shapes."""
    s, k, t = size, num_tps * 5, num_tps
    img = [1, 3, s, s]
    plans = {
        "keypoints": plan_bytes("keypoints", [("image", img, "float32", "in"), ("kp", [1, k, 2], "float32", "out")]),
        "source_encoder": plan_bytes("source_encoder", [("source", img, "float32", "in"),
                                                        ("kp_source", [1, k, 2], "float32", "out"),
                                                        ("source_image", img, "float16", "out")]),
        "generator": plan_bytes("generator", [("source_image", img, "float16", "in"),
                                              ("kp_driving", [1, k, 2], "float32", "in"),
                                              ("tps_theta", [1, t, 2, 3], "float32", "in"),
                                              ("tps_params", [1, t, 5, 2], "float32", "in"),
                                              ("bg_param", [1, 3, 3], "float32", "in"),
                                              ("prediction", img, "float32", "out")]),
    }
    if background:
        plans["background"] = plan_bytes("background", [("source", img, "float32", "in"), ("driving", img, "float32", "in"),
                                                        ("bg_param", [1, 3, 3], "float32", "out")])
    return plans


def tiny_grid(num_kp: int) -> np.ndarray:
    g = np.linspace(-0.6, 0.6, 5, dtype=np.float32)
    rows = np.linspace(-0.5, 0.5, max(1, num_kp // 5), dtype=np.float32)
    return np.stack(np.meshgrid(g, rows), -1).reshape(-1, 2)[:num_kp].copy()


def tiny_compute(num_kp: int) -> dict:
    """What the tiny plans compute: keypoints = a grid shifted by the image's mean; source encoder: the grid
    and the image (fp16); background: a shift by the mean difference of driving and source; generator:
    ½·source + the keypoints' mean shift ·5 + the background's x shift, so the output depends on every
    input binding."""
    grid = tiny_grid(num_kp)

    def keypoints(a):
        a["kp"][0] = grid + (a["image"].mean(dtype=np.float32) - np.float32(0.5)) * np.float32(0.1)

    def source_encoder(a):
        a["kp_source"][0] = grid
        a["source_image"][...] = a["source"].astype(np.float16)

    def background(a):
        a["bg_param"][0] = np.eye(3, dtype=np.float32)
        a["bg_param"][0, 0, 2] = a["driving"].mean(dtype=np.float32) - a["source"].mean(dtype=np.float32)

    def generator(a):
        shift = (a["kp_driving"][0] - grid).mean(dtype=np.float32) * np.float32(5.0)
        value = a["source_image"].astype(np.float32) * np.float32(0.5) + shift + a["bg_param"][0, 0, 2]
        a["prediction"][...] = np.clip(value, 0, 1)

    return {"keypoints": keypoints, "source_encoder": source_encoder, "background": background, "generator": generator}
