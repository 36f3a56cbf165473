"""Decode any supported image file into clean RGB pixels, resize, and re-encode.

Every file is fully decoded (a header that parses proves nothing) and its format is
sniffed from the content, never trusted from the extension. Problems become a
`RejectedImage` with a reason a person can act on, never an exception out of the job.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats PIL may sniff. Anything else (PSD, ICO, PDF ...) is rejected rather than half-supported.
# Camera MPO files (JPEG with extra frames) open through the JPEG plugin.
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
RESIZE_POLICIES = ("shorter_side", "exact", "none")
IMAGE_FORMATS = ("jpeg", "png")
# Our --max_pixels check, made from the header before decoding, replaces PIL's fixed limit.
Image.MAX_IMAGE_PIXELS = None


class RejectedImage(Exception):
    """The file cannot become an example; `str(e)` is the reason written to the report."""


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    image_size: int = 256
    resize_policy: str = "shorter_side"
    image_format: str = "jpeg"
    jpeg_quality: int = 90
    max_pixels: int = 50_000_000
    channels: int = 3

    def __post_init__(self):
        if self.resize_policy not in RESIZE_POLICIES:
            raise ValueError(f"--resize_policy={self.resize_policy}: choose one of {RESIZE_POLICIES}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"--image_format={self.image_format}: choose one of {IMAGE_FORMATS}")
        if self.resize_policy != "none" and self.image_size <= 0:
            raise ValueError(f"--image_size={self.image_size}: must be positive (or use --resize_policy=none)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg_quality={self.jpeg_quality}: must be in 1..100")
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels}: must be 1 or 3")


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB (or L) after orientation, conversion and resize: what gets stored.
    source_format: str
    warning: str | None = None

    @property
    def pixels(self) -> np.ndarray:
        """uint8 HxWxC (a copy: the codec and the statistics work on `image` directly)."""
        pixels = np.asarray(self.image)
        return pixels[:, :, np.newaxis] if pixels.ndim == 2 else pixels


def as_image(pixels: Image.Image | np.ndarray) -> Image.Image:
    """PIL's view of uint8 HxWxC pixels (HxWx1 becomes L)."""
    if isinstance(pixels, Image.Image):
        return pixels
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)


def target_size(width: int, height: int, options: ImageOptions) -> tuple[int, int]:
    """The stored size. shorter_side keeps the aspect ratio and never upscales; exact squashes to a square."""
    n = options.image_size
    if options.resize_policy == "none":
        return width, height
    if options.resize_policy == "exact":
        return n, n
    shorter = min(width, height)
    if shorter <= n:
        return width, height
    scale = n / shorter
    return max(1, round(width * scale)), max(1, round(height * scale))


def _describe_non_image(data: bytes) -> str:
    head = data[:512].lstrip()
    if head[:1] == b"<" or head.lower().startswith((b"<!doctype", b"<html")):
        return "not an image: the content is HTML/XML text"
    try:
        head.decode("utf-8")
        return "not an image: the content is text"
    except UnicodeDecodeError:
        return f"not a recognised image format (first bytes {data[:8].hex()})"


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    """RGB (or L), with transparency composited on white and 16-bit values scaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image).astype(np.uint32)
        top = 65535 if image.mode.startswith("I;16") or array.max() > 255 else 255
        image = Image.fromarray((array * 255 // top).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    target = "RGB" if channels == 3 else "L"
    return image if image.mode == target else image.convert(target)


def _open(data: bytes, options: ImageOptions) -> Image.Image:
    """The image, sniffed from its content and size-checked from its header, not yet decoded."""
    if not data:
        raise RejectedImage("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise RejectedImage(_describe_non_image(data)) from None
    except Exception as e:  # PIL raises assorted errors on broken headers.
        raise RejectedImage(f"truncated or corrupt image header: {e}") from None
    width, height = image.size
    if width * height > options.max_pixels:
        raise RejectedImage(
            f"{width}x{height} = {width * height} pixels exceeds --max_pixels={options.max_pixels} "
            "(decompression-bomb guard; raise --max_pixels to accept it)"
        )
    return image


def check_header(data: bytes, options: ImageOptions) -> None:
    """Raises RejectedImage as `decode` would for a file that is not an accepted image within --max_pixels, from its
    header alone (a smoke build's first pass: cheap next to decoding)."""
    _open(data, options)


def _orient(image: Image.Image) -> str | None:
    """Applies the EXIF orientation in place (no copy of the common unrotated image); a warning if EXIF is malformed,
    which must not cost an otherwise good image."""
    stored_pixels = image.im
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as e:
        # Pillow turns the pixels before it rewrites the EXIF without the orientation, where malformed tags raise.
        if image.im is stored_pixels:
            return f"EXIF orientation unreadable, kept as stored: {e}"
        return f"EXIF malformed, its orientation applied: {e}"
    return None


def decode(data: bytes, options: ImageOptions) -> DecodedImage:
    """Sniffs, size-checks (before decoding), decodes, orients, converts and resizes one file."""
    image = _open(data, options)
    source_format = image.format or "unknown"
    # From the original size: the draft-reduced size below would round to a pixel more or less on some photos.
    size = target_size(*image.size, options)
    try:
        if source_format in ("JPEG", "MPO"):
            # DCT-domain downscaling: decodes at 1/2..1/8 size when the target is that much smaller.
            image.draft(None, size)
        image.load()
    except Exception as e:
        raise RejectedImage(f"truncated or corrupt image data ({source_format}): {e}") from None
    stored_as = image.size
    warning = _orient(image)
    if image.size != stored_as:  # Turned a quarter by its EXIF orientation (target_size commutes with that).
        size = size[::-1]
    image = _to_mode(image, options.channels)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return DecodedImage(image=image, source_format=source_format, warning=warning)


def encode(pixels: Image.Image | np.ndarray, options: ImageOptions) -> bytes:
    """Deterministic encoding: same pixels and options give the same bytes."""
    buffer = io.BytesIO()
    if options.image_format == "jpeg":
        as_image(pixels).save(buffer, format="JPEG", quality=options.jpeg_quality, optimize=False, progressive=False)
    else:
        as_image(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
