"""A user's own picture turned into the network's input, the way the dataset's own images were made.

`to_input` takes a path, a file object, bytes or a PIL image of any size, colour or polarity: for
MNIST it makes a centred 20x20 digit as MNIST did, for Fashion-MNIST a 28x28 product on black.
"""

import io

import numpy as np
import torch

import data


class ImageError(ValueError):
    """A user's image could not be turned into an input for the network."""


def open_grey(source, max_pixels=None):
    """Open an image (a path, a file object, bytes or a PIL image) as a grey array (uint8, or float for
    16-bit and float images), and whether it is an alpha mask (larger = ink) rather than a picture.
    `max_pixels` refuses larger images before their pixels are decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        if isinstance(source, bytes | bytearray):
            source = io.BytesIO(source)
        image = source if isinstance(source, Image.Image) else Image.open(source)
        if max_pixels and image.width * image.height > max_pixels:
            raise ImageError(f"the image is too large ({image.width}x{image.height} pixels, over the limit of "
                             f"{max_pixels:,}); send a smaller picture")
        if image.format != "PNG" or "exif" in image.info:  # reading EXIF costs as much as the rest here
            image = ImageOps.exif_transpose(image)
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as e:
        reason = "not an image Pillow can read" if isinstance(e, UnidentifiedImageError) else str(e)
        raise ImageError(f"cannot read image: {reason}") from None
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else image.convert("RGBA").getchannel("A")
        alpha = np.asarray(alpha)
        if alpha.min() < 128:
            # Strokes on a transparent background: what is opaque is the ink, whatever its colour.
            return alpha, True
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(image, dtype=np.float32), False
    return np.asarray(image.convert("L")), False


def crop_to_ink(grey, is_alpha_ink, min_contrast=0.05, threshold=0.2):
    """What differs from the background (light on dark, scaled to [0, 1]), cropped to where it passes
    `threshold`. The background is the median of the border; a light one means dark ink."""
    if grey.ndim != 2 or grey.size == 0:
        raise ImageError("cannot read image: it has no pixels")
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    darkest, lightest = float(grey.min()), float(grey.max())
    dark_ink = not is_alpha_ink and background > (darkest + lightest) / 2
    peak = background - darkest if dark_ink else lightest - background
    full_scale = 65535.0 if (lightest - darkest if dark_ink else lightest) > 255 else 255.0
    if peak < min_contrast * full_scale:
        raise ImageError("nothing found: the image is blank (or has almost no contrast)")
    # Crop first, so that the float arithmetic below touches only the box.
    inked = grey < background - threshold * peak if dark_ink else grey > background + threshold * peak
    rows, cols = np.flatnonzero(inked.any(1)), np.flatnonzero(inked.any(0))
    box = grey[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32)
    ink = background - box if dark_ink else box - background
    return np.clip(ink, 0, None) / peak


def fit(ink, size):
    """The ink resized (keeping its aspect ratio) so that its longer side is `size` pixels."""
    from PIL import Image

    height, width = ink.shape
    factor = size / max(height, width)
    shape = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.clip(np.asarray(Image.fromarray(ink).resize(shape, Image.Resampling.LANCZOS), dtype=np.float32), 0, 1)


def image_to_mnist(source, min_contrast=0.05, max_pixels=None):
    """Turn any digit picture into a normalized MNIST input [1, 28, 28], the way MNIST was made.

    Grey, digit light on dark (inverted when the border is light), cropped to its ink, scaled to
    fit 20x20 keeping its aspect ratio, then placed in 28x28 with its centre of mass at the centre.
    Raises ImageError for an unreadable file, one over `max_pixels`, or an image with no visible digit.
    """
    try:
        small = fit(crop_to_ink(*open_grey(source, max_pixels), min_contrast), 20)
    except ImageError as e:
        raise ImageError(str(e).replace("nothing found", "no digit found")) from None
    canvas = np.zeros((28, 28), dtype=np.float32)
    ys, xs = np.indices(small.shape)
    total = small.sum()
    top = int(np.clip(round(14 - (ys * small).sum() / total), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - (xs * small).sum() / total), 0, 28 - small.shape[1]))
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return data.normalize(torch.from_numpy(canvas)[None, None], data.MNIST)[0]


def image_to_fashion(source, min_contrast=0.05, max_pixels=None):
    """Turn a product photo into a normalized Fashion-MNIST input [1, 28, 28], as Xiao et al. made theirs:
    trimmed to the product, its longer side scaled to 28 pixels, centred, light on black."""
    small = fit(crop_to_ink(*open_grey(source, max_pixels), min_contrast, threshold=0.05), 28)
    canvas = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return data.normalize(torch.from_numpy(canvas)[None, None], data.FASHION_MNIST)[0]


def to_input(source, dataset=data.MNIST, max_pixels=None):
    """The network's input [1, 28, 28] for a picture, prepared as `dataset`'s own images were."""
    prepare = image_to_fashion if dataset is data.FASHION_MNIST else image_to_mnist
    return prepare(source, max_pixels=max_pixels)
