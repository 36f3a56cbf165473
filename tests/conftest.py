"""Shared fixtures: small generated raw folders and datasets built from them."""

import contextlib
import io
import logging
import os
import platform
import socket
import struct
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# For the local GCS emulator (tests/test_gcs.py); read when fsspec and gcsfs are imported, so set first.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("FSSPEC_GCS_TOKEN", "anon")

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from data_prep import driver, images, options, sample_data, schema  # noqa: E402

# In-process runner: a test build of a few dozen images is dominated by worker start-up otherwise.
FAST_BEAM_ARGS = ("--runner=FnApiRunner", "--direct_running_mode=in_memory")
SMALL_IMAGES = images.ImageOptions(image_size=64)
NO_AUGMENTATION = schema.AugmentationPolicy()


def pytest_report_header(config):
    """What this run tested on: oneDNN's mode and the CPU's matrix units differ between machines."""
    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    found = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if flag in flags] or ["none of avx512f/bf16/amx"]
    return (
        f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (TensorFlow decides by CPU)')}; "
        f"machine {platform.machine()}; CPU flags: {', '.join(found)}"
    )


def build_folder(
    input_dir,
    output_dir,
    dataset="catsdogs",
    beam_args=FAST_BEAM_ARGS,
    layout="auto",
    class_names=None,
    split="train:80,validation:10,test:10",
    image_options=SMALL_IMAGES,
    threads=1,
    **common,
):
    """A data_prep folder build with test-friendly defaults (small images, in-process runner, one decode thread);
    returns its report, whose lists are checked against its counts."""
    report = driver.build(
        options.BuildOptions(
            dataset=dataset,
            output_dir=str(output_dir),
            input_dir=str(input_dir),
            beam_args=tuple(beam_args),
            layout=layout,
            class_names=tuple(class_names) if class_names else None,
            split=split,
            image=image_options,
            decode_threads=threads,
            **common,
        )
    )
    assert_report_lists_match_counts(report)
    return report


def assert_report_lists_match_counts(report):
    """Each list of a build report names every file its count counts, once; no file is listed under two kinds,
    and a warning is about a written file (one the lists do not name), once."""
    counts, listed = report["counts"], []
    for kind in ("rejected", "duplicates", "skipped", "not_selected"):
        paths = [item["path"] for item in report[kind]]
        assert len(paths) == counts[kind] == len(set(paths)), (kind, paths)
        listed += paths
    assert len(listed) == len(set(listed)), f"a file listed under two kinds: {listed}"
    assert counts["files_seen"] == counts["written"] + len(listed)
    warned = [item["path"] for item in report["warnings"]]
    assert len(warned) == len(set(warned)) and not set(warned) & set(listed), warned


@pytest.fixture(autouse=True)
def float32_after_each_test():
    """Every test starts from Keras's float32 policy: `train.run` sets the global policy from the config, and
    `--mixed_precision=auto` picks mixed_bfloat16 on CPUs with AMX, which would leak into the next test in the
    process."""
    yield
    if "keras" in sys.modules:  # Tests that never imported Keras need no reset (and no Keras import).
        sys.modules["keras"].config.set_dtype_policy("float32")


@pytest.fixture(autouse=True)
def absl_logger_level_after_each_test():
    """Every test starts from the absl logger's level as the process had it: parsing flags in process (the commands'
    tests) sets it from --verbosity (WARNING), which would hide the INFO lines a later test in the process checks."""
    logger = logging.getLogger("absl")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def beam_counters_agree_with_reports(caplog):
    """Every in-process build cross-checks Beam's counters against its report (driver.check_counters);
    a disagreement it logs fails the test that built."""
    yield
    logged = [r.getMessage() for when in ("setup", "call") for r in caplog.get_records(when)]
    assert not [m for m in logged if m.startswith("Beam counters") and "differ" in m]


def dataset_metadata(
    class_names,
    *,
    channels=3,
    image_format="png",
    splits=None,
    statistics=None,
    policy=NO_AUGMENTATION,
    name="toy",
):
    """The metadata of a dataset written by a test (or of none at all: what export needs), through the contract."""
    return schema.DatasetMetadata(
        dataset=name,
        class_names=tuple(class_names),
        image=schema.ImageSpec(
            format=image_format, channels=channels, resize_policy="exact", image_size=0, jpeg_quality=90
        ),
        splits=splits or {},
        augmentation=policy,
        statistics=statistics,
        source={"kind": "test"},
        build=schema.BuildSettings(augment_copies=0, seed=0, max_pixels=0),
    )


def jpeg_with_malformed_exif(size=(48, 40)):
    """A JPEG of `size` whose EXIF orientation (6: turn a quarter clockwise) Pillow reads and applies, but whose
    Artist tag holds a RATIONAL instead of text, so rewriting the EXIF without the orientation raises in Pillow."""
    entries = [(0x0112, 3, 1, 6), (0x013B, 5, 1, 8 + 2 + 2 * 12 + 4)]  # (tag, type, count, value or offset)
    tiff = (
        b"II*\x00"
        + struct.pack("<IH", 8, len(entries))
        + b"".join(struct.pack("<HHII", *entry) for entry in entries)
        + struct.pack("<I", 0)
        + struct.pack("<II", 1, 2)
    )  # Next IFD: none; then the RATIONAL 1/2 the Artist tag points at.
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, format="JPEG", exif=b"Exif\x00\x00" + tiff)
    return buffer.getvalue()


def free_ports(count):
    """Ports free on localhost now (for TF_CONFIG workers and local servers)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory):
    """The PetImages folder of a replica of the download as it unpacks (the licence PDF and readme beside it):
    30 good images per class plus the usual broken and junk files. Builds read its parent, as users do."""
    root = tmp_path_factory.mktemp("raw")
    sample_data.write_download_replica(str(root), images_per_class=30, min_side=120, max_side=200)
    return root / "PetImages"


@pytest.fixture(scope="session")
def sample_dataset(sample_folder, tmp_path_factory):
    """The sample folder built once with default splits; returns (dataset_dir, report)."""
    out = tmp_path_factory.mktemp("built") / "catsdogs"
    report = build_folder(sample_folder.parent, out)
    return out, report


@contextlib.contextmanager
def root_logger(*handlers, level=logging.WARNING):
    """The root logger with only `handlers` and `level` (none and WARNING: as a fresh notebook kernel has it) while
    it lasts; pytest's own capture handlers are put back before the test ends, which a monkeypatch would not do."""
    saved, saved_level = logging.root.handlers, logging.root.level
    logging.root.handlers = list(handlers)
    logging.root.setLevel(level)
    try:
        yield
    finally:
        logging.root.handlers = saved
        logging.root.setLevel(saved_level)
