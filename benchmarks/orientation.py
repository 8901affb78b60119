"""A seeded dSprites-style orientation task where a horizontal flip changes the label.

Each image shows one 'F' glyph drawn at one of four rotations (0/90/180/270 degrees),
plain or mirrored: 8 classes. The horizontal mirror of every class is another class
(``F`` at 90 degrees mirrored is the mirrored ``F`` at 270 degrees), so a recipe that
augments with random horizontal flips teaches the model to confuse class pairs.

Nuisance factors, all seeded: glyph scale, position, a few degrees of rotation jitter,
stroke and background intensity, Gaussian pixel noise. Class folders get neutral names
(``c0`` ... ``c7``) so nothing but the pixels (and an optional description) tells a
model or an agent what the classes mean; ``classes.json`` holds the key.

    python -m benchmarks.orientation OUT_DIR --train 2000 --test 800 --size 32
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CLASSES", "DESCRIPTION", "render", "write_orientation_task"]

CLASSES: list[tuple[bool, int]] = [(mirrored, rot) for mirrored in (False, True) for rot in (0, 90, 180, 270)]
"""Class index -> (mirrored, rotation in degrees)."""
DESCRIPTION = (
    "Synthetic glyphs: a letter F drawn at one of four rotations, plain or mirrored. The class is the "
    "glyph's orientation and handedness, so a mirror image belongs to a different class."
)
# The F on a 4 x 5 unit grid as rectangles (x0, y0, x1, y1), y pointing down.
_F_RECTS = [(0.0, 0.0, 1.0, 5.0), (0.0, 0.0, 4.0, 1.0), (0.0, 2.0, 3.0, 3.0)]
_F_CENTER = (2.0, 2.5)
_SUPERSAMPLE = 4


def _flip_partner(k: int) -> int:
    """The class a horizontal flip turns class ``k`` into."""
    mirrored, rot = CLASSES[k]
    return CLASSES.index((not mirrored, (360 - rot) % 360))


def render(k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``size`` x ``size`` uint8 grayscale image of class ``k`` with seeded jitter."""
    mirrored, rot = CLASSES[k]
    big = size * _SUPERSAMPLE
    scale = rng.uniform(0.09, 0.14) * big  # pixels per glyph unit: the glyph spans 45-70 % of the side
    angle = math.radians(rot + rng.uniform(-8.0, 8.0))
    cx = big / 2 + rng.uniform(-0.12, 0.12) * big
    cy = big / 2 + rng.uniform(-0.12, 0.12) * big
    cos, sin = math.cos(angle), math.sin(angle)
    bg, fg = rng.uniform(0, 90), rng.uniform(160, 255)
    canvas = Image.new("L", (big, big), color=int(bg))
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1 in _F_RECTS:
        corners = []
        for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)):
            u, v = x - _F_CENTER[0], y - _F_CENTER[1]
            if mirrored:
                u = -u
            # Rotate counter-clockwise on screen (y points down).
            ru, rv = u * cos + v * sin, -u * sin + v * cos
            corners.append((cx + ru * scale, cy + rv * scale))
        draw.polygon(corners, fill=int(fg))
    img = np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)
    img += rng.normal(0.0, rng.uniform(4.0, 16.0), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_orientation_task(out: Path, *, n_train: int, n_test: int, size: int = 32, seed: int = 0) -> Path:
    """Write ``out/train/c<k>/*.png`` and ``out/test/c<k>/*.png`` (labelled); reuse an existing copy.

    Classes are balanced; ``out/classes.json`` records what each class is and its flip partner.
    """
    out = Path(out)
    marker = out / "classes.json"
    setting = {"n_train": n_train, "n_test": n_test, "size": size, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()).get("setting") == setting:
        return out
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for k in range(len(CLASSES)):
            folder = out / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.png"):
                old.unlink()
        labels = np.arange(n) % len(CLASSES)
        rng.shuffle(labels)
        for i, k in enumerate(labels.tolist()):
            Image.fromarray(render(k, size, rng)).save(out / split / f"c{k}" / f"{split}_{i:05d}.png")
    key = {
        f"c{k}": {"mirrored": m, "rotation_deg": r, "hflip_becomes": f"c{_flip_partner(k)}"}
        for k, (m, r) in enumerate(CLASSES)
    }
    marker.write_text(json.dumps({"setting": setting, "classes": key, "description": DESCRIPTION}, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=800)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_orientation_task(args.out, n_train=args.train, n_test=args.test, size=args.size, seed=args.seed))


if __name__ == "__main__":
    main()
