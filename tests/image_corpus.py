"""A corpus of image files as people have them, generated with Pillow (nothing committed), and an independent
reference of what a viewer shows for each: Pillow's own `ImageOps.exif_transpose` and `Image.alpha_composite`.

Every file hides a trap under its visible content: colour stored under fully transparent pixels, pixels
stored sideways with an EXIF orientation, 16-bit values above 255, a second animation frame in another colour.
"""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps

SIZE = (40, 28)  # not square, so that a rotation shows in the shape
HIDDEN = (200, 20, 160)  # the colour under transparent pixels: what convert("RGB") wrongly shows


@dataclass(frozen=True)
class CorpusFile:
    name: str
    data: bytes
    fixes: frozenset[str]


def _scene(mode: str = "RGB") -> Image.Image:
    """A picture with an asymmetric mark (a rotation or mirror moves it)."""
    image = Image.new("RGB", SIZE, (30, 90, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle((2, 2, 14, 10), fill=(250, 220, 30))
    draw.ellipse((22, 12, 36, 25), fill=(20, 160, 60))
    return image.convert(mode)


def _cut_out() -> Image.Image:
    """RGBA: an item on a transparent background, with the hidden colour under alpha 0 and a soft edge."""
    rgba = _scene("RGBA")
    alpha = Image.new("L", SIZE, 0)
    ImageDraw.Draw(alpha).ellipse((4, 3, 35, 24), fill=255)
    alpha.paste(128, (4, 12, 36, 14))  # a semi-transparent band
    hidden = Image.new("RGBA", SIZE, (*HIDDEN, 255))
    rgba = Image.composite(rgba, hidden, alpha)
    rgba.putalpha(alpha)
    return rgba


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _frames(mode: str) -> list[Image.Image]:
    first = _cut_out() if mode == "RGBA" else _scene(mode)
    second = Image.new(first.mode, SIZE, (255, 0, 0, 255) if mode == "RGBA" else (255, 0, 0))
    return [first, second]


def image_corpus() -> list[CorpusFile]:
    """One file of every mode, orientation and animation that `slip_hf.viewed_image` handles."""
    files = [CorpusFile("rgb.jpg", _encode(_scene(), "JPEG", quality=95), frozenset())]
    cut_out = _cut_out()
    files.append(CorpusFile("rgba.png", _encode(cut_out, "PNG"), frozenset({"transparency_flattened"})))
    files.append(CorpusFile("la.png", _encode(cut_out.convert("LA"), "PNG"), frozenset({"transparency_flattened"})))
    palette = cut_out.convert("RGB").quantize(16)
    index = palette.getpixel((0, 0))  # a corner: outside the ellipse, the hidden colour
    palette.info["transparency"] = bytes(255 if i != index else 0 for i in range(16))  # tRNS bytes
    files.append(CorpusFile("p-trns.png", _encode(palette, "PNG"), frozenset({"transparency_flattened"})))
    files.append(CorpusFile("p-transparent-index.gif", _encode(palette, "GIF", transparency=index),
                            frozenset({"transparency_flattened"})))
    grey16 = Image.fromarray((np.linspace(0, 65535, SIZE[0] * SIZE[1]).reshape(SIZE[1], SIZE[0])).astype(np.uint16))
    files.append(CorpusFile("grey16.png", _encode(grey16, "PNG"), frozenset({"high_bit_depth_scaled"})))
    files.append(CorpusFile("cmyk.jpg", _encode(_scene("CMYK"), "JPEG", quality=95), frozenset({"colour_converted"})))
    for orientation in range(1, 9):
        fixes = frozenset({"exif_rotated"}) if orientation > 1 else frozenset()
        files.append(CorpusFile(f"exif{orientation}.jpg", _encode(_scene(), "JPEG", quality=95, exif=_exif(orientation)), fixes))
        files.append(CorpusFile(f"exif{orientation}.webp", _encode(_scene(), "WEBP", lossless=True, exif=_exif(orientation)), fixes))
    first, *rest = _frames("RGBA")
    animated = frozenset({"animation_first_frame", "transparency_flattened"})
    files.append(CorpusFile("animated.gif", _encode(first.convert("RGB").quantize(32), "GIF", save_all=True,
                                                    append_images=[f.convert("RGB").quantize(32) for f in rest], duration=100,
                                                    disposal=2), frozenset({"animation_first_frame"})))
    files.append(CorpusFile("animated.webp", _encode(first, "WEBP", save_all=True, append_images=rest, lossless=True,
                                                     duration=100), animated))
    files.append(CorpusFile("animated.png", _encode(first, "PNG", save_all=True, append_images=rest, duration=100,
                                                    disposal=1), animated))  # APNG, disposal to background
    return files


def reference_view(data: bytes, background=(255, 255, 255)) -> np.ndarray:
    """What a viewer shows, built from Pillow's own pieces, independently of slip_hf: `(H, W, 3)` uint8."""
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        frame = ImageOps.exif_transpose(image)
        if frame.mode.startswith("I;16"):
            values = np.asarray(frame).astype(np.float64)
            return np.repeat(np.rint(values / 257).astype(np.uint8)[..., None], 3, axis=2)
        if frame.mode == "CMYK":
            return np.asarray(frame.convert("RGB"))
        rgba = frame.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))


def plain_rgb(data: bytes) -> np.ndarray:
    """What `convert("RGB")` alone gives (the bug), for showing that a test would see it."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
