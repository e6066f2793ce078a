"""A small synthetic dataset in the Fruits-360 layout: 100x100 JPEGs of coloured fruit-like shapes."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fruitlake import FruitlakeError

CLASS_NAMES = (
    "Apple Braeburn", "Banana", "Kiwi", "Lemon", "Orange", "Pear Conference", "Plum", "Strawberry",
    "Cherry Rainier", "Grape White", "Mango", "Peach", "Pineapple Mini", "Pomegranate", "Raspberry", "Watermelon",
)
SIZE = 100


def class_name(index: int) -> str:
    return CLASS_NAMES[index] if index < len(CLASS_NAMES) else f"Fruit {index + 1}"


def draw_fruit(class_index: int, n_classes: int, rng: np.random.Generator) -> Image.Image:
    """One photo-like image: a shaded blob whose hue and shape depend on the class, on a light background."""
    hue = (class_index / max(n_classes, 1) + rng.normal(0, 0.01)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75 + rng.uniform(-0.1, 0.1), 0.85 + rng.uniform(-0.1, 0.1))
    background = tuple(int(v) for v in rng.integers(225, 256, size=3))
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    aspect = 0.55 + 0.9 * ((class_index * 7) % 5) / 4  # elongated (banana-like) to wide
    radius = rng.uniform(26, 38)
    cx, cy = SIZE / 2 + rng.normal(0, 4), SIZE / 2 + rng.normal(0, 4)
    half_w, half_h = radius * min(aspect, 1.0), radius / max(aspect, 1.0)
    colour = (int(r * 255), int(g * 255), int(b * 255))
    draw.ellipse([cx - half_w, cy - half_h, cx + half_w, cy + half_h], fill=colour)
    highlight = tuple(min(255, c + 60) for c in colour)
    draw.ellipse([cx - half_w * 0.5, cy - half_h * 0.6, cx - half_w * 0.1, cy - half_h * 0.2], fill=highlight)
    if class_index % 3 == 0:  # a stem on some classes
        draw.line([cx, cy - half_h, cx + 4, cy - half_h - 10], fill=(90, 60, 20), width=3)
    noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, size=(SIZE, SIZE, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)


def write_sample_data(root: str | Path, classes: int = 5, per_class: int = 40, seed: int = 0,
                      test_fraction: float = 0.25) -> int:
    """Writes `classes * per_class` JPEGs under root/Training|Test/<Label>/; returns how many. A `root` that holds
    anything is refused: its photos would be overwritten or mixed with generated ones."""
    if classes < 1 or per_class < 1:
        raise FruitlakeError(f"--classes {classes} and --per-class {per_class} must each be at least 1")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FruitlakeError(f"DIR {str(root)!r} is a file; give a new or empty folder")
    if root.exists() and any(root.iterdir()):
        raise FruitlakeError(f"DIR {str(root)!r} is not empty; give a new or empty folder for the sample images")
    rng = np.random.default_rng(seed)
    written = 0
    for c in range(classes):
        label = class_name(c)
        n_test = int(round(per_class * test_fraction))
        for i in range(per_class):
            split = "Test" if i < n_test else "Training"
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            draw_fruit(c, classes, rng).save(folder / f"{i}_100.jpg", quality=90)
            written += 1
    return written
