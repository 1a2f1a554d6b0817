"""sniff_type on real samples of every type it knows; safe names and Content-Disposition."""

from __future__ import annotations

import gzip
import io
import tarfile
import wave
import zipfile
from urllib.parse import unquote

import pytest
from PIL import Image

from backpack.files.sniff import (
    OCTET_STREAM,
    SNIFF_BYTES,
    TEXT_PLAIN,
    content_disposition,
    is_inline_safe,
    safe_filename,
    sniff_type,
)


def _pillow(fmt: str, mode: str = "RGB", size: tuple[int, int] = (16, 8)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red").save(out, fmt)
    return out.getvalue()


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("hello.txt", "hello")
    return out.getvalue()


def _tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    return out.getvalue()


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(8000)
        sound.writeframes(b"\x00\x00" * 80)
    return out.getvalue()


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(brands)).to_bytes(4, "big") + b"ftyp" + brands + b"\x00\x00\x00\x08mdat"


def _ebml(doc_type: bytes) -> bytes:
    body = b"\x42\x86\x81\x01" + b"\x42\x82" + bytes([0x80 | len(doc_type)]) + doc_type
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(body)]) + body + b"\x18\x53\x80\x67"


def _ogg(packet: bytes) -> bytes:
    return b"OggS\x00\x02" + b"\x00" * 20 + b"\x01" + bytes([len(packet)]) + packet


def _riff(kind: bytes) -> bytes:
    return b"RIFF\x24\x00\x00\x00" + kind + b"\x00" * 24


BINARY_SAMPLES: list[tuple[str, bytes, str]] = [
    ("jpeg", _pillow("JPEG"), "image/jpeg"),
    ("png", _pillow("PNG"), "image/png"),
    ("gif", _pillow("GIF", "P"), "image/gif"),
    ("gif87a", b"GIF87a\x01\x00\x01\x00\x00\x00\x00;", "image/gif"),
    ("webp", _pillow("WEBP"), "image/webp"),
    ("avif", _pillow("AVIF"), "image/avif"),
    ("avif-mif1", _ftyp(b"mif1", b"mif1", b"avif", b"miaf"), "image/avif"),
    ("heic", _ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
    ("heif", _ftyp(b"mif1", b"mif1"), "image/heif"),
    ("bmp", _pillow("BMP"), "image/bmp"),
    ("tiff-le", _pillow("TIFF"), "image/tiff"),
    ("tiff-be", b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 16, "image/tiff"),
    ("ico", _pillow("ICO", size=(16, 16)), "image/x-icon"),
    (
        "pdf",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        "application/pdf",
    ),
    ("zip", _zip(), "application/zip"),
    ("gzip", gzip.compress(b"hello"), "application/gzip"),
    ("7z", b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 24, "application/x-7z-compressed"),
    ("rar4", b"Rar!\x1a\x07\x00\xcf\x90\x73\x00\x00\x0d\x00", "application/vnd.rar"),
    ("rar5", b"Rar!\x1a\x07\x01\x00\x33\x92\xb5\xe5\x0a\x01", "application/vnd.rar"),
    ("tar", _tar(), "application/x-tar"),
    (
        "mp3-id3",
        b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + b"\x00" * 32,
        "audio/mpeg",
    ),
    # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz: frames of 417 bytes.
    ("mp3-frames", (b"\xff\xfb\x90\x64" + b"\x00" * 413) * 3, "audio/mpeg"),
    # MPEG-2 Layer III, 64 kbit/s, 22.05 kHz: frames of 208 bytes.
    ("mp3-mpeg2", (b"\xff\xf3\x80\x44" + b"\x00" * 204) * 3, "audio/mpeg"),
    ("mp3-one-frame", b"\xff\xfb\x90\x64" + b"\x00" * 100, "audio/mpeg"),
    ("mp4", _ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "video/mp4"),
    ("quicktime", _ftyp(b"qt  ", b"qt  "), "video/quicktime"),
    ("m4a", _ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "audio/mp4"),
    ("webm", _ebml(b"webm"), "video/webm"),
    ("matroska", _ebml(b"matroska"), "video/x-matroska"),
    ("ogg-vorbis", _ogg(b"\x01vorbis\x00\x00\x00\x00\x01"), "audio/ogg"),
    ("ogg-theora", _ogg(b"\x80theora\x03\x02\x01"), "video/ogg"),
    ("wav", _wav(), "audio/wav"),
    ("avi", _riff(b"AVI "), "video/x-msvideo"),
    ("flac", b"fLaC\x00\x00\x00\x22" + b"\x00" * 34, "audio/flac"),
    ("woff", b"wOFF\x00\x01\x00\x00" + b"\x00" * 36, "font/woff"),
    ("woff2", b"wOF2\x00\x01\x00\x00" + b"\x00" * 40, "font/woff2"),
    ("wasm", b"\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00", "application/wasm"),
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [(data, expected) for _, data, expected in BINARY_SAMPLES],
    ids=[sample_id for sample_id, _, _ in BINARY_SAMPLES],
)
def test_binary_types_by_magic_number(data: bytes, expected: str) -> None:
    assert sniff_type(data[:SNIFF_BYTES]) == expected
    # Neither the name nor a lie in it changes what the bytes are.
    assert sniff_type(data[:SNIFF_BYTES], "notes.txt") == expected


def test_the_sniff_window_covers_every_magic_number() -> None:
    assert SNIFF_BYTES >= 512


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (b"hello, world\n", None, TEXT_PLAIN),
        (b"", None, TEXT_PLAIN),
        ("Grüße, 世界 🌍\n".encode(), None, TEXT_PLAIN),
        (b"\xef\xbb\xbfwith a byte order mark\n", None, TEXT_PLAIN),
        (b"\x1b[31mred\x1b[0m log line\n", None, TEXT_PLAIN),
        (b'{"name": "backpack", "tags": ["a", "b"]}', None, "application/json"),
        (b'  \n[{"id": 1}, {"id": 2}]\n', None, "application/json"),
        (b"42", "answer.json", "application/json"),
        (b"42", None, TEXT_PLAIN),
        (b"{not json at all}", None, TEXT_PLAIN),
        (b"[1] Introduction\n", None, TEXT_PLAIN),
        (b"body { color: red; }\n", "site.css", "text/css; charset=utf-8"),
        (b"body { color: red; }\n", None, TEXT_PLAIN),
        (b"a,b,c\n1,2,3\n", "table.csv", "text/csv; charset=utf-8"),
        (b"a,b,c\n1,2,3\n", None, TEXT_PLAIN),
        (b"a\tb\n1\t2\n", "table.TSV", "text/tab-separated-values; charset=utf-8"),
        (b"# Title\n", "README.md", "text/markdown; charset=utf-8"),
        (b"just words\n", "page.html", "text/html; charset=utf-8"),
        (b"<!DOCTYPE html>\n<html><body>hi</body></html>", None, "text/html; charset=utf-8"),
        (b"<!doctype HTML><title>x</title>", None, "text/html; charset=utf-8"),
        (b"  <html lang=en><p>hi", None, "text/html; charset=utf-8"),
        (b"<!-- comment -->\n<div>hi</div>", None, "text/html; charset=utf-8"),
        (b"<script>alert(1)</script>", None, "text/html; charset=utf-8"),
        (b"<p>paragraph</p>", None, "text/html; charset=utf-8"),
        (b"Dear user, <iframe src=//evil></iframe>", None, "text/html; charset=utf-8"),
        (b"notes\n\n<SCRIPT >alert(1)</SCRIPT>", "notes.txt", "text/html; charset=utf-8"),
        (b"<!-- " + b"a" * 5000, None, "text/html; charset=utf-8"),
        (b'<?xml version="1.0"?>\n<feed><entry/></feed>', None, "application/xml"),
        (b"<note><to>you</to></note>", None, "application/xml"),
        (b'<?xml version="1.0"?><!-- ' + b"x" * 5000, None, "application/xml"),
        (b"<you@example.com> wrote:\n> hi\n", None, TEXT_PLAIN),
        (b"BMP is a bitmap format.\n", None, TEXT_PLAIN),
        (b"just text", "photo.png", TEXT_PLAIN),
        (b"no markup here", "drawing.svg", TEXT_PLAIN),
    ],
)
def test_text_types(data: bytes, name: str | None, expected: str) -> None:
    assert sniff_type(data[:SNIFF_BYTES], name) == expected


@pytest.mark.parametrize(
    "svg",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>',
        b'\xef\xbb\xbf\n  <svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
        b"<!-- Created with Inkscape (http://www.inkscape.org/) -->\n"
        b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [\n  <!ENTITY ns "x">\n]>\n'
        b'<svg version="1.1" xmlns="http://www.w3.org/2000/svg"></svg>',
        b'<svg:svg xmlns:svg="http://www.w3.org/2000/svg"></svg:svg>',
        b"<!--" + b" licence " * 300 + b'-->\n<svg xmlns="http://www.w3.org/2000/svg"/>',
    ],
)
def test_svg_by_its_root_element(svg: bytes) -> None:
    assert sniff_type(svg[:SNIFF_BYTES]) == "image/svg+xml"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"<!DOCTYPE html><script>alert(document.cookie)</script>", "text/html"),
        (b"<html><body onload=alert(1)>", "text/html"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/svg+xml"),
    ],
)
def test_markup_disguised_as_an_image_stays_markup_and_is_not_inline(
    data: bytes, expected: str
) -> None:
    for name in ("cat.png", "cat.jpg", "cat.gif", "cat.svg", None):
        mime = sniff_type(data, name)
        assert mime.split(";")[0] == expected
        assert not is_inline_safe(mime)


def test_json_cut_by_the_sniff_window_is_still_json() -> None:
    document = b'{"items": [' + b", ".join(
        b'{"id": %d, "name": "n\xc3\xa9"}' % i for i in range(500)
    )
    assert len(document) > SNIFF_BYTES
    assert sniff_type(document[:SNIFF_BYTES]) == "application/json"
    for not_json in (
        b"[1] Introduction, " + b"words, " * 1000,
        b'{"a": 1}\n' * 1000,
        b"{" + b'"' * 5000,
        b'{"text": "a line\nbreak' + b" words" * 1000,
    ):
        assert sniff_type(not_json[:SNIFF_BYTES]) == TEXT_PLAIN


def test_text_cut_inside_a_character_is_still_text() -> None:
    head = ("a" + "é" * SNIFF_BYTES).encode()[:SNIFF_BYTES]
    assert head[-1] == 0xC3  # the first byte of a two-byte character
    assert sniff_type(head) == TEXT_PLAIN
    # A complete (short) file ending that way is not UTF-8.
    assert sniff_type("abé".encode()[:-1]) == OCTET_STREAM


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (bytes(range(256)) * 4, None),
        (b"\x00\x01\x02\x03 looks binary", "data.txt"),
        ("utf-16 text".encode("utf-16"), "notes.txt"),
        (b"\xc3\x28 invalid utf-8", None),
        (b"text with \x01\x02\x03\x04\x05 many controls", "x.csv"),
        (b"\x00\x00\x01\x00\x00\x00", "favicon.ico"),
        (b"RIFF\x24\x00\x00\x00ABCD", None),  # a RIFF of no known form
        (b"\xff\xfb\xf0\x64 not an mp3 frame: bitrate 15", None),
        (b"\xff\xfb\x90\x64" + b"\x00" * 413 + b"no second frame", None),
        (b"\xff\xfd\x90\x64 layer II is not mp3", None),
        (b"\x8f\x13\x00\x00 random", "photo.jpg"),
    ],
)
def test_unknown_bytes_are_octet_stream(data: bytes, name: str | None) -> None:
    assert sniff_type(data, name) == OCTET_STREAM


def test_a_name_never_turns_bytes_into_an_image() -> None:
    assert sniff_type(b"\x8f\x13binary", "picture.png") == OCTET_STREAM
    assert sniff_type(b"plain words", "picture.svg") == TEXT_PLAIN
    assert sniff_type(b"plain words", "script.js") == TEXT_PLAIN


@pytest.mark.parametrize(
    ("mime", "safe"),
    [
        ("image/png", True),
        ("image/jpeg", True),
        ("video/mp4", True),
        ("audio/mpeg", True),
        ("application/pdf", True),
        ("application/json", True),
        ("text/plain; charset=utf-8", True),
        ("Text/CSV; charset=utf-8", True),
        ("text/html", False),
        ("text/html; charset=utf-8", False),
        ("TEXT/HTML", False),
        ("image/svg+xml", False),
        ("application/xhtml+xml", False),
        ("text/xml", False),
        ("application/xml", False),
        ("application/rss+xml", False),
        ("application/javascript", False),
        ("text/javascript", False),
        ("application/ecmascript", False),
        ("text/vbscript", False),
        ("application/x-shockwave-flash", False),
        ("application/octet-stream", False),
        ("application/zip", False),
        ("something/unheard-of", False),
        ("", False),
    ],
)
def test_inline_safety(mime: str, safe: bool) -> None:
    assert is_inline_safe(mime) is safe


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path.txt", "path.txt"),
        ("C:\\x\\y.txt", "y.txt"),
        ("C:y.txt", "y.txt"),
        ("dir\\..\\..\\boot.ini", "boot.ini"),
        ("photos/", "photos"),
        ("..", "file"),
        ("../..", "file"),
        ("", "file"),
        ("   ", "file"),
        ("\x00\x01\x7f", "file"),
        ("a\x00b.txt", "ab.txt"),
        ("bad\x07\x1b\x9bname.txt", "badname.txt"),
        ("line\r\nbreak\ttab.txt", "line break tab.txt"),
        ("  many   \u00a0 spaces  .txt", "many spaces .txt"),
        (".htaccess", "htaccess"),
        ("trailing dots...", "trailing dots"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ("résumé.pdf", "résumé.pdf"),
        ("re\u0301sume\u0301.pdf", "résumé.pdf"),
        ("日本語のファイル.txt", "日本語のファイル.txt"),
        ("famille 👨\u200d👩\u200d👧.png", "famille 👨\u200d👩\u200d👧.png"),
        ('say "hi".txt', 'say "hi".txt'),
        ("it's a \\ name.txt", "name.txt"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


@pytest.mark.parametrize(
    "name",
    ["a" * 10_000 + ".txt", "é" * 5_000 + ".jpeg", "日本" * 3_000 + ".tar", "x" * 300],
)
def test_safe_filename_cuts_to_255_bytes_keeping_the_extension(name: str) -> None:
    safe = safe_filename(name)
    assert 250 <= len(safe.encode()) <= 255
    safe.encode().decode("utf-8")  # cut on a character boundary
    extension = name.rpartition(".")[2] if "." in name else None
    if extension is not None:
        assert safe.endswith("." + extension)
    assert name.startswith(safe.rpartition(".")[0] if extension else safe)


def test_safe_filename_drops_an_absurd_extension_rather_than_the_name() -> None:
    safe = safe_filename("name." + "e" * 1000)
    assert safe.startswith("name.eee")
    assert len(safe.encode()) == 255


def test_content_disposition_ascii() -> None:
    assert content_disposition("report.pdf", attachment=True) == (
        "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    )
    assert content_disposition("report.pdf", attachment=False) == (
        "inline; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    )


def test_content_disposition_unicode_has_an_ascii_fallback() -> None:
    header = content_disposition("résumé 2024.pdf", attachment=True)
    assert header == (
        "attachment; filename=\"resume 2024.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202024.pdf"
    )
    header = content_disposition("日本語.txt", attachment=False)
    assert header.startswith("inline; filename=\"_.txt\"; filename*=UTF-8''")
    assert unquote(header.split("''", 1)[1]) == "日本語.txt"


@pytest.mark.parametrize(
    "name",
    [
        'say "hi".txt',
        'evil"; filename="other.exe',
        "back\\slash.txt",
        "100% done.txt",
        "new\r\nline: injected.txt",
        "../../etc/passwd",
        "a;b,c=d.txt",
        "x" * 10_000,
    ],
)
def test_content_disposition_is_one_well_formed_header(name: str) -> None:
    header = content_disposition(name, attachment=True)
    header.encode("ascii")  # a header value must be ASCII
    assert "\r" not in header and "\n" not in header
    kind, fallback_part, extended_part = header.split("; ")
    assert kind == "attachment"
    assert fallback_part.startswith('filename="') and fallback_part.endswith('"')
    fallback = fallback_part[len('filename="') : -1]
    assert not set(fallback) & set('"\\%;')
    assert extended_part.startswith("filename*=UTF-8''")
    encoded = extended_part[len("filename*=UTF-8''") :]
    assert all(char.isalnum() or char in "!#$&+-.^_`|~%" for char in encoded)
    assert unquote(encoded) == safe_filename(name)
