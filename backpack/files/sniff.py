"""What a file is, from its bytes; what it may be called; how a browser should receive it.

`sniff_type` never trusts a client's declared type: magic numbers decide
binary formats, and text is told apart by its content. A file name's extension
may only refine a text type (plain text named `.css` is `text/css`); it never
turns bytes into an image or a script. `is_inline_safe` says which types a
browser may render inline on our origin; everything else is served as an
attachment, always with `X-Content-Type-Options: nosniff`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from typing import Final
from urllib.parse import quote

SNIFF_BYTES: Final = 4096
"""How many leading bytes `sniff_type` wants: the whole file if it is shorter.

512 cover every magic number (tar's is at 257); the rest let text detection
see past a long XML prolog or licence comment to the root element.
"""

TEXT_PLAIN: Final = "text/plain; charset=utf-8"
OCTET_STREAM: Final = "application/octet-stream"

_PREFIXES: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"II+\x00", "image/tiff"),
    (b"MM\x00+", "image/tiff"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"PK\x07\x08", "application/zip"),
    (b"\x1f\x8b\x08", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07\x00", "application/vnd.rar"),
    (b"Rar!\x1a\x07\x01\x00", "application/vnd.rar"),
    (b"fLaC", "audio/flac"),
    (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"),
    (b"\x00asm\x01\x00\x00\x00", "application/wasm"),
)

_RIFF_KINDS: Final = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}

_AVIF_BRANDS: Final = {b"avif", b"avis"}
_HEIC_BRANDS: Final = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"}
_HEIF_BRANDS: Final = {b"mif1", b"msf1"}
_FTYP_KINDS: Final = {
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"3gp4": "video/3gpp",
    b"3gp5": "video/3gpp",
    b"3gp6": "video/3gpp",
    b"3g2a": "video/3gpp2",
}

# Layer III bitrates in kbit/s by index (1-14), and MPEG-1 sample rates.
_MP3_BITRATES_V1: Final = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_BITRATES_V2: Final = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MP3_RATES: Final = (44100, 48000, 32000)

_BMP_HEADER_SIZES: Final = {12, 16, 40, 52, 56, 64, 108, 124}

# Types a browser shows without running anything from them on our origin. A list
# of the safe rather than of the dangerous, so a type nobody thought of is an attachment.
_INLINE_SAFE: Final = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/heic",
        "image/heif",
        "image/bmp",
        "image/tiff",
        "image/x-icon",
        "audio/mpeg",
        "audio/mp4",
        "audio/ogg",
        "audio/wav",
        "audio/flac",
        "video/mp4",
        "video/quicktime",
        "video/webm",
        "video/ogg",
        "video/3gpp",
        "video/3gpp2",
        "video/x-matroska",
        "video/x-msvideo",
        "application/pdf",
        "application/json",
        "text/plain",
        "text/csv",
        "text/css",
        "text/markdown",
        "text/tab-separated-values",
    }
)

# Plain text may become one of these by its name, and only by its name.
_TEXT_BY_EXTENSION: Final = {
    "css": "text/css; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "htm": "text/html; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "xhtml": "application/xhtml+xml",
}

_HTML_ROOTS: Final = frozenset(
    {"a", "b", "body", "br", "div", "font", "frameset", "h1", "head", "html", "iframe"}
    | {"object", "p", "script", "style", "table", "title"}
)
# Markup a browser that guesses would run, anywhere in text: such text is HTML
# and so an attachment, even when it does not start like a page.
_ACTIVE_MARKUP: Final = re.compile(
    rb"<(?:!doctype\s+html|html|body|script|iframe|object|embed|svg|frameset)[\s/>]",
    re.IGNORECASE,
)
_PROLOG_ITEM: Final = re.compile(
    r"\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE(?:[^\[>]|\[[^\]]*\])*>", re.DOTALL | re.IGNORECASE
)
_ROOT_TAG: Final = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)[\s/>]")
_JSON_TOKEN_START: Final = re.compile(r"t(r(ue?)?)?|f(a(l(se?)?)?)?|n(u(ll?)?)?|[-+.0-9eE]*")
_CONTROL_OK: Final = frozenset("\t\n\r\f\x1b")


def sniff_type(head: bytes, name: str | None = None) -> str:
    """The MIME type of a file from its first `SNIFF_BYTES` bytes (or all of it, if shorter)."""
    binary = _sniff_binary(head)
    if binary is not None:
        return binary
    complete = len(head) < SNIFF_BYTES
    text = _decode_text(head, complete)
    if text is None:
        return OCTET_STREAM
    return _sniff_text(head, text, complete, _extension(name))


def is_inline_safe(mime: str) -> bool:
    """Whether a browser may render this type inline: never HTML, SVG, XML or script."""
    return mime.split(";", 1)[0].strip().lower() in _INLINE_SAFE


def safe_filename(name: str) -> str:
    """A user-supplied file name made safe to store and to put in a header.

    Keeps only the last path component, drops control and invisible formatting
    characters (bidi overrides that disguise an extension among them), collapses
    whitespace, strips leading and trailing dots and spaces, and cuts the name to
    255 bytes of UTF-8 keeping its extension. Nothing left gives "file".
    """
    name = unicodedata.normalize("NFC", name)
    parts = [part for part in re.split(r"[/\\]", name) if part.strip()]
    name = parts[-1] if parts else ""
    name = re.sub(r"^[A-Za-z]:", "", name)
    name = "".join(_clean_char(char) for char in name)
    name = re.sub(r"\s+", " ", name).strip(" .")
    return _truncate_utf8(name, 255) or "file"


def content_disposition(name: str, attachment: bool) -> str:
    """A Content-Disposition value with an ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    safe = safe_filename(name)
    encoded = quote(safe, safe="!#$&+^`|~")
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{_ascii_fallback(safe)}\"; filename*=UTF-8''{encoded}"


def _sniff_binary(head: bytes) -> str | None:
    for prefix, mime in _PREFIXES:
        if head.startswith(prefix):
            return mime
    for check in _BINARY_CHECKS:
        found = check(head)
        if found is not None:
            return found
    return None


def _riff(head: bytes) -> str | None:
    return _RIFF_KINDS.get(head[8:12]) if head.startswith(b"RIFF") else None


def _ftyp(head: bytes) -> str | None:
    """ISO base media files (MP4, QuickTime, AVIF, HEIC) name their brands in an ftyp box."""
    if head[4:8] != b"ftyp" or len(head) < 12:
        return None
    size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    compatible = {head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    if major in _AVIF_BRANDS:
        return "image/avif"
    if major in _HEIC_BRANDS:
        return "image/heic"
    if major in _HEIF_BRANDS or major not in _FTYP_KINDS:
        if compatible & _AVIF_BRANDS:
            return "image/avif"
        if compatible & _HEIC_BRANDS:
            return "image/heic"
        if major in _HEIF_BRANDS:
            return "image/heif"
    return _FTYP_KINDS.get(major, "video/mp4")


def _bmp(head: bytes) -> str | None:
    # "BM" alone starts too many texts: the DIB header's size must be a known one too.
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "image/bmp"
    return None


def _ico(head: bytes) -> str | None:
    # Type 1 (icon), at least one image, and the first entry's reserved byte zero.
    if head.startswith(b"\x00\x00\x01\x00") and len(head) >= 22 and head[4:6] != b"\x00\x00":
        return "image/x-icon" if head[9] == 0 else None
    return None


def _matroska(head: bytes) -> str | None:
    if not head.startswith(b"\x1a\x45\xdf\xa3"):
        return None
    at = head.find(b"\x42\x82", 4, 64)  # the EBML DocType element
    if at != -1 and len(head) > at + 2 and head[at + 2] & 0x80:
        doc_type = head[at + 3 : at + 3 + (head[at + 2] & 0x7F)]
        if doc_type == b"webm":
            return "video/webm"
    return "video/x-matroska"


def _ogg(head: bytes) -> str | None:
    if not head.startswith(b"OggS"):
        return None
    return "video/ogg" if b"\x80theora" in head[:128] else "audio/ogg"


def _mp3(head: bytes) -> str | None:
    if head.startswith(b"ID3") and len(head) >= 5 and head[3] in (2, 3, 4) and head[4] != 0xFF:
        return "audio/mpeg"
    # Without a tag, two bytes of frame sync are too weak alone (a UTF-16 BOM has
    # them): the frame header must be a valid Layer III one, and so must the next
    # frame's, where the head reaches it.
    length = _mp3_frame_length(head, 0)
    if length is None:
        return None
    if len(head) >= length + 4 and _mp3_frame_length(head, length) is None:
        return None
    return "audio/mpeg"


def _mp3_frame_length(head: bytes, at: int) -> int | None:
    if len(head) < at + 4 or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
        return None
    version, layer = (head[at + 1] >> 3) & 3, (head[at + 1] >> 1) & 3
    bitrate_index, rate_index = head[at + 2] >> 4, (head[at + 2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = (_MP3_BITRATES_V1 if mpeg1 else _MP3_BITRATES_V2)[bitrate_index] * 1000
    rate = _MP3_RATES[rate_index] >> {3: 0, 2: 1, 0: 2}[version]  # MPEG-1, 2, 2.5
    padding = (head[at + 2] >> 1) & 1
    return (144 if mpeg1 else 72) * bitrate // rate + padding


def _tar(head: bytes) -> str | None:
    return "application/x-tar" if head[257:262] == b"ustar" else None


_BINARY_CHECKS: Final[tuple[Callable[[bytes], str | None], ...]] = (
    _riff,
    _ftyp,
    _bmp,
    _ico,
    _matroska,
    _ogg,
    _mp3,
    _tar,
)


def _decode_text(head: bytes, complete: bool) -> str | None:
    """The head as UTF-8 text, or None if it is not text: NUL, bad UTF-8, many controls."""
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        # A cut head may end inside a character; anything else is not UTF-8.
        if complete or err.reason != "unexpected end of data" or err.start < len(head) - 3:
            return None
        text = head[: err.start].decode("utf-8")
    controls = sum(
        1 for char in text if (char < " " and char not in _CONTROL_OK) or "\x7f" <= char < "\xa0"
    )
    return text.removeprefix("\ufeff") if controls * 100 <= len(text) else None


def _sniff_text(head: bytes, text: str, complete: bool, extension: str) -> str:
    stripped = text.lstrip()
    if stripped.startswith("<"):
        markup = _sniff_markup(stripped)
        if markup is not None:
            return markup
    if (stripped[:1] in ("{", "[") or extension == "json") and _is_json(stripped, complete):
        return "application/json"
    if _ACTIVE_MARKUP.search(head):
        return "text/html; charset=utf-8"
    return _TEXT_BY_EXTENSION.get(extension, TEXT_PLAIN)


def _sniff_markup(text: str) -> str | None:
    """HTML, SVG or XML from the root element, past any XML prolog, comments and doctype."""
    at = 0
    while match := _PROLOG_ITEM.match(text, at):
        at = match.end()
    prolog = text[:at].lower()
    if "<!doctype html" in prolog:
        return "text/html; charset=utf-8"
    root = _ROOT_TAG.match(text, at)
    if root is None:
        if text.startswith(("<?", "<!"), at):
            # A prolog or comment running past the head hides the root: assume the worst.
            return "application/xml" if text.startswith("<?xml") else "text/html; charset=utf-8"
        return None
    local = root.group(1).lower()
    if local == "svg":
        return "image/svg+xml"
    if local in _HTML_ROOTS:
        return "text/html; charset=utf-8"
    return "application/xml"


def _is_json(text: str, complete: bool) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        if complete:
            return False
        # A cut document is JSON if the parser ran out of input inside its last token.
        if err.msg.startswith("Unterminated string"):
            return True
        return _JSON_TOKEN_START.fullmatch(text[err.pos :].strip()) is not None
    except RecursionError:
        return False
    return True


def _extension(name: str | None) -> str:
    if not name:
        return ""
    base = re.split(r"[/\\]", name)[-1]
    stem, dot, extension = base.rpartition(".")
    return extension.lower() if dot and stem else ""


def _clean_char(char: str) -> str:
    category = unicodedata.category(char)
    if category in ("Cc", "Zl", "Zp"):
        return " " if char.isspace() or category != "Cc" else ""
    # Format characters are invisible; joiners stay because scripts and emoji need them.
    if category in ("Cf", "Cs") and char not in "\u200c\u200d":
        return ""
    return char


def _truncate_utf8(name: str, limit: int) -> str:
    if len(name.encode()) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = dot + extension
    if not dot or not stem or len(suffix.encode()) > 32:
        stem, suffix = name, ""
    room = limit - len(suffix.encode())
    stem = stem.encode()[:room].decode("utf-8", "ignore").rstrip(" .")
    return stem + suffix if stem else ""


def _ascii_fallback(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    chars = []
    for char in decomposed:
        if unicodedata.combining(char):
            continue
        if char in '"\\':
            continue
        # Old clients read this one: no "%" they might decode, no ";" they might split on.
        chars.append(char if " " <= char <= "~" and char not in "%;" else "_")
    return re.sub("_{2,}", "_", "".join(chars)).strip(" .") or "file"


__all__ = [
    "OCTET_STREAM",
    "SNIFF_BYTES",
    "TEXT_PLAIN",
    "content_disposition",
    "is_inline_safe",
    "safe_filename",
    "sniff_type",
]
