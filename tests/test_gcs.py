"""data_prep from gs:// to gs:// against a real local GCS emulator, compared with the same build on local disk;
the commit by copies that object storage needs, interrupted at each of its steps."""

import itertools
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

from data_prep import driver, folders, options, output, ownership, progress, sample_data, schema

BUCKET = "imgcls-test"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A gcp-storage-emulator on 127.0.0.1 for this module; yields the gcsfs filesystem."""
    (port,) = free_ports(1)
    emulator = shutil.which("gcp-storage-emulator", path=os.path.dirname(sys.executable))
    process = subprocess.Popen(
        [emulator, "start", "--host", "127.0.0.1", "--port", str(port), "--default-bucket", BUCKET, "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
    """The sample download replica in the bucket as users copy it: PetImages/ and the loose files beside it."""
    root = sample_folder.parent
    for directory, _, names in os.walk(root):
        for name in names:
            relpath = os.path.relpath(os.path.join(directory, name), root)
            gcs.put_file(os.path.join(directory, name), f"{BUCKET}/raw/{relpath}")
    return f"gs://{BUCKET}/raw"


@pytest.mark.slow
def test_build_from_gs_to_gs_equals_local_build(gcs, raw_on_gcs, sample_folder, tmp_path):
    local_report = build_folder(sample_folder.parent, tmp_path / "local", num_shards=2)
    gs_report = build_folder(raw_on_gcs, f"gs://{BUCKET}/datasets/catsdogs", num_shards=2, threads=3)
    assert gs_report == local_report
    skipped = {item["path"]: item["reason"] for item in gs_report["skipped"]}
    assert (
        skipped["CDLA-Permissive-2.0.pdf"] == skipped["readme[1].txt"] == "skipped: outside the data folder PetImages"
    )

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
    report = driver.build(
        options.BuildOptions(
            dataset="mnist",
            output_dir=f"gs://{BUCKET}/datasets/mnist",
            beam_args=FAST_BEAM_ARGS,
            input=f"gs://{BUCKET}/keras/mnist.npz",
            validation_size="2",
        )
    )
    assert report["splits"] == {"train": 6, "validation": 2, "test": 3}
    metadata = json.loads(gcs.cat_file(f"{BUCKET}/datasets/mnist/metadata.json"))
    assert metadata["source"]["path"] == f"gs://{BUCKET}/keras/mnist.npz"


def test_loose_files_around_the_wrapper_are_listed_alike_in_a_bucket(gcs, tmp_path):
    relpaths = [
        "kaggle/CDLA-Permissive-2.0.pdf",
        "kaggle/readme[1].txt",
        "kaggle/stray.jpg",
        "kaggle/PetImages/manifest.json",
        "kaggle/PetImages/Cat/1.jpg",
        "kaggle/PetImages/Dog/2.jpg",
    ]
    for relpath in relpaths:
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes(b"x")
        gcs.pipe_file(f"{BUCKET}/listing/{relpath}", b"x")

    def described(listing):
        return sorted((e.relpath, e.label, e.skip) for e in listing.entries)

    local = folders.list_input(str(tmp_path / "kaggle"), "catsdogs")
    remote = folders.list_input(f"gs://{BUCKET}/listing/kaggle", "catsdogs")
    assert (
        described(remote)
        == described(local)
        == [
            ("CDLA-Permissive-2.0.pdf", None, "skipped: outside the data folder PetImages"),
            ("PetImages/Cat/1.jpg", 0, None),
            ("PetImages/Dog/2.jpg", 1, None),
            ("PetImages/manifest.json", None, "skipped: not inside a class folder"),
            ("readme[1].txt", None, "skipped: outside the data folder PetImages"),
            ("stray.jpg", None, "skipped: outside the data folder PetImages"),
        ]
    )
    assert [e.path for e in remote.entries][0] == f"gs://{BUCKET}/listing/kaggle/CDLA-Permissive-2.0.pdf"


def test_leftovers_in_a_bucket_are_judged_by_their_heartbeat(gcs):
    directory = f"{BUCKET}/datasets/.gone.incomplete-0123"
    gcs.pipe_file(f"{directory}/{ownership.OWNER_FILE}", json.dumps({"host": "another-host", "pid": 1}).encode())
    gcs.pipe_file(f"{directory}/_work/manifest.jsonl", b"{}\n")
    now = time.time()
    assert ownership.abandoned_reason(gcs, directory, now=now) is None
    assert "has shown no sign of life for 17 minutes" in ownership.abandoned_reason(
        gcs, directory, now=now + ownership.ABANDONED_AFTER_S + 120
    )
    gcs.rm(f"{directory}/{ownership.OWNER_FILE}")  # Left by an older data_prep: judged by its newest object.
    assert ownership.abandoned_reason(gcs, directory, now=now) is None
    assert ownership.abandoned_reason(gcs, directory, now=now + ownership.ABANDONED_AFTER_S + 120)


def test_shard_files_written_by_workers_are_counted_past_the_listing_cache(gcs):
    """The stall check counts shards the workers begin; gcsfs would otherwise answer from its first listing."""
    directory = f"{BUCKET}/counting"
    gcs.pipe(f"{directory}/_work/manifest.jsonl", b"")
    assert progress.count_shard_files(f"gs://{directory}") == 0
    gcs.pipe(f"{directory}/catsdogs-train.tfrecord-00000-of-00001", b"")  # Another client, as a worker is.
    assert progress.count_shard_files(f"gs://{directory}") == 1


@pytest.fixture(scope="module")
def old_and_new_datasets(tmp_path_factory):
    """Two local builds of 8 images, {file name: bytes} each: 3 train shards (the dataset being replaced) and 1."""
    root = tmp_path_factory.mktemp("versions")
    sample_data.write_sample_folder(
        str(root / "raw" / "PetImages"), images_per_class=4, min_side=40, max_side=64, include_broken=False
    )
    versions = []
    for name, num_shards in (("old", 3), ("new", 1)):
        build_folder(root / "raw", root / name, num_shards=num_shards, split="train:100")
        versions.append({n: (root / name / n).read_bytes() for n in os.listdir(root / name)})
    return versions


class InjectedFailure(Exception):
    """The commit stopped here, as a crash or a lost connection would stop it."""


def _failing_at(method, steps, fail_at):
    """`method`, raising InjectedFailure instead at the `fail_at`-th call counted by `steps` (shared by methods)."""

    def failing(*args, **kwargs):
        if next(steps) == fail_at:
            raise InjectedFailure(f"{method.__name__}{args}")
        return method(*args, **kwargs)

    return failing


def _assert_readers_never_see_a_mixed_dataset(files, old, new):
    """What a reader of `files` relies on: a directory holding both markers is one whole version, every shard its
    metadata.json lists present with the bytes recorded; and no marker of the old version is beside a new shard."""
    markers = output.AtomicOutput.MARKERS
    if all(marker in files for marker in markers):
        version = new if files[schema.METADATA_FILE] == new[schema.METADATA_FILE] else old
        assert {marker: files[marker] for marker in markers} == {marker: version[marker] for marker in markers}
        metadata = schema.DatasetMetadata.from_dict(json.loads(files[schema.METADATA_FILE]))
        for split, info in metadata.splits.items():
            shards = [os.path.basename(path) for path in metadata.shard_paths("", split)]
            assert [files.get(shard) for shard in shards] == [version[shard] for shard in shards], split
            assert sum(len(files[shard]) for shard in shards) == info.num_bytes
    if any(name in files for name in set(new) - set(old)):
        assert all(files[marker] == new[marker] for marker in markers if marker in files), "old markers, new shards"


@pytest.mark.slow
def test_a_gs_commit_interrupted_at_any_step_never_shows_readers_a_mixed_dataset(
    gcs, old_and_new_datasets, monkeypatch
):
    """Replaces a 3-shard dataset by a 1-shard one, the commit failing at its first step, then its second, and so
    on until one completes; after each, the target is what a reader would find."""
    old, new = old_and_new_datasets
    for fail_at in itertools.count():
        target = f"{BUCKET}/commits/fail_at_{fail_at}"
        fs, _ = fsspec.core.url_to_fs(f"gs://{target}")  # The file system instance the commit uses.
        for name, data in old.items():
            fs.pipe_file(f"{target}/{name}", data)
        atomic = output.AtomicOutput(f"gs://{target}", overwrite=True)
        for name, data in new.items():
            fs.pipe_file(f"{atomic.temp_path}/{name}", data)
        steps = itertools.count()
        with monkeypatch.context() as patch:
            for method in ("copy", "rm"):  # Every change the commit makes to the bucket.
                patch.setattr(fs, method, _failing_at(getattr(fs, method), steps, fail_at))
            try:
                atomic.commit()
                completed = True
            except InjectedFailure:
                completed = False
        gcs.invalidate_cache()
        files = {path.rsplit("/", 1)[1]: gcs.cat_file(path) for path in gcs.find(target)}
        _assert_readers_never_see_a_mixed_dataset(files, old, new)
        if completed:
            break
    assert files == new
    assert fail_at >= len(new) + 2  # Interrupted at least at every copy, and at the removal of the old dataset.
