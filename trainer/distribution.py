"""Distribution strategy and mixed-precision setup, chosen by name from the config.

The names are defined here (STRATEGIES, PRECISIONS) and checked once, with the rest of the config, by
trainer/config_fields.py; this module also splits the CPU into logical devices, wires TPUs and tells the chief.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf
from absl import logging

STRATEGIES = ("off", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


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


def resolve_precision(policy: str, strategy_name: str) -> str:
    """'auto' picks mixed_bfloat16 on TPU, mixed_float16 when every GPU has compute capability >= 7, else float32;
    any other of PRECISIONS is returned as it is."""
    if policy != "auto":
        return policy
    if strategy_name == "tpu":
        return "mixed_bfloat16"
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and all(_compute_capability(gpu) >= (7, 0) for gpu in gpus):
        return "mixed_float16"
    return "float32"


def _compute_capability(gpu: tf.config.PhysicalDevice) -> tuple[int, int]:
    return tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))


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
