"""Decoding every kind of file a raw image folder holds, and rejecting the bad ones with a reason."""

import io

import numpy as np
import pytest
from conftest import jpeg_with_malformed_exif
from PIL import Image

from data_prep import images

OPTIONS = images.ImageOptions(image_size=32)


def gradient(width=60, height=40, mode="RGB"):
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, 255 - x], axis=-1)
    return Image.fromarray(rgb).convert(mode)


def save(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name,data",
    [
        ("jpeg_jfif", save(gradient(), "JPEG")),
        ("jpeg_exif", save(gradient(), "JPEG", exif=Image.Exif().tobytes())),
        ("jpeg_progressive", save(gradient(), "JPEG", progressive=True)),
        ("jpeg_grayscale", save(gradient(mode="L"), "JPEG")),
        ("jpeg_cmyk", save(gradient(mode="CMYK"), "JPEG")),
        ("png_rgba", save(gradient(mode="RGBA"), "PNG")),
        ("png_palette", save(gradient(mode="P"), "PNG")),
        ("png_16bit", save(Image.fromarray((np.arange(2400).reshape(40, 60) * 27).astype(np.uint16)), "PNG")),
        ("gif", save(gradient(mode="P"), "GIF")),
        ("bmp", save(gradient(), "BMP")),
        ("webp", save(gradient(), "WEBP")),
    ],
)
def test_decodes_supported_formats_to_rgb_of_target_size(name, data):
    decoded = images.decode(data, OPTIONS)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.shape == (32, 48, 3)  # Shorter side 40 -> 32, aspect kept.
    assert decoded.pixels.std() > 10, "the image content must survive decoding"


def test_sixteen_bit_png_is_scaled_not_clipped():
    values = np.full((40, 60), 65535 // 2, dtype=np.uint16)
    decoded = images.decode(save(Image.fromarray(values), "PNG"), images.ImageOptions(resize_policy="none"))
    assert abs(int(decoded.pixels[0, 0, 0]) - 127) <= 1


def test_transparency_is_composited_on_white():
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    decoded = images.decode(save(image, "PNG"), images.ImageOptions(resize_policy="none"))
    assert decoded.pixels[0, 0].tolist() == [255, 255, 255]


def test_gif_uses_first_frame():
    frames = [Image.new("RGB", (40, 40), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = images.decode(buffer.getvalue(), images.ImageOptions(resize_policy="none"))
    assert decoded.pixels[0, 0, 0] > 200 and decoded.pixels[0, 0, 2] < 50


def test_exif_orientation_is_applied():
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:16, :16] = (255, 0, 0)  # A red block at the stored top-left ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... and "rotate 90 degrees clockwise for display".
    data = save(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    pixels = images.decode(data, images.ImageOptions(resize_policy="none")).pixels.astype(int)
    assert pixels.shape == (60, 40, 3)
    top_right, top_left = pixels[2:14, -14:-2].mean((0, 1)), pixels[2:14, 2:14].mean((0, 1))
    assert top_right[0] > 200 and top_right[1:].max() < 60  # Displayed top-right, as a viewer shows it.
    assert top_left.max() < 60


def test_malformed_exif_keeps_the_image_and_says_whether_it_was_turned(monkeypatch):
    options = images.ImageOptions(resize_policy="none")
    decoded = images.decode(jpeg_with_malformed_exif((48, 40)), options)
    assert decoded.image.size == (40, 48)  # Pillow applied the orientation before failing on the Artist tag.
    assert decoded.warning.startswith("EXIF malformed, its orientation applied: ")

    def unreadable(self):
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(Image.Image, "getexif", unreadable)  # Fails before Pillow turns anything.
    decoded = images.decode(jpeg_with_malformed_exif((48, 40)), options)
    assert decoded.image.size == (48, 40)
    assert decoded.warning == "EXIF orientation unreadable, kept as stored: not a TIFF file"


def test_format_is_sniffed_not_taken_from_extension():
    decoded = images.decode(save(gradient(), "PNG"), OPTIONS)  # Callers never pass the name: content decides.
    assert decoded.source_format == "PNG"


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"<!DOCTYPE html><html>Not found</html>", "HTML"),
        (b"just some text that someone saved as cat.jpg\n", "text"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "not a recognised image format"),
        (save(gradient(300, 200), "JPEG")[:400], "truncated or corrupt"),
        (save(gradient(300, 200), "PNG")[:200], "truncated or corrupt"),
    ],
)
def test_bad_files_are_rejected_with_reason(data, reason):
    with pytest.raises(images.RejectedImage, match=reason):
        images.decode(data, OPTIONS)


def test_decompression_bomb_rejected_from_header_before_decoding():
    bomb = save(Image.new("1", (20000, 20000)), "PNG")  # 400 Mpx in a few tens of kB.
    assert len(bomb) < 200_000
    with pytest.raises(images.RejectedImage, match="exceeds --max_pixels=50000000"):
        images.decode(bomb, images.ImageOptions())


def test_twelve_megapixel_photo_passes():
    photo = gradient(4000, 3000)
    decoded = images.decode(save(photo, "JPEG"), images.ImageOptions(image_size=256))
    assert decoded.pixels.shape == (256, 341, 3)


@pytest.mark.parametrize("orientation", [1, 6])
def test_stored_size_comes_from_the_original_size_not_the_draft_reduced_one(orientation):
    # JPEG draft mode decodes 914x1201 at 1/2 scale, 457x601, whose shorter side scaled to 256 gives a long side
    # of 337; the original's is 336.
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = save(gradient(914, 1201), "JPEG", exif=exif.tobytes())
    decoded = images.decode(data, images.ImageOptions(image_size=256))
    assert decoded.image.size == ((256, 336) if orientation == 1 else (336, 256))


@pytest.mark.parametrize(
    "policy,size,expected",
    [
        ("shorter_side", 32, (48, 32)),
        ("shorter_side", 100, (60, 40)),  # Never upscales.
        ("exact", 32, (32, 32)),
        ("none", 32, (60, 40)),
    ],
)
def test_target_size_policy(policy, size, expected):
    assert images.target_size(60, 40, images.ImageOptions(image_size=size, resize_policy=policy)) == expected


def test_encoding_is_deterministic_and_lossless_for_png():
    pixels = np.asarray(gradient())
    jpeg_options = images.ImageOptions(image_format="jpeg")
    assert images.encode(pixels, jpeg_options) == images.encode(pixels.copy(), jpeg_options)
    png = images.encode(pixels, images.ImageOptions(image_format="png"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), pixels)


def test_jpeg_quality_reaches_the_encoder():
    pixels = np.asarray(gradient(120, 80)).copy()
    pixels[::2, ::3] = 0  # Detail that a low quality loses.
    errors, sizes = [], []
    for quality in (10, 95):
        data = images.encode(pixels, images.ImageOptions(jpeg_quality=quality))
        sizes.append(len(data))
        errors.append(np.abs(np.asarray(Image.open(io.BytesIO(data))).astype(int) - pixels).mean())
    assert sizes[0] < sizes[1] / 2 and errors[0] > 2 * errors[1]


@pytest.mark.parametrize(
    "kwargs,flag",
    [
        ({"resize_policy": "crop"}, "--resize_policy"),
        ({"image_format": "gif"}, "--image_format"),
        ({"image_size": 0}, "--image_size"),
        ({"jpeg_quality": 101}, "--jpeg_quality"),
    ],
)
def test_invalid_options_name_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        images.ImageOptions(**kwargs)
