"""A user's own picture turned into the network's input, the way the dataset's own images were made.

`to_input` takes a path, a file object, bytes or a PIL image of any colour or polarity, up to 250
megapixels: for MNIST it makes a centred 20x20 digit as MNIST did, for Fashion-MNIST a 28x28 product on
black.
"""

import functools
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

import data

WORKING_SIDE = 256  # pictures are analysed at most this large: plenty for a digit, and quick
# Smaller pictures are enlarged to this first: at a few pixels a stroke, the paper's and the strokes'
# measures have nothing to work with (the 8x8 UCI digits of uci-tune: 90.9% as they are, 95.6% enlarged).
SMALLEST_SIDE = 112
# The largest picture opened (a 200-megapixel phone photo fits), checked before a pixel is decoded. It
# stands in for Pillow's own "decompression bomb" check, which warns from 89 megapixels and refuses
# from 179: not what a user's own large photo deserves.
LARGEST_PICTURE = 250_000_000
Image.MAX_IMAGE_PIXELS = None
# Ink fainter than this fraction of full contrast leaves a picture taken for blank.
MIN_CONTRAST = 0.05
# A damaged file makes Pillow warn about its metadata ("Truncated File Read", "Tag data larger than
# file"), lines of library noise among predict.py's one line per picture. The picture is read or
# refused on its own: the warning adds nothing.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


class ImageError(ValueError):
    """A user's image could not be turned into an input for the network."""


@functools.cache
def picture_extensions():
    """The file extensions of the formats Pillow opens (not those it only writes, such as PDF)."""
    return frozenset(ext for ext, name in Image.registered_extensions().items() if name in Image.OPEN)


def is_picture_file(path):
    """Whether `path` is a file with the extension of a format Pillow opens."""
    return Path(path).suffix.lower() in picture_extensions() and Path(path).is_file()


# The spread of grey levels (5th to 95th percentile) under which the opaque parts of a picture with
# transparency are taken for strokes of one colour.
ONE_COLOUR = 64


def declared_pixels(body):
    """How many pixels the header of an image's bytes declares (nothing is decoded), or 0 where it is no image."""
    try:
        width, height = Image.open(io.BytesIO(body)).size
    except Exception:  # noqa: BLE001  (open_grey says what is wrong with it, when it is read)
        return 0
    return width * height


def open_grey(source, max_pixels=None):
    """Open an image (a path, a file object, bytes or a PIL image) as a grey array (uint8, or float for
    16-bit and float images), and whether it is an alpha mask (larger = ink) rather than a picture.
    Images over `max_pixels` (default LARGEST_PICTURE) are refused before their pixels are decoded."""
    try:
        grey, is_alpha_ink = decode_grey(source, max_pixels or LARGEST_PICTURE)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("cannot read image: not an image Pillow can read") from None
    except OSError as e:  # one from the file system names the path, which the caller prints already
        raise ImageError(f"cannot read image: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001  (a damaged file makes Pillow raise many kinds: ValueError, SyntaxError, ...)
        raise ImageError(f"cannot read image: it is damaged ({type(e).__name__}: {e})") from None
    if grey.ndim != 2 or grey.size == 0:
        raise ImageError("cannot read image: it has no pixels")
    if not np.isfinite(grey).all():
        raise ImageError("cannot read image: some of its pixels are not numbers (NaN or infinite)")
    return grey, is_alpha_ink


def decode_grey(source, max_pixels):
    """open_grey's decoding, which may fail in whatever way Pillow does."""
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    opened = not isinstance(source, Image.Image)
    image = Image.open(source) if opened else source
    if image.width * image.height > max_pixels:
        raise ImageError(f"the image is too large ({image.width}x{image.height} pixels, over the limit of "
                         f"{max_pixels:,}); scale it down")
    if opened:
        # The JPEG decoder itself scales a big photo down by up to 8, never below WORKING_SIDE, where
        # the picture is analysed anyway: a phone photo is read about 5 times quicker. Others are as
        # they were.
        image.draft(image.mode, (WORKING_SIDE, WORKING_SIDE))
    if image.format != "PNG" or "exif" in image.info:  # reading EXIF costs as much as the rest here
        image = ImageOps.exif_transpose(image)
    image.load()
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        image = image.convert("RGBA")
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 128:
            opaque = np.asarray(image.convert("L"))[alpha >= 128]
            low, high = np.percentile(opaque, [5, 95]) if opaque.size else (0, 0)
            if high - low < ONE_COLOUR:
                # Strokes of one colour on a transparent background: what is opaque is the ink, whatever its colour.
                return alpha, True
            # Anything else with transparent parts (a card turned in an editor, a margin) is read as it looks on white.
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(image, dtype=np.float32), False
    if image.mode == "LAB":  # Pillow cannot convert it; its first band is the lightness
        return np.asarray(image.getchannel("L")), False
    return np.asarray(image.convert("L")), False


def white_of(grey):
    """The value white has in a grey picture from open_grey: 255, 65535 in a 16-bit one, and 1 in a float
    one in [0, 1], as numpy and scientific TIFFs keep them."""
    if grey.dtype == np.uint8:
        return 255.0
    lightest = float(grey.max())
    return 65535.0 if lightest > 255 else 1.0 if lightest <= 1 else 255.0


def border_of(grey):
    """The pixels along the picture's four edges: where the paper is, whatever the digit."""
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def crop_to_ink(grey, is_alpha_ink, threshold):
    """What differs from the background (light on dark, scaled to [0, 1]), cropped to where it passes
    `threshold`. The background is the median of the border; a light one means dark ink."""
    background = float(np.median(border_of(grey)))
    darkest, lightest = float(grey.min()), float(grey.max())
    dark_ink = not is_alpha_ink and background > (darkest + lightest) / 2
    peak = background - darkest if dark_ink else lightest - background
    if peak < MIN_CONTRAST * white_of(grey):
        raise ImageError("nothing found: the image is blank (or has almost no contrast)")
    # Crop first, so that the float arithmetic below touches only the box.
    inked = grey < background - threshold * peak if dark_ink else grey > background + threshold * peak
    rows, cols = np.flatnonzero(inked.any(1)), np.flatnonzero(inked.any(0))
    box = grey[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32)
    ink = background - box if dark_ink else box - background
    return np.clip(ink, 0, None) / peak


def fit(ink, size):
    """The ink resized (keeping its aspect ratio) so that its longer side is `size` pixels."""
    height, width = ink.shape
    factor = size / max(height, width)
    shape = (max(1, round(width * factor)), max(1, round(height * factor)))
    # reducing_gap: a box filter takes it to within twice the size first, Lanczos the rest (as good, 2x quicker).
    resized = Image.fromarray(ink).resize(shape, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 1)


# stroke_width() over MNIST's training digits: 10th percentile, 75th, 90th. A digit's strokes outside the
# 10th-90th band are brought to the 75th: a little bolder than MNIST's median (4.7) read better on the
# external tuning sets (99.56% against 99.46% of 2,700 pictures, seeds 0-4).
MNIST_STROKE = (4.15, 5.15, 5.66)
STROKE_WINDOW = 1.5  # on uneven paper, the paper is estimated over windows this many stroke_width()s wide
MAX_STROKE_LOOKS = 5  # stroke-sized looks at most, while the window keeps narrowing


def working_copy(grey):
    """The grey picture as floats in [0, 1], its longer side brought within [SMALLEST_SIDE, WORKING_SIDE]:
    shrunk by area, or enlarged with Lanczos (sharper strokes than bilinear or bicubic)."""
    # Never more blocks than the shorter side has pixels: a thin strip keeps its one row.
    white, blocks = white_of(grey), min(max(grey.shape) // WORKING_SIDE, min(grey.shape))
    if blocks >= 2:
        # Means of whole blocks first, straight from the picture's own integers: a 200-megapixel photo
        # never becomes floats whole (2.5 GB and 5 s; its edge loses less than a block).
        height, width = grey.shape[0] // blocks * blocks, grey.shape[1] // blocks * blocks
        grey = grey[:height, :width].reshape(height // blocks, blocks, width // blocks, blocks).mean((1, 3), np.float32)
    grey = grey.astype(np.float32) / white
    longer = max(grey.shape)
    factor = min(max(longer, SMALLEST_SIDE), WORKING_SIDE) / longer
    if factor != 1:
        size = (max(1, round(grey.shape[1] * factor)), max(1, round(grey.shape[0] * factor)))
        resample = Image.Resampling.BOX if factor < 1 else Image.Resampling.LANCZOS
        grey = np.clip(np.asarray(Image.fromarray(grey).resize(size, resample), dtype=np.float32), 0, 1)
    return grey


def block_means(a):
    """Means of the 2x2 blocks of `a`: a value a whole block reaches, unlike a lone noisy pixel's."""
    if min(a.shape) < 2:
        return a
    height, width = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    return (a[0:height:2, 0:width:2] + a[1:height:2, 0:width:2] + a[0:height:2, 1:width:2]
            + a[1:height:2, 1:width:2]) * 0.25


def paper_removed(grey, is_alpha_ink):
    """(ink, drawn): ink per pixel, light on dark, with the paper and its shading taken out (the paper
    near 0, its noise either side of it); and whether the picture is a digital drawing, its border all
    one exact colour.

    On an even background (a scan, a canvas) the paper is the border's median, and the ink is dark
    when the paper is nearer the picture's light end than its dark end. On uneven light, a shadow or a
    textured page the paper is estimated around every pixel (ink_on_uneven_paper), and which way the
    ink runs comes from ink_runs_dark.
    """
    if is_alpha_ink:
        return grey, True
    border = border_of(grey)
    drawn = bool(border.min() == border.max())
    low_end, paper, high_end = (border[0],) * 3 if drawn else np.percentile(border, [5, 50, 95])
    if high_end - low_end < 0.1 * max(paper, 0.05):  # an even background, even for a dark board
        blocks = grey if drawn else block_means(grey)  # a drawing has no noisy pixels to average away
        dark_ink = paper > (blocks.min() + blocks.max()) / 2
        return (paper - grey if dark_ink else grey - paper), drawn
    return ink_on_uneven_paper(grey, ink_runs_dark(grey)), False


def ink_runs_dark(grey):
    """Whether the ink of a picture on uneven paper is darker than the paper: from a median over a small
    copy of the picture, in windows so wide (two fifths of it) that even a bold digit is a minority in
    each. The departures from the median are mostly the ink's, and the sign that departs more (beyond
    noise) is its polarity."""
    small = grey
    while max(small.shape) > 80 and min(small.shape) >= 2:  # a picture one pixel thin cannot shrink
        small = block_means(small)
    window = max(3, round(max(small.shape) / 2.5) | 1)
    # A median of rows, then of columns: as good a paper level here as the square window's, 15x quicker.
    departures = small - ndimage.median_filter(ndimage.median_filter(small, (1, window)), (window, 1))
    return bool(np.clip(-departures - 0.05, 0, None).sum() > np.clip(departures - 0.05, 0, None).sum())


def ink_on_uneven_paper(grey, dark_ink):
    """Ink against the paper around every pixel (ink_against_paper): first over a third of the picture,
    wider than the boldest stroke; then, once the digit's stroke width is known from that first look,
    over STROKE_WINDOW stroke widths, which follows a textured or unevenly lit page closely enough that
    its grain is not taken for ink. Grain a wider look took for ink makes the strokes seem wider than
    they are, so it looks again while the window narrows."""
    paper_window = max(grey.shape) / 3
    ink = ink_against_paper(grey, dark_ink, paper_window)
    for _ in range(MAX_STROKE_LOOKS):
        width = STROKE_WINDOW * stroke_width(digit_mask(ink).astype(np.float32))
        if not 0 < width < paper_window or odd_window(width) == odd_window(paper_window):
            break  # no narrower window: the same look again would find the same ink
        paper_window = width
        ink = ink_against_paper(grey, dark_ink, paper_window)
    return ink


def odd_window(width):
    """The filter size for a window `width` pixels wide: odd, so that it centres on its pixel, and at least 3."""
    return max(3, round(width) | 1)


def ink_against_paper(grey, dark_ink, window):
    """Ink relative to the paper around it, the paper estimated by a closing (dark ink; an opening for
    light ink) over `window` pixels: strokes narrower than it vanish, the light's slow changes stay."""
    window = odd_window(window)
    if dark_ink:
        background = ndimage.minimum_filter(ndimage.maximum_filter(grey, window), window)
    else:
        background = ndimage.maximum_filter(ndimage.minimum_filter(grey, window), window)
    # Light multiplies what the page reflects: relative to the paper around it, ink is as strong in a
    # shadow as in full light.
    ink = 1 - grey / np.maximum(background, 0.05)
    ink = ink if dark_ink else -ink
    # The closing follows the paper's lightest grains, so the typical paper pixel sits a little below
    # it: measure from the typical paper (the median: most pixels are paper), not from the grains.
    return ink - np.median(ink[::4, ::4])


def digit_mask(ink, drawn=False):
    """Where the digit is: strong ink and the fainter ink joined to it (hysteresis), kept as whole
    strokes, without specks and smudges away from the digit. In a digital drawing (`drawn`: a border
    of one exact colour, as a canvas has) every mark is the digit's."""
    # The inkiest 2x2 block: one hot pixel is noise, not a digit (a drawing has no noise).
    peak = float((ink if drawn else block_means(ink)).max())
    if peak < MIN_CONTRAST:
        raise ImageError("no digit found: the image is blank (or has almost no contrast)")
    if drawn:
        return ink > 0.15 * peak
    sample = ink[::4, ::4]  # the noise level from a sixteenth of the pixels is as good, and quicker
    noise = 1.4826 * float(np.median(np.abs(sample - np.median(sample))))
    pieces = np.empty(ink.shape, dtype=np.intp)
    count = ndimage.label(ink > max(0.15 * peak, 3 * noise), structure=np.ones((3, 3)), output=pieces)
    areas = np.bincount(pieces.ravel(), minlength=count + 1)
    # A piece is as big as its strong ink: a grain of the paper that passed the low threshold has little.
    strong = np.bincount(pieces[ink > max(0.4 * peak, 5 * noise)], minlength=count + 1)
    strong[0] = 0
    if not strong.any():
        # Nothing stands five noise levels out: an enlarged 8x8 digit, whose ink fills so much of its box that
        # it counts as noise. It is all digit. (A picture of noise alone gets the same, and is read as one.)
        return np.ones(ink.shape, dtype=bool)
    areas[strong == 0] = 0  # only pieces with strong ink in them can be part of the digit
    # The digit's parts: every piece with a tenth of the most strong ink or more, and any smaller ones in their box.
    big = strong >= 0.1 * strong.max()
    rows, cols = bounding_box(big[pieces])
    margin = max(2, round(0.1 * max(rows.stop - rows.start, cols.stop - cols.start)))
    near = np.zeros(count + 1, dtype=bool)
    near[pieces[max(rows.start - margin, 0):rows.stop + margin, max(cols.start - margin, 0):cols.stop + margin]] = True
    return (big | (near & (areas > 0)))[pieces]


def bounding_box(mask):
    """The slices of the smallest box around the True pixels of `mask`."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def stroke_width(ink):
    """A stroke width in pixels: four times the mean distance of inked pixels to the nearest blank one
    (a w-pixel-wide stroke gives about w + 2, as an edge pixel is 1 from the blank; used only to compare like
    with like: MNIST_STROKE and STROKE_WINDOW are in this measure). Beyond the edges is
    blank: a digit cropped to its ink is measured as it is with a margin, as MNIST's digits have."""
    inked = np.pad(ink > 0.5, 1)
    return 4 * float(ndimage.distance_transform_edt(inked)[inked].mean()) if inked.any() else 0.0


def place_by_mass(small):
    """A 28x28 frame with `small` in it, its centre of mass at the centre (as MNIST placed its digits)."""
    canvas = np.zeros((28, 28), dtype=np.float32)
    row, column = ndimage.center_of_mass(small)
    top = min(max(round(14 - row), 0), 28 - small.shape[0])
    left = min(max(round(14 - column), 0), 28 - small.shape[1])
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return canvas


def digit_stages(source, max_pixels=None):
    """Every stage of turning a digit picture into MNIST's form, as arrays in [0, 1] (see image_to_mnist):
    picture (grey, at most WORKING_SIDE), ink (paper removed), digit (its mask), cropped, mnist (28x28)."""
    grey, is_alpha_ink = open_grey(source, max_pixels)
    picture = working_copy(grey)
    ink, drawn = paper_removed(picture, is_alpha_ink)
    mask = digit_mask(ink, drawn)
    crop = bounding_box(mask)
    if drawn and max(ink[crop].shape) < 2 * stroke_width(mask[crop].astype(np.float32)):
        # A drawn digit is many strokes wide (strokes.py's: 9 to 10); a tap leaves a dot about 1.3.
        raise ImageError("no digit found: only a dot; draw the whole digit")
    # Keep the digit's own soft edges, nothing from elsewhere (a drawing has nothing else), and stretch
    # its ink to [0, 1].
    cropped = ink[crop]
    if not drawn:
        cropped = cropped * (ndimage.uniform_filter(mask[crop].astype(np.float32), 5) > 0)  # the mask, 2 px wider
    inked = cropped[mask[crop]]
    strong = np.partition(inked, int(0.9 * (len(inked) - 1)))[int(0.9 * (len(inked) - 1))]  # its 90th percentile
    cropped = np.clip(cropped / max(strong, 1e-6), 0, 1)
    small = fit(cropped, 20)
    width = stroke_width(small)
    if width and not MNIST_STROKE[0] <= width <= MNIST_STROKE[2]:
        # Thicken or thin at twice the final size: a pixel there is half of one in the 20x20 digit,
        # so a radius of the width's whole shortfall changes the width by about that much.
        radius = max(1, round(abs(MNIST_STROKE[1] - width)))
        disk = np.hypot(*np.ogrid[-radius:radius + 1, -radius:radius + 1]) <= radius
        change = ndimage.grey_dilation if width < MNIST_STROKE[0] else ndimage.grey_erosion
        changed = change(np.pad(fit(cropped, 40), radius), footprint=disk)
        if (changed > 0.5).any():  # thinning can wipe out a faint digit: then leave it be
            small = fit(changed[bounding_box(changed > 0.05)], 20)
    return {"picture": picture, "ink": ink, "digit": mask, "cropped": cropped, "mnist": place_by_mass(small)}


def image_to_mnist(source, max_pixels=None):
    """Turn any digit picture into a normalized MNIST input [1, 28, 28], the way MNIST was made.

    The paper and its shading are taken out (paper_removed), the digit found without specks and
    smudges (digit_mask) and cropped, its strokes thickened or thinned toward MNIST's width, then it is
    scaled to fit 20x20 keeping its aspect ratio (a 1 stays thin) and placed in 28x28 with its centre of
    mass at the centre. Raises ImageError for an unreadable file, one over `max_pixels`, or an image with
    no visible digit.
    """
    mnist = digit_stages(source, max_pixels)["mnist"]
    return torch.from_numpy(data.normalize(mnist[None], data.MNIST))


def image_to_fashion(source, max_pixels=None):
    """Turn a product photo into a normalized Fashion-MNIST input [1, 28, 28], as Xiao et al. made theirs:
    trimmed to the product, its longer side scaled to 28 pixels, centred, light on black."""
    small = fit(crop_to_ink(*open_grey(source, max_pixels), threshold=0.05), 28)
    canvas = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return data.normalize(torch.from_numpy(canvas)[None, None], data.FASHION_MNIST)[0]


def to_input(source, dataset=data.MNIST, max_pixels=None):
    """The network's input [1, 28, 28] for a picture, prepared as `dataset`'s own images were."""
    prepare = image_to_fashion if dataset is data.FASHION_MNIST else image_to_mnist
    return prepare(source, max_pixels=max_pixels)


def to_inputs(paths, dataset=data.MNIST):
    """(inputs [N, 1, 28, 28] or None, the paths read, (path, why) of each that could not be)."""
    inputs, readable, problems = [], [], []
    for path in paths:
        try:
            inputs.append(to_input(path, dataset))
            readable.append(path)
        except ImageError as e:
            problems.append((path, str(e)))
    return (torch.stack(inputs) if inputs else None), readable, problems
