"""Strategy and precision selection; TPU wiring with a mocked resolver (no TPU here); where each worker saves."""

import os
import platform
import subprocess
import sys
import types

import pytest
import tensorflow as tf

from trainer import checkpointing, distribution

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_off_and_one_device_strategies():
    assert distribution.make_strategy("off") is tf.distribute.get_strategy()
    one = distribution.make_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.extended.worker_devices[0].endswith("CPU:0")
    with pytest.raises(ValueError, match="--strategy='gpu'"):
        distribution.make_strategy("gpu")


class _Recorder:
    """Stands in for the TF TPU entry points and records how they are called."""

    def __init__(self, monkeypatch):
        self.calls = []
        recorder = self

        class FakeResolver:
            def __init__(self, tpu):
                self.tpu = tpu
                recorder.calls.append(("resolver", tpu))

        class FakeTPUStrategy:
            def __init__(self, resolver):
                self.resolver = resolver
                recorder.calls.append(("strategy", resolver.tpu))

        monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver)
        monkeypatch.setattr(tf.distribute, "TPUStrategy", FakeTPUStrategy)
        monkeypatch.setattr(
            tf.config, "experimental_connect_to_cluster", lambda resolver: self.calls.append(("connect", resolver.tpu))
        )
        monkeypatch.setattr(
            tf.tpu.experimental,
            "initialize_tpu_system",
            lambda resolver: self.calls.append(("initialize", resolver.tpu)),
        )


def test_tpu_wiring_connects_to_remote_tpus_and_initializes(monkeypatch):
    recorder = _Recorder(monkeypatch)
    strategy = distribution.make_strategy("tpu", tpu="grpc://10.0.0.2:8470")
    assert recorder.calls == [
        ("resolver", "grpc://10.0.0.2:8470"),
        ("connect", "grpc://10.0.0.2:8470"),
        ("initialize", "grpc://10.0.0.2:8470"),
        ("strategy", "grpc://10.0.0.2:8470"),
    ]
    assert strategy.resolver.tpu == "grpc://10.0.0.2:8470"


def test_tpu_wiring_on_a_tpu_vm_skips_connect(monkeypatch):
    recorder = _Recorder(monkeypatch)
    distribution.make_strategy("tpu", tpu="local")
    assert [call[0] for call in recorder.calls] == ["resolver", "initialize", "strategy"]


def test_tpu_errors_are_explained(monkeypatch):
    with pytest.raises(distribution.StrategyError, match="needs --tpu"):
        distribution.make_strategy("tpu", tpu="")

    def no_tpu(resolver):
        raise tf.errors.NotFoundError(None, None, "TPUs not found in the cluster. Failed in initialization: ...")

    _Recorder(monkeypatch)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", no_tpu)
    with pytest.raises(distribution.StrategyError, match=r"no TPU reachable with --tpu='local' \(TPUs not found"):
        distribution.make_strategy("tpu", tpu="local")


def test_bad_tf_config_is_explained(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(distribution.StrategyError, match="TF_CONFIG"):
        distribution.make_strategy("multi_worker_mirrored")


def _fake_gpus(monkeypatch, capabilities):
    gpus = [
        tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU") for i in range(len(capabilities))
    ]
    real_list = tf.config.list_physical_devices
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else real_list(kind)
    )
    details = dict(zip((gpu.name for gpu in gpus), capabilities, strict=True))
    monkeypatch.setattr(
        tf.config.experimental, "get_device_details", lambda gpu: {"compute_capability": details[gpu.name]}
    )


CPUINFO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpuinfo")


def _fake_cpu(monkeypatch, amx_bf16, onednn):
    monkeypatch.setattr(distribution, "cpu_has_amx_bf16", lambda: amx_bf16)
    monkeypatch.setattr(distribution, "onednn_enabled", lambda: onednn)


@pytest.mark.parametrize(
    "amx_bf16,onednn,expected,reason",
    [
        (True, True, "mixed_bfloat16", "auto: CPU has AMX bfloat16 units, oneDNN on"),
        (True, False, "float32", "auto: CPU has AMX bfloat16 units but TensorFlow's oneDNN kernels are off"),
        (False, True, "float32", "auto: CPU without AMX bfloat16 units"),
        (False, False, "float32", "auto: CPU without AMX bfloat16 units"),
    ],
)
def test_auto_precision_on_a_cpu_needs_amx_and_onednn(monkeypatch, amx_bf16, onednn, expected, reason):
    _fake_gpus(monkeypatch, [])
    _fake_cpu(monkeypatch, amx_bf16, onednn)
    precision = distribution.resolve_precision("auto", "mirrored")
    assert precision.policy == expected
    assert precision.reason.startswith(reason)


@pytest.mark.parametrize(
    "capabilities,expected,reason",
    [
        ([(7, 0)], "mixed_float16", "auto: GPUs of compute capability >= 7 (7.0)"),
        ([(8, 6), (7, 5)], "mixed_float16", "auto: GPUs of compute capability >= 7 (8.6, 7.5)"),
        ([(6, 1)], "float32", "auto: a GPU below compute capability 7 (6.1)"),
        ([(8, 0), (6, 0)], "float32", "auto: a GPU below compute capability 7 (8.0, 6.0)"),
    ],
)
@pytest.mark.parametrize("amx_bf16", [True, False])
def test_auto_precision_on_gpus_follows_the_gpus_not_the_cpu(monkeypatch, capabilities, expected, reason, amx_bf16):
    _fake_gpus(monkeypatch, capabilities)
    _fake_cpu(monkeypatch, amx_bf16, onednn=True)
    precision = distribution.resolve_precision("auto", "mirrored")
    assert precision.policy == expected
    assert precision.reason.startswith(reason)


@pytest.mark.parametrize("amx_bf16", [True, False])
def test_auto_precision_on_tpu_and_explicit_choices(monkeypatch, amx_bf16):
    _fake_cpu(monkeypatch, amx_bf16, onednn=True)
    assert distribution.resolve_precision("auto", "tpu").policy == "mixed_bfloat16"
    assert distribution.resolve_precision("mixed_bfloat16", "mirrored") == ("mixed_bfloat16", "")
    assert distribution.resolve_precision("float32", "tpu") == ("float32", "")


@pytest.mark.parametrize(
    "fixture,amx_bf16,flags",
    [
        ("sapphire_rapids_kvm.txt", True, {"avx512f", "avx512_bf16", "amx_tile", "amx_int8"}),
        ("cascade_lake.txt", False, {"avx512f", "avx512_vnni"}),
        ("graviton3.txt", False, {"asimd", "bf16", "sve"}),  # aarch64: `Features`, bfloat16 instructions, no AMX.
        ("missing.txt", False, set()),  # macOS and Windows have no /proc/cpuinfo.
    ],
)
def test_cpu_flags_are_read_from_proc_cpuinfo(fixture, amx_bf16, flags):
    path = os.path.join(CPUINFO, fixture)
    assert flags <= distribution.cpu_flags(path)
    assert distribution.cpu_has_amx_bf16(path) == amx_bf16
    assert "yes" not in distribution.cpu_flags(path)  # Only the flags line: not `fpu : yes`.


def test_onednn_state_is_the_one_tensorflow_decided(tmp_path):
    """TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off, =1 on (TensorFlow's x86 Linux builds have it), read back from
    TensorFlow in a fresh process: it decides once, at start-up."""
    script = "from trainer import distribution; print(distribution.onednn_enabled())"
    processes = {
        setting: subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=REPO,
            env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for setting in ("0", "1")
    }
    found = {setting: process.communicate(timeout=120)[0].strip() for setting, process in processes.items()}
    assert found["0"] == "False"
    if sys.platform == "linux" and platform.machine() == "x86_64":
        assert found["1"] == "True"


def test_onednn_counts_as_off_when_tensorflow_does_not_say(monkeypatch):
    import tensorflow.python.util as tf_util

    monkeypatch.delattr(tf_util, "_pywrap_util_port")
    monkeypatch.setitem(sys.modules, "tensorflow.python.util._pywrap_util_port", None)  # Its import now fails.
    assert not distribution.onednn_enabled()
    assert not distribution.bfloat16_is_fast()


def _strategy_with_task(task_type, task_id, cluster):
    resolver = types.SimpleNamespace(
        task_type=task_type, task_id=task_id, cluster_spec=lambda: tf.train.ClusterSpec(cluster)
    )
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_chief_is_worker_zero_unless_the_cluster_has_a_chief():
    workers = {"worker": ["a:1", "b:2"]}
    with_chief = {"chief": ["c:3"], "worker": ["a:1", "b:2"]}
    assert distribution.is_chief(tf.distribute.get_strategy())
    assert distribution.is_chief(_strategy_with_task("worker", 0, workers))
    assert not distribution.is_chief(_strategy_with_task("worker", 1, workers))
    assert not distribution.is_chief(_strategy_with_task("worker", 0, with_chief))
    assert distribution.is_chief(_strategy_with_task("chief", 0, with_chief))
    assert distribution.worker_id(_strategy_with_task("worker", 1, workers)) == 1


@pytest.mark.parametrize(
    "task_type, task_id, cluster, temporary",
    [
        ("worker", 1, {"worker": ["a:1", "b:2"]}, "tmp_worker1"),
        ("worker", 0, {"chief": ["c:3"], "worker": ["a:1"]}, "tmp_worker0"),
    ],
)
def test_a_non_chief_saves_to_its_own_temporary_folder_then_deletes_it(
    tmp_path, monkeypatch, task_type, task_id, cluster, temporary
):
    strategy = _strategy_with_task(task_type, task_id, cluster)
    assert not distribution.is_chief(strategy)
    model_dir = tmp_path / "run"
    manager = checkpointing.make_manager(
        tf.train.Checkpoint(step=tf.Variable(7)), str(model_dir / checkpointing.CHECKPOINT_SUBDIR), strategy, False, 2
    )
    deleted = []  # (folder, the files in it when deleted)
    rmtree = tf.io.gfile.rmtree

    def record_and_rmtree(path):
        deleted.append(
            (
                path,
                {os.path.relpath(os.path.join(root, name), path) for root, _, files in os.walk(path) for name in files},
            )
        )
        rmtree(path)

    monkeypatch.setattr(tf.io.gfile, "rmtree", record_and_rmtree)
    path = checkpointing.save(manager, 7, is_chief=False)
    assert path == str(model_dir / temporary / checkpointing.CHECKPOINT_SUBDIR / "ckpt-7")
    assert deleted == [
        (
            str(model_dir / temporary),
            {
                f"{checkpointing.CHECKPOINT_SUBDIR}/{name}"
                for name in ("checkpoint", "ckpt-7.index", "ckpt-7.data-00000-of-00001")
            },
        )
    ]
    assert os.listdir(model_dir) == []  # Nothing in model_dir/checkpoints, and the temporary folder gone.


def test_cpu_devices_cannot_be_split_after_initialization():
    tf.constant(1.0) + 1.0  # Initializes the devices.
    distribution.configure_cpu_devices(1)  # One device: nothing to do.
    with pytest.raises(distribution.StrategyError, match="before running any op"):
        distribution.configure_cpu_devices(2)
