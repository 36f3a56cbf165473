"""Layout detection and labelling of raw folders (driver side: names only, nothing decoded)."""

import os
import socket
import subprocess
import sys

import pytest

from data_prep import folders, walk


def touch(root, *relpaths):
    for relpath in relpaths:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def by_path(listing):
    return {e.relpath: e for e in listing.entries}


def test_class_folders_under_wrapper_with_nested_subfolders(tmp_path):
    touch(
        tmp_path,
        "PetImages/Cat/1.jpg",
        "PetImages/Dog/2.JPG",
        "PetImages/Dog/sub dir/3 ü.png",
        "PetImages/Cat/Thumbs.db",
    )
    listing = folders.list_input(str(tmp_path), "catsdogs")
    entries = by_path(listing)
    assert listing.layout == "class_folders"
    assert listing.class_names == ("cat", "dog")
    assert entries["PetImages/Cat/1.jpg"].label == 0
    assert entries["PetImages/Dog/2.JPG"].label == 1
    assert entries["PetImages/Dog/sub dir/3 ü.png"].label == 1
    assert "thumbnail" in entries["PetImages/Cat/Thumbs.db"].skip
    assert all(e.split is None for e in listing.entries)


def test_split_folders_keep_their_splits(tmp_path):
    touch(tmp_path, "train/cats/cat.1.jpg", "train/dogs/dog.1.jpg", "validation/cats/cat.2.jpg", "test/dogs/dog.3.jpg")
    listing = folders.list_input(str(tmp_path), "catsdogs")
    entries = by_path(listing)
    assert listing.layout == "split_folders"
    assert (entries["train/cats/cat.1.jpg"].split, entries["train/cats/cat.1.jpg"].label) == ("train", 0)
    assert (entries["test/dogs/dog.3.jpg"].split, entries["test/dogs/dog.3.jpg"].label) == ("test", 1)
    assert entries["validation/cats/cat.2.jpg"].split == "validation"


def test_flat_kaggle_layout_labels_from_prefix(tmp_path):
    touch(tmp_path, "train/cat.0.jpg", "train/dog.12.jpg", "train/readme.txt")
    listing = folders.list_input(str(tmp_path / "train"), "catsdogs")
    entries = by_path(listing)
    assert listing.layout == "flat"
    assert entries["cat.0.jpg"].label == 0 and entries["dog.12.jpg"].label == 1
    assert "no class prefix" in entries["readme.txt"].skip


def test_kaggle_competition_folder_falls_back_to_file_name_prefixes(tmp_path):
    touch(
        tmp_path,
        "dogs-vs-cats/train/cat.0.jpg",
        "dogs-vs-cats/train/dog.12.jpg",
        "dogs-vs-cats/test1/1.jpg",
        "dogs-vs-cats/sampleSubmission.csv",
    )
    for dataset, class_names in (("catsdogs", None), ("imagefolder", ["cat", "dog"])):
        listing = folders.list_input(str(tmp_path), dataset, class_names=class_names)
        entries = by_path(listing)
        assert listing.layout == "flat"
        assert entries["dogs-vs-cats/train/cat.0.jpg"].label == 0
        assert entries["dogs-vs-cats/train/dog.12.jpg"].label == 1
        assert "no class prefix" in entries["dogs-vs-cats/test1/1.jpg"].skip
        assert "no class prefix" in entries["dogs-vs-cats/sampleSubmission.csv"].skip
        assert all(e.split is None for e in listing.entries)  # train/ holds every labelled image: hash splits.
    # Without known classes the folders are the classes, as imagefolder promises.
    assert folders.list_input(str(tmp_path), "imagefolder").layout == "class_folders"


def test_imagefolder_classes_sorted_or_given(tmp_path):
    touch(tmp_path, "tulips/a.jpg", "roses/b.jpg", "daisy/c.jpg")
    assert folders.list_input(str(tmp_path), "imagefolder").class_names == ("daisy", "roses", "tulips")
    listing = folders.list_input(str(tmp_path), "imagefolder", class_names=["tulips", "roses"])
    entries = by_path(listing)
    assert entries["tulips/a.jpg"].label == 0 and entries["roses/b.jpg"].label == 1
    assert "not one of the classes" in entries["daisy/c.jpg"].skip


def test_layout_override(tmp_path):
    touch(tmp_path, "train/a.jpg", "test/b.jpg")  # Looks pre-split, but the user says these are classes.
    listing = folders.list_input(str(tmp_path), "imagefolder", layout="class_folders")
    assert listing.class_names == ("test", "train")


def test_every_file_is_listed_once(tmp_path):
    touch(tmp_path, "Cat/1.jpg", "Dog/2.jpg", "Bird/3.jpg", "loose.jpg", ".hidden/x.jpg")
    listing = folders.list_input(str(tmp_path), "catsdogs")
    assert sorted(e.relpath for e in listing.entries) == [
        ".hidden/x.jpg",
        "Bird/3.jpg",
        "Cat/1.jpg",
        "Dog/2.jpg",
        "loose.jpg",
    ]
    entries = by_path(listing)
    assert "not one of the classes" in entries["Bird/3.jpg"].skip
    assert "not inside a class folder" in entries["loose.jpg"].skip
    assert entries[".hidden/x.jpg"].skip == "skipped: hidden file"


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "contains no files"),
        (lambda root: touch(root, "Bird/1.jpg"), "no image is in a usable place"),
    ],
)
def test_unusable_input_gives_clear_error(tmp_path, setup, message):
    root = tmp_path / "in"
    setup(root)
    with pytest.raises(folders.LayoutError, match=message):
        folders.list_input(str(root), "catsdogs")


OUTSIDE = "skipped: outside the data folder"


def test_download_as_unpacked_skips_the_loose_files_beside_petimages(tmp_path):
    touch(
        tmp_path,
        "CDLA-Permissive-2.0.pdf",
        "readme[1].txt",
        "PetImages/Cat/1.jpg",
        "PetImages/Dog/2.jpg",
        "PetImages/Cat/Thumbs.db",
        "PetImages/Dog/Thumbs.db",
    )
    listing = folders.list_input(str(tmp_path), "catsdogs")
    entries = by_path(listing)
    assert listing.layout == "class_folders"
    assert entries["PetImages/Cat/1.jpg"].label == 0 and entries["PetImages/Dog/2.jpg"].label == 1
    for loose in ("CDLA-Permissive-2.0.pdf", "readme[1].txt"):
        assert entries[loose].skip == f"{OUTSIDE} PetImages" and entries[loose].label is None
    assert len(listing.entries) == 6


@pytest.mark.parametrize(
    "dataset,class_names", [("catsdogs", None), ("imagefolder", None), ("imagefolder", ["cat", "dog"])]
)
def test_loose_files_at_every_wrapper_level_and_inside_it(tmp_path, dataset, class_names):
    touch(
        tmp_path,
        "LICENSE",
        "stray.jpg",
        "data/manifest.json",
        "data/PetImages/readme.txt",
        "data/PetImages/cat/1.jpg",
        "data/PetImages/dog/2.jpg",
    )
    entries = by_path(folders.list_input(str(tmp_path), dataset, class_names=class_names))
    assert entries["data/PetImages/cat/1.jpg"].label == 0 and entries["data/PetImages/dog/2.jpg"].label == 1
    for loose in ("LICENSE", "stray.jpg", "data/manifest.json"):
        assert entries[loose].skip == f"{OUTSIDE} data/PetImages"
    assert entries["data/PetImages/readme.txt"].skip == "skipped: not inside a class folder"


def test_a_lone_known_class_folder_with_sub_folders_is_a_class_not_a_wrapper(tmp_path):
    touch(tmp_path, "notes.txt", "Cat/indoor/1.jpg", "Cat/outdoor/2.jpg")
    entries = by_path(folders.list_input(str(tmp_path), "catsdogs"))
    assert entries["Cat/indoor/1.jpg"].label == 0 and entries["Cat/outdoor/2.jpg"].label == 0
    assert entries["notes.txt"].skip == "skipped: not inside a class folder"


def test_files_that_are_not_regular_are_skipped_unopened_and_links_to_files_followed(tmp_path, monkeypatch):
    touch(tmp_path, "PetImages/Cat/1.jpg", "PetImages/Dog/2.jpg")
    dog = tmp_path / "PetImages" / "Dog"
    os.mkfifo(dog / "fifo.jpg")
    with socket.socket(socket.AF_UNIX) as unix_socket:
        monkeypatch.chdir(dog)  # A socket's path is limited to ~100 bytes.
        unix_socket.bind("socket.jpg")
        (dog / "loop").symlink_to("..")
        (dog / "broken.jpg").symlink_to("nowhere.jpg")
        (dog / "link.jpg").symlink_to("../Cat/1.jpg")
        latin1 = os.fsdecode(b"PetImages/Cat/caf\xe9.jpg")
        (tmp_path / latin1).write_bytes(b"x")
        entries = by_path(folders.list_input(str(tmp_path), "catsdogs"))
    assert entries["PetImages/Dog/fifo.jpg"].skip == "skipped: named pipe (FIFO), not a regular file (not opened)"
    assert entries["PetImages/Dog/socket.jpg"].skip == "skipped: socket, not a regular file (not opened)"
    assert entries["PetImages/Dog/loop"].skip == "skipped: link to a folder (not followed)"
    assert entries["PetImages/Dog/broken.jpg"].skip == "skipped: broken link (its target does not exist)"
    assert entries["PetImages/Dog/link.jpg"].skip is None and entries["PetImages/Dog/link.jpg"].label == 1
    assert entries[latin1].skip is None and entries[latin1].label == 0
    assert len(entries) == 8


def test_junk_reasons():
    assert "thumbnail" in walk.junk_reason("Thumbs.db")
    assert "macOS" in walk.junk_reason(".DS_Store")
    assert walk.junk_reason(".hidden.jpg") == "skipped: hidden file"
    assert walk.junk_reason("cat.1.JPG") is None
    assert walk.path_junk_reason("Cat/.thumbnails/1.jpg") == "skipped: hidden file"
    assert walk.path_junk_reason("Cat/sub/1.jpg") is None


def test_the_folder_walk_imports_neither_beam_nor_tensorflow_nor_pillow():
    """trainer.predict walks folders with it."""
    code = "import sys; import data_prep.walk; print(sorted({'apache_beam', 'tensorflow', 'PIL'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
