"""Find every file of a raw image folder and decide its class, split or skip reason.

Runs in the driver and only lists names (no file is read), so it is cheap even on
object storage. Three layouts are recognised (`--layout=auto` picks one):

- `class_folders`: `[wrapper/]<class>/**/<file>` (Kaggle `PetImages/Cat/1.jpg`);
- `split_folders`: `<split>/<class>/**/<file>` (`cats_and_dogs_small/train/cats/cat.1.jpg`);
- `flat`: `<class>.<anything>` file names, at any depth (Kaggle competition `train/cat.123.jpg`).

Every file found ends up in the manifest: with a label, or with the reason it is skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import posixpath
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures

import apache_beam as beam
import fsspec

from data_prep import examples, images, progress, results, schema, stats, walk
from data_prep.options import LAYOUTS, BuildOptions

SPLIT_FOLDER_NAMES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "test": "test",
    "testing": "test",
}
CATSDOGS_CLASSES = ("cat", "dog")  # Labels 0 and 1, as TFDS cats_vs_dogs.


class LayoutError(ValueError):
    """The input folder cannot be read as asked; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    path: str  # Full path or URL, for reading.
    relpath: str  # Relative to the input root: the record's image/filename.
    label: int | None = None
    split: str | None = None  # Fixed by the layout; None means assigned by content hash.
    skip: str | None = None  # Reason the file is not read.


@dataclasses.dataclass(frozen=True)
class Listing:
    layout: str
    class_names: tuple[str, ...]
    entries: tuple[ManifestEntry, ...]
    num_bytes: int = 0  # Of every file listed (links: their targets').


def _list_files(input_dir: str) -> tuple[fsspec.AbstractFileSystem, str, list[str], dict[str, str], int]:
    """walk.find's answer for `input_dir`, with its file system and root; a LayoutError if it holds no files."""
    fs, root = fsspec.core.url_to_fs(input_dir)
    if not fs.isdir(root):
        raise LayoutError(f"--input_dir={input_dir} does not exist or is not a directory")
    relpaths, special, num_bytes = walk.find(fs, root)
    if not relpaths:
        raise LayoutError(f"--input_dir={input_dir} contains no files")
    return fs, root, relpaths, special, num_bytes


def _unwrap(relpaths: list[str], is_class: Callable[[str], bool]) -> str:
    """The prefix of single wrapper folders (`PetImages/`).

    A level is a wrapper when it holds one folder (junk aside) and that folder holds folders, unless the
    folder is itself a known class. Loose files beside it (the Kaggle zip's licence PDF and readme, a stray
    image) do not stop the descent: they are skipped as outside the data folder.
    """
    prefix = ""
    while True:
        visible = [
            p[len(prefix) :]
            for p in relpaths
            if p.startswith(prefix) and not walk.junk_reason(p[len(prefix) :].split("/")[0])
        ]
        tops = {p.split("/")[0] for p in visible if "/" in p}
        if len(tops) != 1:
            return prefix
        (top,) = tops
        # A single folder of files only is a class (or flat) folder, not a wrapper.
        if is_class(top) or not any(p.startswith(top + "/") and p.count("/") >= 2 for p in visible):
            return prefix
        prefix += top + "/"


def _detect(relpaths: list[str]) -> str:
    tops = {p.split("/")[0] for p in relpaths if "/" in p and not walk.junk_reason(p.split("/")[0])}
    if tops and all(t.lower() in SPLIT_FOLDER_NAMES for t in tops):
        return "split_folders"
    if tops:
        return "class_folders"
    return "flat"


class _ClassMapper:
    """Maps folder names or file-name prefixes to labels."""

    def __init__(self, dataset: str, class_names: Sequence[str] | None, found: Sequence[str]):
        self.dataset = dataset
        self.class_names: tuple[str, ...]
        if dataset == "catsdogs":
            self.class_names = CATSDOGS_CLASSES
        elif class_names:
            self.class_names = tuple(class_names)
        else:
            self.class_names = tuple(sorted({n for n in found if self._is_name(n)}))
        if not self.class_names:
            raise LayoutError(
                "no class folders found: expected <class>/<image> folders (or use --layout/--class_names)"
            )

    @staticmethod
    def _is_name(name: str) -> bool:
        return bool(name) and not walk.junk_reason(name)

    def label(self, name: str) -> int | None:
        if self.dataset == "catsdogs":
            name = _catsdogs_name(name)
        return self.class_names.index(name) if name in self.class_names else None


def _catsdogs_name(name: str) -> str:
    """Cat, cats, CAT, dogs ... as the various cats/dogs downloads spell them."""
    name = name.lower()
    return name[:-1] if name.endswith("s") else name


def _is_known_class(name: str, dataset: str, class_names: Sequence[str] | None) -> bool:
    """Whether a folder name is one of the classes known before listing (catsdogs, or --class_names)."""
    if dataset == "catsdogs":
        return _catsdogs_name(name) in CATSDOGS_CLASSES
    return class_names is not None and name in class_names


def list_input(
    input_dir: str, dataset: str, layout: str = BuildOptions.layout, class_names: Sequence[str] | None = None
) -> Listing:
    """Lists the input and labels every file from its layout; raises LayoutError on unusable input.

    `auto` reads the folders first; if that labels nothing and the classes are known (catsdogs, or
    `class_names`), it falls back to `flat` names at any depth: the Kaggle competition's
    `dogs-vs-cats/train/cat.0.jpg` beside the unlabelled `test1/`.
    """
    if layout not in LAYOUTS:
        raise LayoutError(f"--layout={layout}: choose one of {LAYOUTS}")
    fs, root, relpaths, special, num_bytes = _list_files(input_dir)
    usable = [p for p in relpaths if p not in special]
    prefix = _unwrap(usable, functools.partial(_is_known_class, dataset=dataset, class_names=class_names))
    inner = {p: p[len(prefix) :] for p in relpaths}
    parts = {p: inner[p].split("/") if p.startswith(prefix) else None for p in relpaths}

    def full(relpath: str) -> str:
        return (
            fs.unstrip_protocol(posixpath.join(root, relpath)) if "://" in input_dir else posixpath.join(root, relpath)
        )

    def labelled(layout: str) -> Listing:
        return _label(layout, dataset, class_names, relpaths, parts, prefix, full, special)

    if layout != "auto":
        listing = labelled(layout)
    else:
        listing = labelled(_detect([inner[p] for p in usable if p.startswith(prefix)]))
        if listing.layout != "flat" and _unusable(listing) and (dataset == "catsdogs" or class_names):
            flat = labelled("flat")
            listing = listing if _unusable(flat) else flat
    if _unusable(listing):
        raise LayoutError(
            f"--input_dir={input_dir}: no image is in a usable place for layout {listing.layout!r} "
            f"(classes {list(listing.class_names)}); see --layout and --class_names"
        )
    return dataclasses.replace(listing, num_bytes=num_bytes)


def _unusable(listing: Listing) -> bool:
    return all(e.skip for e in listing.entries)


def _place(layout: str, components: list[str], mapper: _ClassMapper) -> tuple[int | None, str | None, str | None]:
    """(label, fixed split, skip reason) of a file at `components` inside the data folder, under one layout."""
    known = list(mapper.class_names)
    if layout == "flat":
        label = mapper.label(components[-1].split(".")[0])
        return label, None, None if label is not None else f"skipped: file name has no class prefix of {known}"
    if layout == "split_folders":
        if len(components) < 3 or components[0].lower() not in SPLIT_FOLDER_NAMES:
            return None, None, "skipped: not inside <split>/<class>/"
        folder, split = components[1], SPLIT_FOLDER_NAMES[components[0].lower()]
    elif len(components) < 2:
        return None, None, "skipped: not inside a class folder"
    else:
        folder, split = components[0], None
    label = mapper.label(folder)
    return label, split, None if label is not None else f"skipped: folder {folder!r} is not one of the classes {known}"


def _label(
    layout: str,
    dataset: str,
    class_names: Sequence[str] | None,
    relpaths: Sequence[str],
    parts: dict[str, list[str] | None],
    prefix: str,
    full: Callable[[str], str],
    special: dict[str, str],
) -> Listing:
    """Every file's label, fixed split or skip reason under one layout."""
    readable = [c for p, c in parts.items() if c is not None and p not in special]
    if layout == "flat":
        names = [c[-1].split(".")[0] for c in readable]
    elif layout == "split_folders":
        names = [c[1] for c in readable if len(c) > 2]
    else:
        names = [c[0] for c in readable if len(c) > 1]
    mapper = _ClassMapper(dataset, class_names, names)

    entries = []
    for relpath in relpaths:
        skipped = walk.skip_reason(relpath, special)
        components = parts[relpath]
        placed: tuple[int | None, str | None, str | None]
        if skipped:
            placed = None, None, skipped
        elif components is None:
            placed = None, None, f"skipped: outside the data folder {prefix.rstrip('/')}"
        else:
            placed = _place(layout, components, mapper)
        label, split, skip = placed
        entries.append(
            ManifestEntry(
                path=full(relpath),
                relpath=relpath,
                label=None if skip else label,
                split=None if skip else split,
                skip=skip,
            )
        )
    return Listing(layout=layout, class_names=tuple(mapper.class_names), entries=tuple(entries))


@dataclasses.dataclass(frozen=True)
class FileResult:
    """One manifest entry read: an example (perhaps with a warning), its key alone (`hash_file`), or a problem's kind
    and reason."""

    example: examples.Example | None = None
    problem: str | None = None  # results.REJECTED or results.SKIPPED.
    reason: str | None = None  # The problem's reason, or the example's warning.
    key: str | None = None  # Set by hash_file.


@functools.cache
def _filesystem(protocol: str) -> fsspec.AbstractFileSystem:
    """One per protocol and process: `fsspec.open` would resolve it again for every file."""
    return fsspec.filesystem(protocol)


def read_file(entry: ManifestEntry, options: images.ImageOptions) -> FileResult:
    """Reads, decodes and encodes one file; free of Beam calls, so several files can be read at once."""
    if entry.skip or entry.label is None:
        return FileResult(problem=results.SKIPPED, reason=entry.skip)
    try:
        data = _read(entry)
        decoded = images.decode(data, options)
        encoded = images.encode(decoded.image, options)
    except images.RejectedImage as e:
        return FileResult(problem=results.REJECTED, reason=str(e))
    except Exception as e:  # An unreadable file or a decoder bug: list it, keep the job alive.
        return FileResult(problem=results.REJECTED, reason=_could_not(e))
    warnings = [w for w in (decoded.warning, _name_warning(entry.relpath)) if w]
    key = hashlib.sha256(data).hexdigest()
    # The encoder is deterministic, so equal stored bytes mean the same training example: byte-identical files,
    # pixel-identical re-encodes, and anything else that would be stored identically.
    dedupe_key = hashlib.blake2b(encoded, digest_size=16).hexdigest()
    return FileResult(
        example=examples.Example(
            examples.ExampleInfo(
                key=key,
                filename=entry.relpath,
                label=entry.label,
                split=entry.split,
                dedupe_key=dedupe_key,
                num_pixels=decoded.image.width * decoded.image.height,
                moments=stats.channel_moments(decoded.image),
            ),
            schema.serialize_example(image=encoded, filename=entry.relpath, key=key, label=entry.label),
        ),
        reason="; ".join(warnings) or None,
    )


def hash_file(entry: ManifestEntry, options: images.ImageOptions) -> FileResult:
    """Reads one file for its key (a smoke build's first read), or says why it is skipped or rejected: from its
    header alone, so truncated image data is found only when the file is decoded."""
    if entry.skip or entry.label is None:
        return FileResult(problem=results.SKIPPED, reason=entry.skip)
    try:
        data = _read(entry)
        images.check_header(data, options)
    except images.RejectedImage as e:
        return FileResult(problem=results.REJECTED, reason=str(e))
    except Exception as e:
        return FileResult(problem=results.REJECTED, reason=_could_not(e))
    return FileResult(key=hashlib.sha256(data).hexdigest())


def _read(entry: ManifestEntry) -> bytes:
    return _filesystem(fsspec.utils.get_protocol(entry.path)).cat_file(entry.path)


def _could_not(error: Exception) -> str:
    return f"could not process: {type(error).__name__}: {error}"


def _name_warning(relpath: str) -> str | None:
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"file name is not valid UTF-8: {schema.FILENAME} holds its original bytes "
            f"({relpath.encode('utf-8', 'surrogateescape')!r})"
        )
    return None


class ProcessFiles(beam.DoFn):
    """A batch of manifest entries in, each through `read` (read_file, or hash_file); Examples (or, from hash_file,
    (entry, key) pairs) and rejected/skipped/warning result lines out. Never raises on bad files.

    The files of a batch are read on `threads` threads: Pillow releases the GIL while it decodes and resizes,
    so one worker process keeps a few cores busy (the local in-process runner has only one process). `seen`:
    count the files as seen and done (False when a first pass over every file counted them).
    """

    def __init__(self, read: Callable[[ManifestEntry], FileResult], work_dir: str, threads: int = 1, seen: bool = True):
        self._read = read
        self._work_dir = work_dir
        self._threads = threads
        self._seen = seen

    def setup(self):
        self._progress = progress.Progress(self._work_dir)
        self._pool = futures.ThreadPoolExecutor(self._threads) if self._threads > 1 else None
        self._counters = {
            kind: beam.metrics.Metrics.counter(results.METRICS_NAMESPACE, kind)
            for kind in ("files_seen", results.REJECTED, results.SKIPPED)
        }

    def process(self, entries: list[ManifestEntry]):
        read = self._pool.map(self._read, entries) if self._pool else map(self._read, entries)
        for entry, result in zip(entries, read, strict=True):
            if self._seen:
                self._progress.add()
                self._counters["files_seen"].inc()
            if result.problem:
                self._counters[result.problem].inc()
                yield beam.pvalue.TaggedOutput(
                    result.problem, results.result(result.problem, path=entry.relpath, reason=result.reason)
                )
                continue
            if result.reason:
                yield beam.pvalue.TaggedOutput(
                    results.WARNING, results.result(results.WARNING, path=entry.relpath, reason=result.reason)
                )
            yield (entry, result.key) if result.example is None else result.example

    def finish_bundle(self):
        self._progress.flush()

    def teardown(self):
        if self._pool:
            self._pool.shutdown()

    def with_problems(self) -> beam.ParDo:
        """This DoFn as a ParDo whose main output is "files", beside its tagged problem outputs."""
        return beam.ParDo(self).with_outputs(results.REJECTED, results.SKIPPED, results.WARNING, main="files")


def problems(processed) -> list[beam.PCollection]:
    """The problem outputs of `ProcessFiles.with_problems`."""
    return [processed[results.REJECTED], processed[results.SKIPPED], processed[results.WARNING]]


def read_lines(path: str) -> Iterable[str]:
    """Lines of a text file (local or any fsspec URL), streamed: Beam's text IO would need its own GCS client."""
    with fsspec.open(path, "r") as f:
        for line in f:
            yield line.rstrip("\n")


def write_manifest(listing: Listing, path: str) -> None:
    with fsspec.open(path, "w", auto_mkdir=True) as f:
        for entry in listing.entries:
            f.write(json.dumps(dataclasses.asdict(entry), sort_keys=True) + "\n")


FILES_PER_BATCH = 64  # Keeps a worker's decode threads busy; small enough to spread over many workers.


def read_batches(path: str, size: int) -> Iterable[list[ManifestEntry]]:
    """The manifest's entries in consecutive batches of `size`."""
    batch = []
    for line in read_lines(path):
        batch.append(ManifestEntry(**json.loads(line)))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class ManifestBatches(beam.PTransform):
    """The manifest's entries in batches, spread over workers."""

    def __init__(self, manifest_path: str):
        super().__init__()
        self._manifest_path = manifest_path

    def expand(self, pbegin):
        return (
            pbegin
            | "Manifest" >> beam.Create([self._manifest_path])
            | "ReadManifest" >> beam.FlatMap(read_batches, FILES_PER_BATCH)
            | "Spread" >> beam.Reshuffle()
        )


class ReadFolder(beam.PTransform):
    """The manifest's entries decoded; (examples, [problem result lines]) out."""

    def __init__(self, manifest_path: str, options: images.ImageOptions, work_dir: str, threads: int = 1):
        super().__init__()
        self._manifest_path = manifest_path
        self._options = options
        self._work_dir = work_dir
        self._threads = threads

    def expand(self, pbegin):
        read = functools.partial(read_file, options=self._options)
        decoded = (
            pbegin
            | "Batches" >> ManifestBatches(self._manifest_path)
            | "Decode" >> ProcessFiles(read, self._work_dir, self._threads).with_problems()
        )
        return decoded.files, *problems(decoded)
