"""Strategy and precision selection; TPU wiring with a mocked resolver (no TPU here); where each worker saves."""

import os
import types

import pytest
import tensorflow as tf

from trainer import checkpointing, distribution


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


@pytest.mark.parametrize(
    "capabilities,expected",
    [
        ([], "float32"),
        ([(7, 0)], "mixed_float16"),
        ([(8, 6), (7, 5)], "mixed_float16"),
        ([(6, 1)], "float32"),
        ([(8, 0), (6, 0)], "float32"),
    ],
)
def test_auto_precision_follows_the_gpus(monkeypatch, capabilities, expected):
    _fake_gpus(monkeypatch, capabilities)
    assert distribution.resolve_precision("auto", "mirrored") == expected


def test_auto_precision_on_tpu_and_explicit_choices():
    assert distribution.resolve_precision("auto", "tpu") == "mixed_bfloat16"
    assert distribution.resolve_precision("mixed_bfloat16", "mirrored") == "mixed_bfloat16"
    assert distribution.resolve_precision("float32", "tpu") == "float32"


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
