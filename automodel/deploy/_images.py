"""Images to predict, decoded exactly as the data layer stored the training images.

Files go through :func:`automodel.data.decode_file` (EXIF rotation, modes, alpha on white, the
shorter side resized to the run's ``stored_size`` and the longer one centre-cropped); arrays and
PIL images through :func:`automodel.data.decode_array`. A file that cannot be read is a counted
skip with its reason, never a traceback. A gray run (``in_chans`` 1) stores the rounded mean of
the three channels, as :func:`automodel.data.prepare_dataset` does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import structlog
from PIL import Image

from automodel.data import IMAGE_EXTENSIONS, decode_array, decode_file, is_image_name

__all__ = ["ImageBatch", "ImageInput", "Skipped", "decode_images", "expand_inputs", "find_images", "to_model_input"]

log = structlog.get_logger(__name__)

ImageInput = Union[str, "os.PathLike[str]", np.ndarray, Image.Image]
"""A path to an image file, a uint8 ``(H, W)``/``(H, W, C)`` array (C = 1, 3 or 4, RGB order), or a PIL image."""


@dataclass(frozen=True)
class Skipped:
    """An input that was not predicted, and why."""

    name: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class ImageBatch:
    """Decoded images ``x`` ``(N, S, S, C)`` uint8, their names, and what was skipped."""

    names: list[str]
    x: np.ndarray
    skipped: list[Skipped] = field(default_factory=list)


def find_images(inputs: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Skipped]]:
    """Image files among ``inputs``: files as given, folders searched recursively in sorted order.

    Skipped, with the reason: files in a folder without an image extension (``not_image``; hidden
    ones are ignored), a folder with no image file (``no_images``), a path that does not exist
    (``missing``).
    """
    files: list[Path] = []
    skipped: list[Skipped] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = 0
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if any(part.startswith(".") for part in child.relative_to(path).parts):
                    continue
                if is_image_name(child):
                    files.append(child)
                    found += 1
                else:
                    skipped.append(Skipped(str(child), "not_image", f"extension {child.suffix or '(none)'!r}"))
            if not found:
                skipped.append(Skipped(str(path), "no_images", "the folder and its subfolders hold no file named "
                                       f"*{', *'.join(sorted(IMAGE_EXTENSIONS))}"))
        elif path.is_file():
            files.append(path)
        else:
            skipped.append(Skipped(str(path), "missing", "no such file or folder"))
    return files, skipped


def expand_inputs(given: Sequence[ImageInput]) -> tuple[list[ImageInput], list[str], list[Skipped]]:
    """Items to decode, their names, and skips: paths through :func:`find_images` (a folder expands in
    place, input order is kept), arrays and PIL images as they are (named ``#<position>``)."""
    items: list[ImageInput] = []
    names: list[str] = []
    skipped: list[Skipped] = []
    for i, item in enumerate(given):
        if isinstance(item, (str, os.PathLike)):
            files, not_images = find_images([item])
            items += files
            names += [str(f) for f in files]
            skipped += not_images
        else:
            items.append(item)
            names.append(f"#{i}")
    return items, names, skipped


def _array_of(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        mode = image.mode
        if mode not in ("L", "RGB", "RGBA"):
            has_alpha = mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        return np.asarray(image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 array, got {array.dtype} (scale to 0..255 and convert first)")
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4) or array.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) array with C in 1, 3 or 4, got shape {array.shape}")
    if min(array.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {array.shape}")
    return array


def decode_images(items: Sequence[ImageInput], size: int, in_chans: int, *,
                  names: Sequence[str] | None = None) -> ImageBatch:
    """Decode ``items`` to ``(N, size, size, in_chans)`` uint8; unreadable ones become :class:`Skipped`."""
    out = np.empty((len(items), size, size, 3), dtype=np.uint8)
    kept: list[str] = []
    skipped: list[Skipped] = []
    for i, item in enumerate(items):
        name = names[i] if names is not None else (str(item) if isinstance(item, (str, os.PathLike)) else f"#{i}")
        if isinstance(item, (str, os.PathLike)):
            res: Any = decode_file(Path(item), size)
        else:
            try:
                res = decode_array(_array_of(item), size)
            except (ValueError, TypeError, OSError) as exc:
                res = ("unsupported", str(exc))
        if isinstance(res, tuple):
            skipped.append(Skipped(name, res[0], res[1]))
            log.warning("image_skipped", image=name, reason=res[0], detail=res[1][:200])
            continue
        out[len(kept)] = res.array  # (S, S, 1) broadcasts to three channels, as in the data layer
        kept.append(name)
    x = out[: len(kept)]
    if in_chans == 1:
        x = np.rint(x.mean(axis=3, keepdims=True)).astype(np.uint8)
    return ImageBatch(kept, np.ascontiguousarray(x), skipped)


def to_model_input(items: Sequence[ImageInput], size: int, channels: int) -> tuple[np.ndarray, list[Skipped]]:
    """What an exported model takes: uint8 ``(N, channels, size, size)``, decoded as the run stored its images.

    ``size`` and ``channels`` are in the model card and ``model.json`` (``input``).
    """
    batch = decode_images(items, size, channels)
    return np.ascontiguousarray(batch.x.transpose(0, 3, 1, 2)), batch.skipped

