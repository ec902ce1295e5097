"""Realistic inputs for the OCR models: rendered text lines on varied backgrounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_FONT_FOLDERS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts"))
_WORDS = ("invoice total amount date paid receipt 2026 order number customer address street city "
          "eightbit quantized model integer float speed accuracy table page section figure Zürich 42.50 "
          "ABC-123 hello world").split()


def _fonts() -> list[Path]:
    for folder in _FONT_FOLDERS:
        found = sorted(folder.rglob("DejaVu*.ttf")) if folder.exists() else []
        if found:
            return found
    raise RuntimeError("no DejaVu fonts found; install fonts-dejavu-core")


def rendered_text_images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """[count, 3, height, width] float32 RGB images of text, normalized to [-1, 1]."""
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    images = np.empty((count, 3, height, width), dtype=np.float32)
    for index in range(count):
        background = tuple(int(v) for v in rng.integers(170, 256, 3))
        image = Image.new("RGB", (width, height), background)
        draw = ImageDraw.Draw(image)
        lines = 1 if height < 64 else int(rng.integers(3, 8))
        for line in range(lines):
            size = int(rng.integers(int(height * 0.5), int(height * 0.8))) if lines == 1 else int(rng.integers(14, 30))
            font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
            text = " ".join(rng.choice(_WORDS, int(rng.integers(1, 5))))
            x = int(rng.integers(0, max(1, width // 4)))
            if lines == 1:
                y = int(rng.integers(0, max(1, height - size)))
            else:
                y = int(line * height / lines + rng.integers(0, 8))
            colour = tuple(int(v) for v in rng.integers(0, 90, 3))
            draw.text((x, y), text, fill=colour, font=font)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        images[index] = ((pixels - 0.5) / 0.5).transpose(2, 0, 1)
    return images
