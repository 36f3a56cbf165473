"""What benchmark figures depend on, printed before them: the CPU, its bfloat16 units, oneDNN's state, any GPU."""

from __future__ import annotations

import os
import platform

import tensorflow as tf

from trainer import distribution


def hardware() -> str:
    """The CPU model, its bfloat16-related flags, oneDNN's state, cores and any GPU: what the figures depend on."""
    model = platform.processor() or platform.machine()
    if os.path.exists(distribution.CPUINFO):
        with open(distribution.CPUINFO) as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    cpu_flags = distribution.cpu_flags()
    found = [flag for flag in ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f") if flag in cpu_flags]
    onednn = "on" if distribution.onednn_enabled() else "off"
    setting = f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')}"
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        setting += f", ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']}"
    gpus = tf.config.list_physical_devices("GPU")
    return (
        f"CPU: {model}, {os.cpu_count()} cores, {platform.machine()}\n"
        f"CPU flags: {', '.join(found) or 'none of amx_bf16/amx_tile/amx_int8/avx512_bf16/avx512f'}"
        f"{'' if distribution.cpu_has_amx_bf16() else ' (no AMX bfloat16 units)'}\n"
        f"oneDNN: {onednn} ({setting}); GPUs: {len(gpus)}; TensorFlow {tf.__version__}"
    )
