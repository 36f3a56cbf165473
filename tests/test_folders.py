"""Layout detection and labelling of raw folders (driver side: names only, nothing decoded)."""
import pytest

from data_prep import folders


def touch(root, *relpaths):
    for relpath in relpaths:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def by_path(listing):
    return {e.relpath: e for e in listing.entries}


def test_class_folders_under_wrapper_with_nested_subfolders(tmp_path):
    touch(tmp_path, "PetImages/Cat/1.jpg", "PetImages/Dog/2.JPG", "PetImages/Dog/sub dir/3 ü.png",
          "PetImages/Cat/Thumbs.db")
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
    touch(tmp_path, "dogs-vs-cats/train/cat.0.jpg", "dogs-vs-cats/train/dog.12.jpg", "dogs-vs-cats/test1/1.jpg",
          "dogs-vs-cats/sampleSubmission.csv")
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
    assert sorted(e.relpath for e in listing.entries) == [".hidden/x.jpg", "Bird/3.jpg", "Cat/1.jpg", "Dog/2.jpg",
                                                          "loose.jpg"]
    entries = by_path(listing)
    assert "not one of the classes" in entries["Bird/3.jpg"].skip
    assert "not inside a class folder" in entries["loose.jpg"].skip
    assert entries[".hidden/x.jpg"].skip == "skipped: hidden file"


@pytest.mark.parametrize("setup,message", [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "contains no files"),
    (lambda root: touch(root, "Bird/1.jpg"), "no image is in a usable place"),
])
def test_unusable_input_gives_clear_error(tmp_path, setup, message):
    root = tmp_path / "in"
    setup(root)
    with pytest.raises(folders.LayoutError, match=message):
        folders.list_input(str(root), "catsdogs")
