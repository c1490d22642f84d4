"""An image as a person sees it: one RGB image from any file that Pillow decodes.

`image.convert("RGB")` is not what a viewer shows. It keeps whatever colour is stored under transparent
pixels, ignores the EXIF orientation that phones write instead of rotating pixels, and clips 16-bit
greyscale to white. [`viewed_image`] does what an image viewer does, in this order:

| what the file holds | what a person sees | counted as |
|---|---|---|
| an animation (GIF, APNG, WebP) | its first frame, as Pillow composes it | `animation_first_frame` |
| EXIF orientation 2-8 | the pixels turned and mirrored upright (`ImageOps.exif_transpose`) | `exif_rotated` |
| 16-bit greyscale (`I;16*`), 32-bit integer (`I`) with values in 0..65535 | scaled to 8 bits (÷ 257), not clipped | `high_bit_depth_scaled` |
| 32-bit float (`F`) with values in 0..1 | scaled to 8 bits (× 255) | `high_bit_depth_scaled` |
| any transparency (RGBA, LA, PA, La, RGBa, P or L or RGB with a transparency index or bytes, GIF's transparent index, semi-transparent edges) | composited onto the background (white unless chosen), only where some pixel is not opaque | `transparency_flattened` |
| CMYK, YCbCr, LAB, HSV | converted to RGB | `colour_converted` |

A broken EXIF block counts as no orientation, as image viewers read it. `I` images outside 0..65535 and `F`
images outside 0..1 have no one reading a person would agree on, so they are
refused by name (`unsupported_image`) rather than guessed. Files that no decoder reads keep their statuses:
`not_image` (not an image format) and `corrupt_image` (a known format that fails to decode); an image with
more pixels than `PIL.Image.MAX_IMAGE_PIXELS` is refused as `decompression_bomb` before its pixels are
decoded (Pillow's own warning for it is then silenced, since the refusal names it).

The builder, `import-graph`, training (both image paths), evaluation, the Space, ARO and the structure
benchmark all call this module; `VIEW_VERSION` goes into the key of every stored image, so that a rebuild after
a change here decodes the sources again.
"""

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

VIEW_VERSION = 1
"""Version of what [`viewed_image`] does; stored images made by another version are decoded again."""

WHITE = (255, 255, 255)

FIXES = ("animation_first_frame", "exif_rotated", "high_bit_depth_scaled", "transparency_flattened", "colour_converted")
"""What [`viewed_image`] may do to an image, as named in build tables and `stats/<config>.json`."""

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_COLOUR_MODES = ("CMYK", "YCbCr", "LAB", "HSV")

# The refusal below names these images (`decompression_bomb`), so Pillow's warning would only repeat it, in the
# middle of a progress bar. A broken EXIF block is read as no orientation, as viewers do, without a warning each.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)


class ImageRefused(ValueError):
    """An image that is not stored or used, with its status: `not_image`, `corrupt_image`, `decompression_bomb`
    or `unsupported_image`.

    Args:
        status (`str`): one of those four, as the build tables and the download log count it.
        message (`str`): one line saying what was wrong with the file.
    """

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def open_image(image: Any) -> Image.Image:
    """A decoded PIL image from what a dataset or a user holds: a PIL image, a `datasets.Image(decode=False)` value
    (`{"bytes": ..., "path": ...}`), encoded bytes, a path or a file object.

    Args:
        image (`PIL.Image.Image | dict | bytes | str | os.PathLike | BinaryIO`): the image, in any of those forms;
            a PIL image is returned as it is.

    Returns:
        PIL.Image.Image: the opened image, in its own mode (no orientation, transparency or bit-depth fix: that
            is [`viewed_image`]).

    Raises:
        ImageRefused: (a `ValueError`) with status `not_image`, `corrupt_image` or `decompression_bomb` (more
            pixels than `PIL.Image.MAX_IMAGE_PIXELS`, checked before decoding).
    """
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, dict):
        image = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image["path"]
    elif isinstance(image, (bytes, bytearray)):
        image = io.BytesIO(image)
    try:
        opened = Image.open(image)
    except UnidentifiedImageError as error:
        raise ImageRefused("not_image", f"image cannot be decoded: not an image format Pillow reads ({error}).") from error
    except Image.DecompressionBombError as error:
        raise ImageRefused("decompression_bomb", f"image refused as a decompression bomb ({error}).") from error
    except (OSError, SyntaxError, ValueError) as error:  # a missing file too: the message names it
        raise ImageRefused("corrupt_image", f"image cannot be decoded ({error}).") from error
    pixels = opened.width * opened.height
    if Image.MAX_IMAGE_PIXELS is not None and pixels > Image.MAX_IMAGE_PIXELS:
        raise ImageRefused("decompression_bomb", f"image refused as a decompression bomb: {opened.width} x {opened.height} "
                                                 f"= {pixels} pixels, more than {Image.MAX_IMAGE_PIXELS}.")
    try:
        opened.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # a cut-off file fails only when its pixels are read
        raise ImageRefused("corrupt_image", f"image cannot be decoded ({error}).") from error
    return opened


def _scaled_to_8_bits(image: Image.Image) -> Image.Image:
    values = np.asarray(image)
    if image.mode == "F":
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            raise ImageRefused("unsupported_image", f"a 32-bit float image with values outside 0..1 "
                                                    f"({float(np.nanmin(values)):g}..{float(np.nanmax(values)):g}) has no one 8-bit reading.")
        return Image.fromarray(np.rint(values * 255).astype(np.uint8), "L")
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageRefused("unsupported_image", f"a 32-bit integer image with values outside 0..65535 "
                                                f"({values.min()}..{values.max()}) has no one 8-bit reading.")
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")  # round(v / 257)


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def viewed_image(image: Any, background: Sequence[int] = WHITE) -> tuple[Image.Image, frozenset[str]]:
    """`(RGB image, fixes)`: the image as a viewer shows it, and which of `FIXES` that took.

    Args:
        image (`PIL.Image.Image | dict | bytes | str | os.PathLike | BinaryIO`): what [`open_image`] takes (a PIL
            image, bytes, a path, a `datasets` image value).
        background (`Sequence[int]` of length 3, *optional*, defaults to `(255, 255, 255)`): the `(r, g, b)` colour
            under transparent pixels.

    Returns:
        tuple[PIL.Image.Image, frozenset[str]]: the upright 8-bit RGB image, and the names of the fixes it took
            (`FIXES`: `exif_rotated`, `transparency_flattened`, `high_bit_depth_scaled`, `colour_converted`,
            `animation_first_frame`; empty for an upright opaque RGB image).

    Raises:
        ImageRefused: what cannot be decoded or has no 8-bit reading.

    Example:

    ```python
    >>> from PIL import Image
    >>> from slip_hf.viewed_image import viewed_image
    >>> cut_out = Image.new("RGBA", (8, 8), (200, 0, 0, 0))  # fully transparent red
    >>> rgb, fixes = viewed_image(cut_out)
    >>> rgb.getpixel((0, 0)), sorted(fixes)
    ((255, 255, 255), ['transparency_flattened'])

    ```
    """
    image = open_image(image)
    fixes = set()
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
        fixes.add("animation_first_frame")
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation in range(2, 9):
        image = ImageOps.exif_transpose(image)
        fixes.add("exif_rotated")
    if image.mode in (*_SIXTEEN_BIT_MODES, "I", "F"):
        image = _scaled_to_8_bits(image)
        fixes.add("high_bit_depth_scaled")
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] < 255:
            canvas = Image.new("RGBA", rgba.size, (*tuple(int(c) for c in background), 255))
            fixes.add("transparency_flattened")
            return Image.alpha_composite(canvas, rgba).convert("RGB"), frozenset(fixes)
        return rgba.convert("RGB"), frozenset(fixes)
    if image.mode in _COLOUR_MODES:
        fixes.add("colour_converted")
    return (image if image.mode == "RGB" else image.convert("RGB")), frozenset(fixes)


def viewed_rgb(image: Any, background: Sequence[int] = WHITE) -> Image.Image:
    """The RGB image of [`viewed_image`], without the fixes: what training, evaluation and the Space use.

    Args:
        image (`PIL.Image.Image | dict | bytes | str | os.PathLike | BinaryIO`): as [`viewed_image`] takes it.
        background (`Sequence[int]` of length 3, *optional*, defaults to `(255, 255, 255)`): the colour under
            transparent pixels.

    Returns:
        PIL.Image.Image: the upright 8-bit RGB image.
    """
    return viewed_image(image, background)[0]


__all__ = ["FIXES", "VIEW_VERSION", "WHITE", "ImageRefused", "open_image", "viewed_image", "viewed_rgb"]
