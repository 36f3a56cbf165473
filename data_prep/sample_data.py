r"""usage: python -m data_prep.sample_data --output_dir=DIR [--images_per_class=100] [--seed=0]
Writes a small, learnable replica of the cats/dogs download offline, with the usual junk.

  python -m data_prep.sample_data --output_dir=/tmp/kagglecatsanddogs_5340 --images_per_class=200

The folder is laid out as Microsoft's `kagglecatsanddogs_5340.zip` unpacks: `PetImages/Cat`,
`PetImages/Dog`, and two loose files beside `PetImages/` (`CDLA-Permissive-2.0.pdf`,
`readme[1].txt`). Images are random crops of scikit-image's bundled photographs (no
download): the "Cat" class from the cat photo, the "Dog" class from other photos, so a
small CNN can learn them. Like the real download it holds an empty file, a truncated JPEG,
HTML saved as .jpg, a BMP named .jpg, Thumbs.db in both folders, a byte-identical copy, and
images in the formats and modes cameras and the web produce.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from PIL import Image

from data_prep import logs

# What kagglecatsanddogs_5340.zip holds beside PetImages/ (Microsoft's download of the Kaggle cats and dogs).
DOWNLOAD_LOOSE_FILES = {
    "CDLA-Permissive-2.0.pdf": b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n1 0 obj <</Type /Catalog>> endobj\n%%EOF\n",
    "readme[1].txt": b"Thank you for downloading the Dogs vs. Cats dataset.\r\n",
}


def _photos(names: Sequence[str]) -> list[np.ndarray]:
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("scikit-image is needed for sample images: pip install 'imgcls-pipeline[samples]'") from None
    return [getattr(data, name)() for name in names]


def photo_like(rng: np.random.Generator, photo: np.ndarray, width: int, height: int) -> Image.Image:
    """A random crop, rescaled to width x height, randomly flipped and brightened: varied but class-faithful."""
    h, w = photo.shape[:2]
    scale = rng.uniform(0.5, 1.0)
    crop_h, crop_w = int(h * scale), int(w * scale)
    top, left = rng.integers(0, h - crop_h + 1), rng.integers(0, w - crop_w + 1)
    image = Image.fromarray(photo[top : top + crop_h, left : left + crop_w]).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(image).astype(np.float32) * rng.uniform(0.8, 1.2)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def write_sample_folder(
    root: str,
    images_per_class: int = 100,
    seed: int = 0,
    min_side: int = 300,
    max_side: int = 500,
    include_broken: bool = True,
) -> list[str]:
    """Writes `root/Cat/*.jpg` and `root/Dog/*.jpg`; returns the relative paths written."""
    rng = np.random.default_rng(seed)
    sources = {"Cat": _photos(["chelsea"]), "Dog": _photos(["coffee", "astronaut", "rocket"])}
    written = []

    def put(relpath: str, data: bytes) -> None:
        path = os.path.join(root, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        written.append(relpath)

    for class_name, photos in sources.items():
        for i in range(images_per_class):
            width, height = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
            image = photo_like(rng, photos[i % len(photos)], width, height)
            put(f"{class_name}/{i}.jpg", _jpeg(image))
    if include_broken:
        cat = photo_like(rng, sources["Cat"][0], 400, 300)
        put("Cat/666.jpg", b"")
        put("Dog/11702.jpg", _jpeg(photo_like(rng, sources["Dog"][0], 400, 300))[:3000])
        put("Dog/error_page.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>")
        put("Cat/Thumbs.db", b"\xd0\xcf\x11\xe0" + bytes(60))
        put("Dog/Thumbs.db", b"\xd0\xcf\x11\xe0" + bytes(61))
        put("Dog/.DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(40))
        bmp = io.BytesIO()
        cat.save(bmp, format="BMP")
        put("Cat/10073.jpg", bmp.getvalue())  # A BMP with a .jpg name, as in the real download.
        rgba = cat.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
        png = io.BytesIO()
        rgba.save(png, format="PNG")
        put("Cat/transparent.PNG", png.getvalue())
        put("Cat/gray scale ünïcode.jpeg", _jpeg(cat.convert("L")))
        put("Cat/cmyk.jpg", _jpeg(cat.convert("CMYK")))
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise when shown.
        put("Cat/rotated_exif.jpg", _jpeg(cat, exif=exif.tobytes()))
        with open(os.path.join(root, "Cat/0.jpg"), "rb") as f:
            put("Cat/copy of 0.jpg", f.read())
    return written


def write_download_replica(root: str, images_per_class: int = 100, seed: int = 0, **kwargs) -> list[str]:
    """Writes `root` as the download unpacks: `root/PetImages/{Cat,Dog}` (write_sample_folder) and the loose
    files beside it; returns the paths written, relative to `root`."""
    written = [
        f"PetImages/{p}" for p in write_sample_folder(os.path.join(root, "PetImages"), images_per_class, seed, **kwargs)
    ]
    for name, data in DOWNLOAD_LOOSE_FILES.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        written.append(name)
    return written


def main(argv: Sequence[str]) -> None:
    del argv
    f = flags.FLAGS
    written = write_download_replica(f.output_dir, f.images_per_class, f.seed)
    print(f"wrote {len(written)} files to {f.output_dir}")


if __name__ == "__main__":
    # Defined here, not at import: importing modules must not claim flag names.
    flags.DEFINE_string("output_dir", None, "Folder to create: the zip's folder, holding PetImages/.", required=True)
    flags.DEFINE_integer("images_per_class", 100, "Good images per class.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    app.run(main, flags_parser=logs.parse_all_flags)
