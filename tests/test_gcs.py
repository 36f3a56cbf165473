"""data_prep from gs:// to gs:// against a real local GCS emulator, compared with the same build on local disk."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import fsspec
import numpy as np
import pytest
from conftest import FAST_BEAM_ARGS, build_folder, free_ports
from keras_files import write_mnist_npz

from data_prep import driver, pipeline

BUCKET = "imgcls-test"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A gcp-storage-emulator on 127.0.0.1 for this module; yields the gcsfs filesystem."""
    (port,) = free_ports(1)
    emulator = shutil.which("gcp-storage-emulator", path=os.path.dirname(sys.executable))
    process = subprocess.Popen([emulator, "start", "--host", "127.0.0.1", "--port", str(port),
                                "--default-bucket", BUCKET, "--in-memory"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "the GCS emulator did not start"
            time.sleep(0.1)  # Polling interval; the connection above is the synchronisation.
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
    fs = fsspec.filesystem("gs", skip_instance_cache=True)
    yield fs
    process.terminate()
    process.wait()
    del os.environ["STORAGE_EMULATOR_HOST"]


@pytest.fixture(scope="module")
def raw_on_gcs(gcs, sample_folder):
    gcs.put(str(sample_folder), f"{BUCKET}/raw/", recursive=True)
    return f"gs://{BUCKET}/raw"


@pytest.mark.slow
def test_build_from_gs_to_gs_equals_local_build(gcs, raw_on_gcs, sample_folder, tmp_path):
    local_report = build_folder(sample_folder.parent, tmp_path / "local", num_shards=2)
    gs_report = build_folder(raw_on_gcs, f"gs://{BUCKET}/datasets/catsdogs", num_shards=2, threads=3)
    assert gs_report == local_report

    names = sorted(os.listdir(tmp_path / "local"))
    remote = sorted(p.rsplit("/", 1)[1] for p in gcs.find(f"{BUCKET}/datasets/catsdogs"))
    assert remote == names
    for name in names:
        local = (tmp_path / "local" / name).read_bytes()
        copied = gcs.cat_file(f"{BUCKET}/datasets/catsdogs/{name}")
        if name in ("metadata.json", "dataset_info.json"):  # They name the input folder, which differs.
            local, copied = (json.loads(v) for v in (local, copied))
            for value in (local, copied):
                value.get("source", {}).pop("input", None)
                value.pop("description", None)
        assert local == copied, name
    assert not [p for p in gcs.ls(f"{BUCKET}/datasets", detail=False) if "incomplete" in p], "temp dir left"


@pytest.mark.slow
def test_gs_overwrite_needs_flag_and_replaces_whole_dataset(gcs, raw_on_gcs):
    target = f"gs://{BUCKET}/datasets/replaced"
    build_folder(raw_on_gcs, target, num_shards=3)
    with pytest.raises(driver.UserError, match="already exists; pass --overwrite"):
        build_folder(raw_on_gcs, target)
    build_folder(raw_on_gcs, target, num_shards=1, overwrite=True)
    shards = [p for p in gcs.find(f"{BUCKET}/datasets/replaced") if ".tfrecord-" in p]
    assert len(shards) == 3 and all(p.endswith("-of-00001") for p in shards), "no shard of the old dataset remains"


@pytest.mark.slow
def test_keras_file_on_gs_builds_to_gs(gcs, tmp_path):
    rng = np.random.default_rng(0)
    write_mnist_npz(tmp_path / "mnist.npz", rng, x_train_shape=(8, 28, 28))
    gcs.put(str(tmp_path / "mnist.npz"), f"{BUCKET}/keras/mnist.npz")
    report = driver.build_keras_dataset(
        "mnist", driver.CommonOptions(output_dir=f"gs://{BUCKET}/datasets/mnist", beam_args=FAST_BEAM_ARGS),
        input_path=f"gs://{BUCKET}/keras/mnist.npz", validation_size="2")
    assert report["splits"] == {"train": 6, "validation": 2, "test": 3}
    metadata = json.loads(gcs.cat_file(f"{BUCKET}/datasets/mnist/metadata.json"))
    assert metadata["source"]["path"] == f"gs://{BUCKET}/keras/mnist.npz"


def test_shard_files_written_by_workers_are_counted_past_the_listing_cache(gcs):
    """The stall check counts shards the workers begin; gcsfs would otherwise answer from its first listing."""
    directory = f"{BUCKET}/counting"
    gcs.pipe(f"{directory}/_work/manifest.jsonl", b"")
    assert pipeline.count_shard_files(f"gs://{directory}") == 0
    gcs.pipe(f"{directory}/catsdogs-train.tfrecord-00000-of-00001", b"")  # Another client, as a worker is.
    assert pipeline.count_shard_files(f"gs://{directory}") == 1
