"""parse_thumb and make_thumbnail: sizes, formats, orientation, and hostile input."""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib

import pytest
from PIL import Image, ImageDraw

from backpack.errors import BadRequest, UnsupportedMediaType
from backpack.files.sniff import SNIFF_BYTES, sniff_type
from backpack.files.thumbs import (
    MAX_SOURCE_PIXELS,
    MAX_THUMB_SIDE,
    THUMB_TYPES,
    ThumbSpec,
    make_thumbnail,
    parse_thumb,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _halves(size: tuple[int, int], first: str = "red", second: str = "blue") -> Image.Image:
    """Left half `first`, right half `second` when wide; top and bottom when tall."""
    image = Image.new("RGB", size, second)
    width, height = size
    box = (
        (0, 0, width // 2 - 1, height - 1)
        if width >= height
        else (0, 0, width - 1, height // 2 - 1)
    )
    ImageDraw.Draw(image).rectangle(box, fill=first)
    return image


def _thumb(data: bytes, mime: str, spec: str) -> Image.Image:
    out, out_type = make_thumbnail(data, mime, parse_thumb(spec))
    image = Image.open(io.BytesIO(out))
    image.load()
    assert sniff_type(out[:SNIFF_BYTES]) == out_type
    return image


def _near(pixel: object, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header(width: int, height: int) -> bytes:
    """A real PNG signature, IHDR, one tiny IDAT and IEND: a few dozen bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _gif_header(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", *screen, 0, 0, 0)
        + b","
        + struct.pack("<HHHHB", 0, 0, *frame, 0)
        + b"\x02\x02\x44\x01\x00;"
    )


def _jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03"
    sof += b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def _webp_vp8x(width: int, height: int) -> bytes:
    body = (
        b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    chunk = b"VP8X" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def _webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | (height - 1) << 14
    body = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


# -- parse_thumb ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec", "name"),
    [
        ("200x100", ThumbSpec(200, 100, False), "thumb-200x100"),
        ("200x100f", ThumbSpec(200, 100, True), "thumb-200x100f"),
        ("200x0", ThumbSpec(200, 0, False), "thumb-200x0"),
        ("0x150", ThumbSpec(0, 150, False), "thumb-0x150"),
        ("1x1", ThumbSpec(1, 1, False), "thumb-1x1"),
        ("2000x2000f", ThumbSpec(2000, 2000, True), "thumb-2000x2000f"),
        ("0200x0100", ThumbSpec(200, 100, False), "thumb-200x100"),
    ],
)
def test_parse_thumb(text: str, spec: ThumbSpec, name: str) -> None:
    assert parse_thumb(text) == spec
    assert parse_thumb(text).name == name


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0x0", "give a width, a height or both"),
        ("0x0f", "give a width, a height or both"),
        ("2001x100", "at most 2000 pixels"),
        ("100x2001", "at most 2000 pixels"),
        ("999999x1", "at most 2000 pixels"),
        ("200x0f", "needs both a width and a height"),
        ("0x200f", "needs both a width and a height"),
        ("", "is not valid"),
        ("200", "is not valid"),
        ("200x", "is not valid"),
        ("x100", "is not valid"),
        ("-1x100", "is not valid"),
        ("200X100", "is not valid"),
        ("200*100", "is not valid"),
        (" 200x100", "is not valid"),
        ("200x100 ", "is not valid"),
        ("200x100ff", "is not valid"),
        ("200x100t", "is not valid"),
        ("1.5x2", "is not valid"),
        ("\uff12\uff10\uff10x100", "is not valid"),  # full-width digits
        ("1" * 5000 + "x1", "is not valid"),
    ],
)
def test_parse_thumb_refuses(text: str, says: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_thumb(text)
    assert says in caught.value.message
    assert len(caught.value.message) < 200


def test_thumb_sides_are_limited_to_the_documented_maximum() -> None:
    assert MAX_THUMB_SIDE == 2000
    assert parse_thumb(f"{MAX_THUMB_SIDE}x{MAX_THUMB_SIDE}").width == MAX_THUMB_SIDE


# -- sizes -----------------------------------------------------------------------

LANDSCAPE = (400, 200)
PORTRAIT = (200, 400)


@pytest.mark.parametrize(
    ("source", "spec", "size"),
    [
        (LANDSCAPE, "100x100", (100, 100)),
        (PORTRAIT, "100x100", (100, 100)),
        (LANDSCAPE, "120x30", (120, 30)),
        (PORTRAIT, "30x120", (30, 120)),
        (LANDSCAPE, "100x0", (100, 50)),
        (PORTRAIT, "100x0", (100, 200)),
        (LANDSCAPE, "0x100", (200, 100)),
        (PORTRAIT, "0x100", (50, 100)),
        (LANDSCAPE, "100x100f", (100, 50)),
        (PORTRAIT, "100x100f", (50, 100)),
        (LANDSCAPE, "300x30f", (60, 30)),
        (PORTRAIT, "30x300f", (30, 60)),
    ],
)
def test_output_size(source: tuple[int, int], spec: str, size: tuple[int, int]) -> None:
    data = _encode(_halves(source), "PNG")
    assert _thumb(data, "image/png", spec).size == size


@pytest.mark.parametrize(
    ("source", "spec", "size"),
    [
        (LANDSCAPE, "800x0", LANDSCAPE),
        (LANDSCAPE, "0x800", LANDSCAPE),
        (PORTRAIT, "2000x2000f", PORTRAIT),
        (LANDSCAPE, "400x200", LANDSCAPE),
        # A crop larger than the source keeps its aspect ratio at the largest size that fits.
        (LANDSCAPE, "800x800", (200, 200)),
        (PORTRAIT, "1000x500", (200, 100)),
        (LANDSCAPE, "800x200", (400, 100)),
    ],
)
def test_never_upscales(source: tuple[int, int], spec: str, size: tuple[int, int]) -> None:
    data = _encode(_halves(source), "PNG")
    thumb = _thumb(data, "image/png", spec)
    assert thumb.size == size
    assert thumb.width <= source[0] and thumb.height <= source[1]


def test_crop_is_centred() -> None:
    # Blue bands of 100 px at both ends of a 400x200 image, red between them.
    image = Image.new("RGB", LANDSCAPE, "blue")
    ImageDraw.Draw(image).rectangle((100, 0, 299, 199), fill="red")
    thumb = _thumb(_encode(image, "PNG"), "image/png", "100x100")
    for x in (0, 50, 99):
        assert _near(thumb.getpixel((x, 50)), RED)
    # Fitting instead keeps the whole width: the blue bands are still there.
    fitted = _thumb(_encode(image, "PNG"), "image/png", "100x100f")
    assert _near(fitted.getpixel((0, 25)), BLUE) and _near(fitted.getpixel((99, 25)), BLUE)
    assert _near(fitted.getpixel((50, 25)), RED)


def test_keeps_content_left_to_right() -> None:
    thumb = _thumb(_encode(_halves(LANDSCAPE), "PNG"), "image/png", "100x0")
    assert _near(thumb.getpixel((5, 25)), RED) and _near(thumb.getpixel((95, 25)), BLUE)


# -- formats ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "fmt", "mime", "out_type", "out_mode"),
    [
        (Image.new("RGB", LANDSCAPE, "red"), "JPEG", "image/jpeg", "image/jpeg", "RGB"),
        (Image.new("L", LANDSCAPE, 128), "JPEG", "image/jpeg", "image/jpeg", "L"),
        (Image.new("CMYK", LANDSCAPE, (0, 255, 255, 0)), "JPEG", "image/jpeg", "image/jpeg", "RGB"),
        (Image.new("RGB", LANDSCAPE, "red"), "PNG", "image/png", "image/png", "RGB"),
        (Image.new("RGBA", LANDSCAPE, (255, 0, 0, 128)), "PNG", "image/png", "image/png", "RGBA"),
        (Image.new("LA", LANDSCAPE, (128, 128)), "PNG", "image/png", "image/png", "LA"),
        (Image.new("L", LANDSCAPE, 128), "PNG", "image/png", "image/png", "L"),
        (Image.new("1", LANDSCAPE, 1), "PNG", "image/png", "image/png", "L"),
        (Image.new("I;16", LANDSCAPE, 65535), "PNG", "image/png", "image/png", "L"),
        (Image.new("P", LANDSCAPE, 3), "PNG", "image/png", "image/png", "RGB"),
        (Image.new("P", LANDSCAPE, 3), "GIF", "image/gif", "image/png", "RGB"),
        (Image.new("RGB", LANDSCAPE, "red"), "WEBP", "image/webp", "image/webp", "RGB"),
        (
            Image.new("RGBA", LANDSCAPE, (255, 0, 0, 128)),
            "WEBP",
            "image/webp",
            "image/webp",
            "RGBA",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_each_format_round_trips(
    image: Image.Image, fmt: str, mime: str, out_type: str, out_mode: str
) -> None:
    data = _encode(image, fmt)
    out, produced = make_thumbnail(data, mime, parse_thumb("100x0"))
    assert produced == out_type
    thumb = Image.open(io.BytesIO(out))
    thumb.load()
    assert thumb.format == out_type.removeprefix("image/").upper()
    assert thumb.mode == out_mode
    assert thumb.size == (100, 50)


def test_colours_survive() -> None:
    jpeg = _thumb(_encode(Image.new("RGB", LANDSCAPE, "red"), "JPEG"), "image/jpeg", "50x50")
    assert _near(jpeg.getpixel((25, 25)), RED)
    cmyk = Image.new("CMYK", LANDSCAPE, (0, 255, 255, 0))  # red in ink
    assert _near(_thumb(_encode(cmyk, "JPEG"), "image/jpeg", "50x50").getpixel((25, 25)), RED)
    grey16 = _thumb(_encode(Image.new("I;16", LANDSCAPE, 32768), "PNG"), "image/png", "50x50")
    assert abs(int(str(grey16.getpixel((25, 25)))) - 128) <= 1  # scaled, not clipped to white


def test_transparency_survives() -> None:
    image = Image.new("RGBA", LANDSCAPE, (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((0, 0, 199, 199), fill=(255, 0, 0, 255))
    for fmt, mime in (("PNG", "image/png"), ("WEBP", "image/webp")):
        thumb = _thumb(_encode(image, fmt, lossless=True), mime, "100x0")
        assert thumb.mode == "RGBA"
        opaque, clear = thumb.getpixel((10, 25)), thumb.getpixel((90, 25))
        assert isinstance(opaque, tuple) and _near(opaque, RED) and opaque[3] == 255
        assert isinstance(clear, tuple) and clear[3] == 0
    palette = Image.new("P", LANDSCAPE, 0)
    palette.putpalette([255, 0, 0, 0, 0, 255])
    ImageDraw.Draw(palette).rectangle((200, 0, 399, 199), fill=1)
    gif = _thumb(_encode(palette, "GIF", transparency=1), "image/gif", "100x0")
    assert gif.mode == "RGBA"
    first, last = gif.getpixel((10, 25)), gif.getpixel((90, 25))
    assert isinstance(first, tuple) and first[3] == 255
    assert isinstance(last, tuple) and last[3] == 0


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("P", LANDSCAPE, 0), Image.new("P", LANDSCAPE, 1)]
    for frame in frames:
        frame.putpalette([255, 0, 0, 0, 0, 255])
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    thumb = _thumb(data, "image/gif", "50x50")
    assert thumb.format == "PNG"
    assert _near(thumb.getpixel((25, 25)), RED)


def test_exif_orientation_is_applied_to_jpeg() -> None:
    # Stored 200 wide and 100 tall, red above blue; orientation 6 means "rotate 90°
    # clockwise to display": upright it is 100 wide and 200 tall, blue left of red.
    stored = Image.new("RGB", (200, 100), "blue")
    ImageDraw.Draw(stored).rectangle((0, 0, 199, 49), fill="red")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # a GPS position the thumbnail must not carry
    data = _encode(stored, "JPEG", exif=exif.tobytes(), quality=95)
    thumb = _thumb(data, "image/jpeg", "50x0")
    assert thumb.size == (50, 100)
    assert _near(thumb.getpixel((10, 50)), BLUE) and _near(thumb.getpixel((40, 50)), RED)
    assert not thumb.getexif()  # no orientation to apply twice, no GPS or camera data


def test_large_jpeg_is_decoded_at_reduced_scale_with_the_right_geometry() -> None:
    image = Image.new("RGB", (6000, 4000), "blue")
    ImageDraw.Draw(image).rectangle((1000, 0, 4999, 3999), fill="red")
    data = _encode(image, "JPEG")
    started = time.perf_counter()
    square = _thumb(data, "image/jpeg", "200x200")
    assert time.perf_counter() - started < 2
    assert square.size == (200, 200)
    assert _near(square.getpixel((2, 100)), RED) and _near(square.getpixel((197, 100)), RED)
    wide = _thumb(data, "image/jpeg", "300x0")
    assert wide.size == (300, 200)
    assert _near(wide.getpixel((20, 100)), BLUE) and _near(wide.getpixel((150, 100)), RED)
    assert _near(wide.getpixel((280, 100)), BLUE)


# -- refusals -----------------------------------------------------------------


def test_thumb_types() -> None:
    assert {"image/jpeg", "image/png", "image/gif", "image/webp"} == THUMB_TYPES


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"just some text", "text/plain"),
        (b"just some text", "image/png"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        (_encode(Image.new("RGB", (8, 8)), "AVIF"), "image/avif"),
        (_encode(Image.new("RGB", (8, 8)), "BMP"), "image/bmp"),
        (_encode(Image.new("RGB", (8, 8)), "PNG"), "image/jpeg"),
        (_encode(Image.new("RGB", (8, 8)), "PNG"), ""),
    ],
)
def test_non_images_and_other_types_are_unsupported(data: bytes, mime: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        make_thumbnail(data, mime, parse_thumb("10x10"))


def test_a_mime_with_parameters_is_understood() -> None:
    data = _encode(Image.new("RGB", (8, 8)), "PNG")
    assert make_thumbnail(data, "Image/PNG; foo=bar", parse_thumb("4x4"))[1] == "image/png"


BOMBS = [
    ("png", _png_header(50_000, 50_000), "image/png"),
    ("png-just-over", _png_header(8_000, 8_000), "image/png"),
    ("gif-screen", _gif_header((65_535, 65_535), (1, 1)), "image/gif"),
    ("gif-frame", _gif_header((10, 10), (60_000, 60_000)), "image/gif"),
    ("jpeg", _jpeg_header(65_000, 65_000), "image/jpeg"),
    ("webp-vp8x", _webp_vp8x(16_000_000, 16_000_000), "image/webp"),
    ("webp-vp8l", _webp_vp8l(16_384, 16_384), "image/webp"),
]


@pytest.mark.parametrize(
    ("data", "mime"), [(data, mime) for _, data, mime in BOMBS], ids=[i for i, _, _ in BOMBS]
)
def test_bombs_are_refused_from_the_header_before_pillow_opens_them(
    data: bytes, mime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(data) < 200

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow was asked to open a decompression bomb")

    monkeypatch.setattr(Image, "open", no_decoding)
    with pytest.raises(BadRequest) as caught:
        make_thumbnail(data, mime, parse_thumb("100x100"))
    assert "megapixels" in caught.value.message
    assert caught.value.details["max_pixels"] == MAX_SOURCE_PIXELS


def test_a_50000_pixel_square_png_is_refused_fast_and_without_memory() -> None:
    data = _png_header(50_000, 50_000)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(BadRequest, match="50000x50000 pixels"):
        make_thumbnail(data, "image/png", parse_thumb("100x100"))
    assert (
        time.perf_counter() - started < 2
    )  # generous: refused from the header, long before any decoding
    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert growth_kib < 20 * 1024  # decoding would take gigabytes


def test_pillow_refuses_bombs_too() -> None:
    assert Image.MAX_IMAGE_PIXELS == MAX_SOURCE_PIXELS


def test_an_image_within_the_limit_is_accepted() -> None:
    data = _encode(Image.new("L", (5_000, 5_000)), "PNG")  # 25 megapixels
    assert _thumb(data, "image/png", "50x50").size == (50, 50)


def _truncated_cases() -> list[tuple[str, bytes, str]]:
    noise = Image.effect_noise((300, 200), 64).convert("RGB")
    cases = []
    for fmt, mime in (("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")):
        data = _encode(noise, fmt)
        cases += [
            (f"{fmt}-half", data[: len(data) // 2], mime),
            (f"{fmt}-header-only", data[:40], mime),
        ]
    gif = _encode(noise.convert("P"), "GIF")
    cases.append(("GIF-half", gif[: len(gif) // 2], "image/gif"))
    cases.append(("PNG-garbage", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "image/png"))
    cases.append(("JPEG-garbage", b"\xff\xd8\xff" + bytes(range(256)) * 4, "image/jpeg"))
    cases.append(("GIF-zero-size", _gif_header((0, 0), (0, 0)), "image/gif"))
    return cases


TRUNCATED = _truncated_cases()


@pytest.mark.parametrize(
    ("data", "mime"),
    [(data, mime) for _, data, mime in TRUNCATED],
    ids=[i for i, _, _ in TRUNCATED],
)
def test_corrupt_or_truncated_images_are_bad_requests(data: bytes, mime: str) -> None:
    with pytest.raises(BadRequest, match="corrupt or truncated"):
        make_thumbnail(data, mime, parse_thumb("50x50"))
