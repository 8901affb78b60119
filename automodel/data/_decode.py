"""Decoding one image file safely into a uint8 square array.

Every PIL failure is turned into a ``(reason, detail)`` pair so a bad file becomes a
counted skip, never a traceback. Decoding rules:

* modes: ``1``/``L`` stay gray; 16- and 32-bit gray (``I;16*``, ``I``, ``F``) are scaled
  to 8 bits by their range (not clipped); images with alpha (``RGBA``, ``LA``, ``P`` with
  transparency) are composited on white; palette and other colour modes become ``RGB``;
* EXIF orientation is applied (``ImageOps.exif_transpose``);
* JPEGs are decoded at a reduced scale (``Image.draft``) when much larger than needed;
  images above ``max_pixels`` are skipped as ``too_large`` before any decoding;
* squaring: the shorter side is resized to ``size`` and the longer side centre-cropped, the
  crop taken first so memory stays bounded for any aspect ratio.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "Decoded",
    "Header",
    "decode_array",
    "decode_file",
    "fit_square",
    "is_image_name",
    "read_header",
]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
MAX_PIXELS = 80_000_000
"""Images with more pixels than this (e.g. 9000x9000) are skipped as decompression bombs."""

_GRAY_TOLERANCE = 3
"""Max channel difference for an RGB pixel to count as gray (JPEG chroma noise)."""


def is_image_name(path: Path) -> bool:
    """Whether a file name looks like an image we can decode (not hidden, known extension)."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Header:
    """What an image file says about itself without decoding its pixels."""

    width: int
    height: int
    mode: str


@dataclass(frozen=True)
class Decoded:
    """One decoded image: a square uint8 array plus facts for the profile."""

    array: np.ndarray
    """``(size, size, 1)`` for gray sources, ``(size, size, 3)`` otherwise."""
    width: int
    height: int
    mode: str
    gray: bool
    digest: str


def _open(path: Path, max_pixels: int) -> Image.Image | tuple[str, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        return "too_large", str(exc)
    except UnidentifiedImageError:
        return "corrupt", "not a readable image (unknown or damaged format)"
    except Exception as exc:  # noqa: BLE001 - any PIL failure is a bad file, not our crash
        return "corrupt", f"{type(exc).__name__}: {exc}"
    w, h = img.size
    if w <= 0 or h <= 0:
        img.close()
        return "corrupt", f"invalid size {w}x{h}"
    if w * h > max_pixels:
        img.close()
        return "too_large", f"{w}x{h} exceeds {max_pixels} pixels"
    return img


def read_header(path: Path, max_pixels: int = MAX_PIXELS) -> Header | tuple[str, str]:
    """Size and mode from the file header, or ``(reason, detail)`` if it cannot be opened."""
    opened = _open(path, max_pixels)
    if isinstance(opened, tuple):
        return opened
    with opened:
        w, h = opened.size
        mode = opened.mode
        try:  # EXIF rotation swaps the sides the user will see
            orientation = opened.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001
            orientation = 1
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return Header(w, h, mode)


def _scale_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    a = a.astype(np.float64)
    hi = float(a.max()) if a.size else 0.0
    if mode.startswith("I;16"):
        scale = 65535.0
    elif mode == "F":
        scale = 1.0 if hi <= 1.0 else (255.0 if hi <= 255.0 else hi)
    else:
        scale = 255.0 if hi <= 255.0 else (65535.0 if hi <= 65535.0 else hi)
    return np.clip(np.rint(a * (255.0 / max(scale, 1e-12))), 0, 255).astype(np.uint8)


def normalize_mode(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to ``L`` or ``RGB`` (see the module docstring for the rules)."""
    mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        gray = mode in ("LA", "La", "L")
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("L" if gray else "RGB")
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(img), mode), "L")
    return img.convert("RGB")


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop the longer one.

    The centre square is cut from the source first and only it is resized, so the memory
    used is bounded by the source plus ``size`` x ``size`` whatever the aspect ratio (an
    8000x1 strip is never upscaled to 1,280,000x160 first).
    """
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    box = (left, top, left + side, top + side)
    if side == size and (w, h) == (size, size):
        return img
    if side > size:
        return img.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=box)


def _finish(img: Image.Image, size: int, width: int, height: int, mode: str) -> Decoded:
    digest = hashlib.blake2b(img.tobytes(), digest_size=16)
    digest.update(f"{img.mode}{img.size}".encode())
    square = np.asarray(fit_square(img, size), dtype=np.uint8)
    if square.ndim == 2:
        return Decoded(square[:, :, None].copy(), width, height, mode, True, digest.hexdigest())
    spread = square.max(axis=2).astype(np.int16) - square.min(axis=2)
    gray = bool(spread.max() <= _GRAY_TOLERANCE) if square.size else True
    return Decoded(np.ascontiguousarray(square), width, height, mode, gray, digest.hexdigest())


def decode_file(path: Path, size: int, max_pixels: int = MAX_PIXELS) -> Decoded | tuple[str, str]:
    """Decode ``path`` into a ``size`` x ``size`` uint8 array, or ``(reason, detail)``."""
    opened = _open(path, max_pixels)
    if isinstance(opened, tuple):
        return opened
    try:
        with opened as img:
            mode = img.mode
            if img.format == "JPEG" and min(img.size) > 2 * size:
                img.draft("RGB" if mode not in ("L", "1") else "L", (size, size))
            img.load()
            try:
                upright = ImageOps.exif_transpose(img) or img
            except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the image
                upright = img
            normal = normalize_mode(upright)
            width, height = normal.size
            return _finish(normal, size, width, height, mode)
    except Image.DecompressionBombError as exc:
        return "too_large", str(exc)
    except Exception as exc:  # noqa: BLE001 - truncated / damaged data is a skip, not a crash
        return "corrupt", f"{type(exc).__name__}: {exc}"


def decode_array(array: np.ndarray, size: int) -> Decoded:
    """Square an in-memory uint8 image ``(H, W)`` or ``(H, W, C)`` (torchvision sources)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    img = Image.fromarray(np.ascontiguousarray(array))
    img = normalize_mode(img)
    return _finish(img, size, img.size[0], img.size[1], img.mode)
