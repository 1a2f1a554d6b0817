"""Thumbnails of JPEG, PNG, GIF and WebP images, refusing decompression bombs before decoding.

A size is `WxH` (crop to fill exactly, centred), `Wx0` or `0xH` (one side
fixed, aspect kept) or `WxHf` (fit inside, aspect kept). A thumbnail is never
larger than its source: a crop keeps the asked-for aspect ratio at a smaller
size instead. `make_thumbnail` is CPU-bound; callers run it in a thread.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Final

from PIL import ExifTags, Image, ImageOps

from backpack.errors import BackpackError, BadRequest, UnsupportedMediaType
from backpack.files.sniff import SNIFF_BYTES, sniff_type

MAX_THUMB_SIDE: Final = 2000
MAX_SOURCE_PIXELS: Final = 50_000_000
"""The largest image, in pixels, that a thumbnail is made of (an 8160 x 6120 photo fits)."""

THUMB_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# Pillow refuses twice this and warns above it; the header check below refuses
# anything above it before Pillow sees the data, so the warning never fires.
Image.MAX_IMAGE_PIXELS = MAX_SOURCE_PIXELS

_LABELS: Final = {"JPEG": "JPEG", "PNG": "PNG", "GIF": "GIF", "WEBP": "WebP"}
_PILLOW_FORMATS: Final = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
}
# A still thumbnail of a GIF is its first frame, kept as PNG for its full colour.
_OUTPUT: Final = {"JPEG": "JPEG", "PNG": "PNG", "GIF": "PNG", "WEBP": "WEBP"}
_OUTPUT_TYPES: Final = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_OUTPUT_MODES: Final = {
    "JPEG": {"L": "L", "LA": "L", "RGB": "RGB", "RGBA": "RGB"},
    "PNG": {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA"},
    "WEBP": {"L": "RGB", "LA": "RGBA", "RGB": "RGB", "RGBA": "RGBA"},
}
_SAVE_OPTIONS: Final[dict[str, dict[str, int]]] = {
    "JPEG": {"quality": 85},
    "PNG": {},
    "WEBP": {"quality": 80},
}
# Modes whose ICC profile no longer describes the pixels once converted to RGB.
_FOREIGN_COLOUR_MODES: Final = frozenset({"CMYK", "YCbCr", "LAB", "HSV"})
_SPEC: Final = re.compile(r"([0-9]{1,6})x([0-9]{1,6})(f?)")
_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class ThumbSpec:
    width: int
    height: int
    fit: bool

    @property
    def name(self) -> str:
        """A canonical name, usable as a cache file name: `thumb-200x100f`."""
        return f"thumb-{self.width}x{self.height}{'f' if self.fit else ''}"


def parse_thumb(text: str) -> ThumbSpec:
    """`WxH`, `Wx0`, `0xH` or `WxHf`, each side at most `MAX_THUMB_SIDE` pixels."""
    match = _SPEC.fullmatch(text)
    if match is None:
        raise BadRequest(
            f"The thumbnail size '{text[:40]}' is not valid: use WxH to crop, WxHf to fit, "
            "or Wx0 / 0xH to keep the aspect ratio, for example 200x100.",
            {"thumb": text[:40]},
        )
    width, height, fit = int(match[1]), int(match[2]), match[3] == "f"
    if width > MAX_THUMB_SIDE or height > MAX_THUMB_SIDE:
        raise BadRequest(
            f"The thumbnail size {text} is too large: each side can be at most "
            f"{MAX_THUMB_SIDE} pixels.",
            {"thumb": text, "max_side": MAX_THUMB_SIDE},
        )
    if width == 0 and height == 0:
        raise BadRequest(
            "The thumbnail size 0x0 is not valid: give a width, a height or both.",
            {"thumb": text},
        )
    if fit and (width == 0 or height == 0):
        raise BadRequest(
            f"The thumbnail size {text} is not valid: fitting (f) needs both a width and a height.",
            {"thumb": text},
        )
    return ThumbSpec(width, height, fit)


def make_thumbnail(data: bytes, mime: str, spec: ThumbSpec) -> tuple[bytes, str]:
    """The thumbnail's bytes and MIME type: same format as the source, a GIF's as PNG."""
    mime = mime.split(";", 1)[0].strip().lower()
    source_format = _PILLOW_FORMATS.get(mime)
    if source_format is None:
        raise UnsupportedMediaType(
            f"Thumbnails are made of JPEG, PNG, GIF and WebP images, not {mime or 'this file'}.",
            {"type": mime},
        )
    if sniff_type(data[:SNIFF_BYTES]) != mime:
        raise UnsupportedMediaType(
            f"The file's content is not a {_LABELS[source_format]} image.", {"type": mime}
        )
    declared = _declared_size(data, source_format)
    if declared is not None:
        _check_pixels(declared)
    try:
        return _render(data, source_format, spec)
    except BackpackError:
        raise
    except Image.DecompressionBombError as err:
        raise BadRequest(
            "The image is too large to make a thumbnail of.", {"max_pixels": MAX_SOURCE_PIXELS}
        ) from err
    except Exception as err:
        # Pillow's decoders fail on hostile or cut input with OSError, SyntaxError,
        # ValueError, struct.error, IndexError and more: all mean the same to a caller.
        raise BadRequest(
            f"The {_LABELS[source_format]} image is corrupt or truncated; "
            "no thumbnail can be made of it."
        ) from err


def _check_pixels(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_SOURCE_PIXELS:
        raise BadRequest(
            f"The image is {width}x{height} pixels; thumbnails are made only of images up to "
            f"{MAX_SOURCE_PIXELS // 1_000_000} megapixels.",
            {"width": width, "height": height, "max_pixels": MAX_SOURCE_PIXELS},
        )


def _render(data: bytes, source_format: str, spec: ThumbSpec) -> tuple[bytes, str]:
    with Image.open(io.BytesIO(data), formats=[source_format]) as image:
        _check_pixels(image.size)
        source_mode = image.mode
        icc_profile = image.info.get("icc_profile")
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        turned = orientation in (5, 6, 7, 8)
        width, height = (image.height, image.width) if turned else image.size
        size, box = _geometry(width, height, spec)
        if source_format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves
            # twice the pixels the thumbnail needs: much less time and memory.
            need_w = math.ceil(2 * size[0] * width / (box[2] - box[0]))
            need_h = math.ceil(2 * size[1] * height / (box[3] - box[1]))
            image.draft(None, (need_h, need_w) if turned else (need_w, need_h))
        oriented = ImageOps.exif_transpose(image)
    scale_x, scale_y = oriented.width / width, oriented.height / height
    box = (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
    working = _working_mode(oriented)
    thumb = working.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    output_format = _OUTPUT[source_format]
    thumb = thumb.convert(_OUTPUT_MODES[output_format][thumb.mode])
    if source_mode in _FOREIGN_COLOUR_MODES:
        icc_profile = None
    out = io.BytesIO()
    # No EXIF is written: the orientation is applied, and GPS and camera data stay private.
    thumb.save(out, output_format, icc_profile=icc_profile, **_SAVE_OPTIONS[output_format])
    return out.getvalue(), _OUTPUT_TYPES[output_format]


def _geometry(
    width: int, height: int, spec: ThumbSpec
) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """The thumbnail's size and the region of the (upright) source that fills it."""
    whole = (0.0, 0.0, float(width), float(height))
    if spec.height == 0:
        out_w = min(spec.width, width)
        return (out_w, max(1, round(height * out_w / width))), whole
    if spec.width == 0:
        out_h = min(spec.height, height)
        return (max(1, round(width * out_h / height)), out_h), whole
    if spec.fit:
        scale = min(spec.width / width, spec.height / height, 1.0)
        return (max(1, round(width * scale)), max(1, round(height * scale))), whole
    scale = min(width / spec.width, height / spec.height, 1.0)
    size = (max(1, round(spec.width * scale)), max(1, round(spec.height * scale)))
    if width * spec.height > height * spec.width:
        region_w, region_h = height * spec.width / spec.height, float(height)
    else:
        region_w, region_h = float(width), width * spec.height / spec.width
    left, top = (width - region_w) / 2, (height - region_h) / 2
    return size, (left, top, left + region_w, top + region_h)


def _working_mode(image: Image.Image) -> Image.Image:
    """L, LA, RGB or RGBA: modes that resize smoothly and every output format can take."""
    if image.mode.startswith("I"):
        # 16-bit grey: scale to 8 bits (a plain convert would clip at 255).
        return image.convert("I").point(lambda value: value / 256).convert("L")
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if image.mode in ("L", "LA", "RGB", "RGBA") and not (has_alpha and "A" not in image.mode):
        return image
    if image.mode in ("1", "L"):
        return image.convert("LA" if has_alpha else "L")
    return image.convert("RGBA" if has_alpha else "RGB")


def _declared_size(data: bytes, source_format: str) -> tuple[int, int] | None:
    """The pixel size an image's header declares, read without Pillow, or None if unread."""
    if source_format == "PNG" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if source_format == "GIF":
        return _gif_size(data)
    if source_format == "WEBP":
        return _webp_size(data)
    if source_format == "JPEG":
        return _jpeg_size(data)
    return None


def _gif_size(data: bytes) -> tuple[int, int] | None:
    """The logical screen, grown to the first frame if that is larger (Pillow grows it too)."""
    if len(data) < 13:
        return None
    width, height = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    at = 13 + (3 * (2 << (data[10] & 7)) if data[10] & 0x80 else 0)
    while at < len(data):
        if data[at] == 0x21:  # extension: label, then sub-blocks up to an empty one
            at += 2
            while at < len(data) and data[at]:
                at += data[at] + 1
            at += 1
        elif data[at] == 0x2C and at + 9 <= len(data):
            left, top, frame_w, frame_h = (
                int.from_bytes(data[at + i : at + i + 2], "little") for i in (1, 3, 5, 7)
            )
            return max(width, left + frame_w), max(height, top + frame_h)
        else:
            break
    return width, height


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30:
        return (
            int.from_bytes(data[26:28], "little") & 0x3FFF,
            int.from_bytes(data[28:30], "little") & 0x3FFF,
        )
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in the first start-of-frame segment, walking the markers before it."""
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
        elif marker in _SOF_MARKERS:
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            return width, height
        elif marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            return None
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


__all__ = [
    "MAX_SOURCE_PIXELS",
    "MAX_THUMB_SIDE",
    "THUMB_TYPES",
    "ThumbSpec",
    "make_thumbnail",
    "parse_thumb",
]
