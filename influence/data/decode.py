"""PNG/JPEG bytes -> uint8 arrays, with bounds on what decoding may cost.

- Image.open reads only the header, so an image above MAX_IMAGE_PIXELS is skipped before it is decoded,
  and a source whose images hold more than MAX_SOURCE_PIXELS in all is refused before the rest is decoded
  (an 8192x8192 PNG is 65 KB on disk and 0.33 s of decoding).
- 16-bit grey PNGs (modes I;16*, and I from older Pillows) are scaled by their range, 0..65535 -> 0..255,
  not saturated as Pillow's own conversion does.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

MAX_IMAGE_PIXELS = 2**26  # ~67 MP: larger images are skipped before PIL decodes them
MAX_SOURCE_PIXELS = 2**32  # ~4.3 G pixels in all (a minute or so of decoding): larger sources are refused
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit grey PNGs, as Pillow versions open them
GREY_MODES = ("1", "L", "LA", "La", *SIXTEEN_BIT)
FORMATS = ("PNG", "JPEG")


@dataclass
class Header:
    width: int
    height: int
    mode: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


class NotAnImage(ValueError):
    """Why bytes are not a usable PNG/JPEG image (the reason is listed with the file)."""


def header(blob: bytes) -> Header:
    """Size and mode from the header only; NotAnImage when the bytes are not a PNG/JPEG or are too large."""
    try:
        with Image.open(io.BytesIO(blob), formats=FORMATS) as src:
            h = Header(src.width, src.height, src.mode)
    except UnidentifiedImageError:
        raise NotAnImage("not a PNG/JPEG image") from None
    except Exception as e:  # PIL raises many types on malformed headers (and its own bomb check)
        raise NotAnImage(f"not a readable PNG/JPEG image ({type(e).__name__}: {e})") from None
    if h.pixels > MAX_IMAGE_PIXELS:
        raise NotAnImage(f"{h.width}x{h.height} pixels exceeds the {MAX_IMAGE_PIXELS} pixel bound "
                         "(data.decode.MAX_IMAGE_PIXELS)")
    return h


class PixelBudget:
    """The pixels a source's images hold, counted from their headers; DataError past MAX_SOURCE_PIXELS."""

    def __init__(self, root):
        self.root, self.used = root, 0

    def add(self, h: Header) -> None:
        self.used += h.pixels
        if self.used > MAX_SOURCE_PIXELS:
            raise DataError(f"{self.root}: the images hold more than {MAX_SOURCE_PIXELS:.3g} pixels in all (the cap, "
                            "data.decode.MAX_SOURCE_PIXELS, bounds decoding to about a minute): use smaller images "
                            "or fewer of them")


def decode(blob: bytes, mode: str, size: int) -> np.ndarray:
    """uint8 (C, size, size), C = 1 for mode 'L', 3 for 'RGB'; NotAnImage on any decoding problem."""
    header(blob)  # the bounds, before any pixel is decoded
    try:
        with Image.open(io.BytesIO(blob), formats=FORMATS) as src:
            img = to_mode(src, mode).resize((size, size), Image.Resampling.BILINEAR)
    except Exception as e:  # PIL decoders raise many types on malformed input; none may stop the load
        raise NotAnImage(f"not a readable PNG/JPEG image ({type(e).__name__}: {e})") from None
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def to_mode(src: Image.Image, mode: str) -> Image.Image:
    """The image in 8-bit 'L' or 'RGB'; 16-bit grey is scaled by its range."""
    if src.mode in SIXTEEN_BIT:
        values = np.asarray(src, dtype=np.float64).clip(0, 65535)
        src = Image.fromarray(np.rint(values / 257.0).astype(np.uint8), "L")
    return src.convert(mode)


def has_colour(blob: bytes) -> bool:
    """Whether the image holds colour: a colour mode with some pixel whose channels differ (JPEG noise aside)."""
    with Image.open(io.BytesIO(blob), formats=FORMATS) as src:
        if src.mode in GREY_MODES:
            return False
        if src.mode == "P":
            palette = np.asarray(src.getpalette() or [], dtype=np.int16).reshape(-1, 3)
            if not len(palette) or (np.ptp(palette, axis=1) <= 2).all():
                return False
        rgb = np.asarray(src.convert("RGB"), dtype=np.int16)
    return bool((rgb.max(axis=2) - rgb.min(axis=2) > 8).mean() > 0.001)


def decode_image(blob: bytes, color: str, size: int) -> torch.Tensor:
    """One PNG/JPEG as the data sets hold their images: (C, size, size) float32 in [-1, 1] (color: gray or rgb);
    DataError when it cannot be read."""
    try:
        arr = decode(blob, "L" if color == "gray" else "RGB", size)
    except NotAnImage as e:
        raise DataError(f"cannot read the image: {e}") from None
    return torch.from_numpy(arr.copy()).float().div_(127.5).sub_(1.0)
