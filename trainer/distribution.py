"""Distribution strategy and mixed-precision setup, chosen by name from the config.

The names are defined here (STRATEGIES, PRECISIONS) and checked once, with the rest of the config, by
trainer/config_fields.py; this module also splits the CPU into logical devices, wires TPUs and tells the chief.
`--mixed_precision=auto` is resolved from the hardware itself: GPU compute capabilities, and on CPUs the AMX flags
of /proc/cpuinfo and whether TensorFlow runs oneDNN (`bfloat16_is_fast`, also for other CPU users of bfloat16).
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import keras
import tensorflow as tf
from absl import logging

STRATEGIES = ("off", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
CPUINFO = "/proc/cpuinfo"


class StrategyError(RuntimeError):
    """The requested strategy cannot run here (no TPU, bad TF_CONFIG, devices already initialized)."""


def configure_cpu_devices(num_devices: int) -> None:
    """Splits the CPU into `num_devices` logical devices so MirroredStrategy has replicas on a CPU-only host.

    Must run before TensorFlow initializes its devices (before any op or strategy).
    """
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as e:
        raise StrategyError(
            f"--num_cpu_devices={num_devices}: TensorFlow already initialized its devices; "
            "split the CPU before running any op or creating a strategy."
        ) from e


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
    """The strategy `name` (see STRATEGIES); `tpu` is the TPU name or grpc address, or 'local' on a TPU VM."""
    if name == "off":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0")
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices("CPU")])
    if name == "multi_worker_mirrored":
        return _multi_worker_strategy()
    if name == "tpu":
        return _tpu_strategy(tpu)
    raise ValueError(f"--strategy={name!r}: choose one of {STRATEGIES}.")  # A caller's typo.


def _multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        logging.warning("--strategy=multi_worker_mirrored without TF_CONFIG: running as a single worker.")
    else:
        try:
            cluster = json.loads(raw)["cluster"]
        except (ValueError, KeyError, TypeError) as e:
            raise StrategyError(f"TF_CONFIG is not valid JSON with a 'cluster' entry ({e}): {raw!r}.") from e
        logging.info("Multi-worker cluster: %s", cluster)
    return tf.distribute.MultiWorkerMirroredStrategy()


def _tpu_strategy(tpu: str) -> tf.distribute.TPUStrategy:
    """Same wiring as tf-models' official/common/distribute_utils.tpu_initialize."""
    if not tpu:
        raise StrategyError("--strategy=tpu needs --tpu: the TPU name or grpc:// address, or 'local' on a TPU VM.")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, OSError, tf.errors.OpError) as e:
        reason = str(e).split(". ")[0][:200] or type(e).__name__
        raise StrategyError(
            f"--strategy=tpu: no TPU reachable with --tpu={tpu!r} ({reason}). Run on a "
            "Cloud TPU VM with --tpu=local, or pass the TPU's name or grpc://host:8470 address."
        ) from e
    return tf.distribute.TPUStrategy(resolver)


class Precision(NamedTuple):
    """A resolved --mixed_precision and why it was chosen (empty when it was given by name)."""

    policy: str
    reason: str = ""


def resolve_precision(policy: str, strategy_name: str) -> Precision:
    """'auto' picks what the hardware computes fastest without losing accuracy: mixed_bfloat16 on TPU; on GPUs,
    mixed_float16 when every one has compute capability >= 7 (tensor cores), else float32; on CPUs, mixed_bfloat16
    when `bfloat16_is_fast()`, else float32. Any other of PRECISIONS is returned as it is."""
    if policy != "auto":
        return Precision(policy)
    if strategy_name == "tpu":
        return Precision("mixed_bfloat16", "auto: TPU, whose matrix units compute in bfloat16")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [_compute_capability(gpu) for gpu in gpus]
        found = ", ".join(f"{major}.{minor}" for major, minor in capabilities)
        if min(capabilities) >= (7, 0):
            return Precision("mixed_float16", f"auto: GPUs of compute capability >= 7 ({found})")
        return Precision("float32", f"auto: a GPU below compute capability 7 ({found}) has no float16 tensor cores")
    amx, onednn = cpu_has_amx_bf16(), onednn_enabled()
    if amx and onednn:
        return Precision("mixed_bfloat16", "auto: CPU has AMX bfloat16 units, oneDNN on")
    if amx:
        return Precision(
            "float32",
            "auto: CPU has AMX bfloat16 units but TensorFlow's oneDNN kernels are off, and without them bfloat16 is "
            "slower than float32 (TF_ENABLE_ONEDNN_OPTS=1 turns them on)",
        )
    return Precision("float32", "auto: CPU without AMX bfloat16 units")


def _compute_capability(gpu: tf.config.PhysicalDevice) -> tuple[int, int]:
    major, minor = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
    return int(major), int(minor)


def cpu_flags(cpuinfo: str = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (`flags` on x86, `Features` on Arm); none where the file does
    not exist (macOS, Windows), so nothing is assumed there."""
    try:
        with open(cpuinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return frozenset()
    return frozenset(
        flag
        for line in lines
        if line.split(":", 1)[0].strip() in ("flags", "Features")
        for flag in line.split(":", 1)[1].split()
    )


def cpu_has_amx_bf16(cpuinfo: str = CPUINFO) -> bool:
    """Whether the CPU has Intel AMX bfloat16 tile units (`amx_bf16`: Sapphire Rapids and newer Xeons)."""
    return "amx_bf16" in cpu_flags(cpuinfo)


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process, as TensorFlow itself decided at start-up:
    TF_ENABLE_ONEDNN_OPTS when set, else its default for the CPU (on Linux x86: on for AVX-512 VNNI/BF16, AVX-VNNI
    or AMX CPUs). Read from TensorFlow rather than the variable, since the default depends on the CPU. False when
    this TensorFlow build does not say, which keeps `auto` at float32."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own answer; no public API exists.
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def bfloat16_is_fast() -> bool:
    """Whether bfloat16 beats float32 on this CPU: only AMX units driven by oneDNN do (without oneDNN, or without
    AMX, TensorFlow's bfloat16 kernels are slower than float32; see benchmarks/README.md)."""
    return cpu_has_amx_bf16() and onednn_enabled()


def set_precision(policy: str) -> None:
    """Sets the Keras dtype policy; call before building the model."""
    keras.config.set_dtype_policy(policy)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes shared outputs (config, logs, the real checkpoints)."""
    resolver = strategy.cluster_resolver
    if isinstance(strategy, tf.distribute.TPUStrategy) or resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_id(strategy: tf.distribute.Strategy) -> int:
    resolver = strategy.cluster_resolver
    return (
        int(resolver.task_id or 0)
        if resolver is not None and not isinstance(strategy, tf.distribute.TPUStrategy)
        else 0
    )
