"""Build the external test sets: digits from outside MNIST, as people write, draw and photograph them.

    python make_external.py                      # data/external/{tune,heldout,uci-tune,uci-heldout}
    python evaluate.py --images data/external/heldout

The photographed sets, tune and heldout, come from two deterministic sources: the digit glyphs of
handwriting fonts from Debian's packages (each font is checked to draw ten distinct digits of its own),
and strokes.py's pen strokes, jittered, slanted and drawn with pens from pencil-thin to marker-thick.
Each picture is then "photographed": paper texture, uneven light, a shadow, blur, JPEG compression, low
contrast, a small digit in a large picture, or light ink on a dark board, in random combinations. The
fonts are split between the two sets, so the held-out set has handwriting styles the tuning set never
showed. The uci sets are real handwriting: the 1,797 digits of the UCI handwritten digits' test set (13
writers, collected apart from MNIST's), as scikit-learn ships them, 8x8 pixels of 17 grey levels, dark on
white; the even-numbered go to uci-tune, the odd to uci-heldout (the same writers in both). A held-out
set is only ever reported, never used for a choice. The sets are written in torchvision's ImageFolder
layout: SET/0/..., ..., SET/9/..., with preprocessing.png beside them: how images.py reads a few of the
pictures, stage by stage. A set written again replaces the one before only once it is complete; a set's
folder holding files this script does not write is refused, so that nothing of yours is removed.
"""

import contextlib
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from sklearn.datasets import load_digits

import cli
import data
import images
import plot
import strokes

FONT_DIR = Path("/usr/share/fonts/truetype")
# Debian package -> its font files (relative to FONT_DIR); the split keeps each family on one side.
FONTS = {
    "tune": {"fonts-humor-sans": ["humor-sans/Humor-Sans.ttf"], "fonts-rufscript": ["rufscript/Rufscript010.ttf"],
             "fonts-sjfonts": ["sjfonts/Delphine.ttf"], "fonts-seto": ["seto/setofont.ttf", "seto/setofont-ex.ttf"]},
    "heldout": {"fonts-klee": ["klee/KleeOne-Regular.ttf", "klee/KleeOne-SemiBold.ttf"],
                "fonts-yusei-magic": ["yusei-magic/YuseiMagic-Regular.ttf"],
                "fonts-sjfonts": ["sjfonts/SteveHand.ttf"],
                "fonts-leckerli-one": ["leckerli-one/LeckerliOne-Regular.ttf"]},
}
STROKE_SEEDS = {"tune": 1, "heldout": 2}
SIZE = 160  # the side of a picture, before a few are set small in a larger one


def parse_args(argv=None):
    p = cli.Parser(__doc__)
    p.add_argument("--out", default="data/external", help="where the sets go (default: data/external)")
    p.add_argument("--per-font", type=cli.positive(int), default=6,
                   help="pictures of each digit from each font (default: 6)")
    p.add_argument("--per-stroke", type=cli.positive(int), default=30,
                   help="pictures of each digit drawn with pen strokes, per set (default: 30)")
    return p.parse_args(argv)


def rng_for(*key):
    return np.random.default_rng(list(map(int, np.frombuffer(repr(key).encode(), dtype=np.uint8))))


# ---------------------------------------------------------------------------------------------
# Digits


def glyph(font, digit):
    """The digit in `font`, dark on white, cropped to its ink; None if the font draws nothing."""
    left, top, right, bottom = font.getbbox(str(digit))
    if right <= left or bottom <= top:
        return None
    image = Image.new("L", (right - left + 8, bottom - top + 8), 255)
    ImageDraw.Draw(image).text((4 - left, 4 - top), str(digit), font=font, fill=0)
    return image if np.asarray(image).min() < 128 else None


def usable_fonts(split):
    """The split's font files that are installed and draw ten distinct digits of their own."""
    fonts = []
    for files in FONTS[split].values():
        for name in files:
            path = FONT_DIR / name
            if not path.is_file():
                continue
            font = ImageFont.truetype(str(path), 96)
            glyphs = [glyph(font, digit) for digit in range(10)]
            if all(g is not None for g in glyphs) and len({g.tobytes() for g in glyphs}) == 10:
                fonts.append(path)
    return fonts


def font_digit(path, digit, rng):
    """A font's digit at a random size, slant, rotation and stroke weight, dark on white."""
    image = glyph(ImageFont.truetype(str(path), int(rng.integers(70, 120))), digit)
    weight = int(rng.integers(-1, 3))  # thinner (erode) to bolder (dilate): ink is dark, so min grows it
    for _ in range(abs(weight)):
        image = image.filter(ImageFilter.MinFilter(3) if weight > 0 else ImageFilter.MaxFilter(3))
    shear = rng.uniform(-0.25, 0.25)
    image = image.transform(image.size, Image.Transform.AFFINE, (1, shear, -shear * image.height / 2, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR, fillcolor=255)
    return place(image.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR, expand=True, fillcolor=255), rng)


def stroke_digit(digit, rng):
    """strokes.py's digit with every point moved a little, slanted and squeezed, drawn with a random pen."""
    slant, squeeze = rng.uniform(-0.2, 0.2), rng.uniform(0.75, 1.15)
    jittered = [[(0.5 + (x - 0.5) * squeeze + slant * (0.5 - y) + rng.normal(0, 0.02), y + rng.normal(0, 0.02))
                 for x, y in stroke] for stroke in strokes.DIGITS[digit]]
    pen = float(rng.choice([3, 5, 8, 12, 16, 20]))  # pencil-thin to marker-thick, on a 160-pixel picture
    return place(strokes.draw(jittered, SIZE, pen), rng)


def place(image, rng):
    """The digit on a SIZE-pixel square of white paper, at a random size and a little off centre."""
    height = rng.uniform(0.45, 0.85) * SIZE
    scale = min(height / image.height, 0.9 * SIZE / image.width)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.LANCZOS)
    paper = Image.new("L", (SIZE, SIZE), 255)
    left = int((SIZE - image.width) / 2 + rng.uniform(-0.1, 0.1) * SIZE)
    top = int((SIZE - image.height) / 2 + rng.uniform(-0.08, 0.08) * SIZE)
    paper.paste(image, (min(max(left, 0), SIZE - image.width), min(max(top, 0), SIZE - image.height)))
    return paper


# ---------------------------------------------------------------------------------------------
# Photographs


def smooth_noise(rng, size, cells):
    """A smooth random field in [0, 1]: coarse noise scaled up bicubically."""
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255


def photograph(image, rng):
    """The drawing as a photo or scan of it: (picture, the effects applied, JPEG quality or None for PNG)."""
    ink = 1 - np.asarray(image, dtype=np.float32) / 255  # 1 where the pen was
    effects = []
    if rng.random() < 0.2:
        page = np.zeros((3 * SIZE, 3 * SIZE), dtype=np.float32)
        top, left = rng.integers(0, 2 * SIZE, 2)
        page[top:top + SIZE, left:left + SIZE] = ink
        ink = page
        effects.append("small in a large picture")
    size = ink.shape[0]
    paper, pen = 1.0, 0.0
    if rng.random() < 0.5:
        paper, pen = rng.uniform(0.7, 0.95), rng.uniform(0.0, 0.3)
        effects.append("grey paper")
    if rng.random() < 0.25:
        pen = paper - rng.uniform(0.2, 0.35)  # faint ink: a pencil, a dry pen
        effects.append("low contrast")
    if rng.random() < 0.2:
        paper, pen = 1 - paper, 1 - pen  # chalk on a board, a light pen on black paper
        effects.append("light on dark")
    picture = paper + (pen - paper) * ink
    # Then the light falls on it: texture, uneven light and a shadow multiply what the page reflects.
    if rng.random() < 0.5:
        picture = picture * (1 + (smooth_noise(rng, size, 12) - 0.5) * 0.1) + rng.normal(0, 0.02, ink.shape)
        effects.append("paper texture")
    if rng.random() < 0.5:
        ramp = np.linspace(-1, 1, size, dtype=np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        light = 1 + rng.uniform(0.15, 0.35) * (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]) / 2
        picture = picture * light
        effects.append("uneven light")
    if rng.random() < 0.25:
        edge = rng.uniform(0.3, 0.7) * size
        shadow = np.clip((np.arange(size) - edge) / (0.08 * size), 0, 1).astype(np.float32)
        shadow = shadow[None, :] if rng.random() < 0.5 else shadow[:, None]
        picture = picture * (1 - rng.uniform(0.25, 0.45) * shadow)
        effects.append("shadow")
    result = Image.fromarray((np.clip(picture, 0, 1) * 255).astype(np.uint8))
    if rng.random() < 0.4:
        result = result.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.8)))
        effects.append("blur")
    quality = int(rng.integers(20, 60)) if rng.random() < 0.4 else None
    return result, effects + ["JPEG"] * bool(quality), quality


SHOWN = ["shadow", "uneven light", "low contrast", "small in a large picture", "light on dark", "paper texture"]


SETS = ("uci-tune", "uci-heldout", "tune", "heldout")


# The names write_uci and write_set give their pictures: a picture named otherwise is somebody else's.
OUR_NAMES = {"uci-tune": r"uci-\d{4}\.png", "uci-heldout": r"uci-\d{4}\.png",
             "tune": r"(font-.+|pen)-\d+\.(png|jpg)", "heldout": r"(font-.+|pen)-\d+\.(png|jpg)"}


def not_ours(target):
    """What the folder of a set holds that make_external.py does not write (its files are kept)."""
    target = Path(target)
    if not target.is_dir():
        return []
    found = [path for path in target.iterdir() if not (path.is_dir() and path.name in map(str, range(10)))]
    return found + [path for folder in target.iterdir() if folder not in found
                    for path in folder.iterdir()
                    if not (path.is_file() and re.fullmatch(OUR_NAMES[target.name], path.name))]


@contextlib.contextmanager
def replacing(target):
    """A fresh folder to write a set into, which takes the place of `target` only once it is complete:
    an interrupted run leaves the set before it whole."""
    target = Path(target)
    fresh, old = target.with_name(f".{target.name}.partial"), target.with_name(f".{target.name}.old")
    for left in (fresh, old):  # by a run stopped half-way: while writing, or while removing the set before
        shutil.rmtree(left, ignore_errors=True)
    fresh.mkdir(parents=True)
    try:
        yield fresh
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def build(out, per_font=6, per_stroke=30):
    """Write both sets under `out`, and preprocessing.png: how images.py reads a few of the tuning set's
    pictures, one for each kind of trouble in SHOWN. Returns {set: number of pictures}."""
    counts, shown = {}, {}
    fonts_of = {split: usable_fonts(split) for split in ("tune", "heldout")}
    for split, fonts in fonts_of.items():  # checked before anything is removed: the sets there stay as they were
        if not fonts:
            raise data.DataError(f"no handwriting font of the {split} set is installed; on Debian or Ubuntu: "
                                 f"sudo apt-get install {' '.join(sorted(FONTS[split]))}")
    for split, fonts in fonts_of.items():
        counts[split] = write_set(Path(out) / split, split, fonts, per_font, per_stroke, shown)
    plot.plot_preprocessing([(effect, images.digit_stages(shown[effect])) for effect in SHOWN if effect in shown],
                            Path(out) / "preprocessing.png")
    return counts


def write_set(out, split, fonts, per_font, per_stroke, shown):
    """Write one photographed set into the folder `out`, keeping in `shown` a picture of each kind of trouble
    not yet shown (from the tuning set). Returns the number of pictures."""
    with replacing(out) as target:
        pictures = []
        for digit in range(10):
            for path in fonts:
                for k in range(per_font):
                    rng = rng_for(split, path.name, digit, k)
                    pictures.append((digit, f"font-{path.stem}-{k}", font_digit(path, digit, rng), rng))
            for k in range(per_stroke):
                rng = rng_for(split, "strokes", STROKE_SEEDS[split], digit, k)
                pictures.append((digit, f"pen-{k}", stroke_digit(digit, rng), rng))
        for digit, name, drawing, rng in pictures:
            picture, effects, quality = photograph(drawing, rng)
            unshown = [effect for effect in SHOWN if effect in effects and effect not in shown]
            if split == "tune" and unshown and digit == len(shown) * 3 % 10:  # a different digit each time
                shown[unshown[0]] = picture
            with data.atomic_write(target / str(digit) / f"{name}.{'jpg' if quality else 'png'}") as f:
                if quality:
                    picture.convert("RGB").save(f, format="JPEG", quality=quality)
                else:
                    picture.save(f, format="PNG")
    return len(pictures)


def write_uci(out):
    """Write scikit-learn's copy of the UCI handwritten digits (8x8, values 0-16) as dark-on-white PNGs:
    the even-numbered under out/uci-tune, the odd under out/uci-heldout. Returns {set: number of pictures}."""
    digits = load_digits()
    counts = {}
    for split, first in (("uci-tune", 0), ("uci-heldout", 1)):
        numbers = range(first, len(digits.images), 2)
        with replacing(Path(out) / split) as target:
            for i in numbers:
                pixels = np.round(255 - digits.images[i] * (255 / 16)).astype(np.uint8)
                with data.atomic_write(target / str(digits.target[i]) / f"uci-{i:04d}.png") as f:
                    Image.fromarray(pixels).save(f, format="PNG")
        counts[split] = len(numbers)
    return counts


def report(out, counts):
    for split, count in counts.items():
        print(f"{Path(out) / split}: {count} pictures")


def main(argv=None):
    args = parse_args(argv)
    try:
        cli.writable_folder(args.out, "--out")
        for split in SETS:  # checked before anything is written: a set is replaced whole
            found = not_ours(Path(args.out) / split)
            if found:
                raise cli.RunError(f"{Path(args.out) / split} holds files make_external.py did not write "
                                   f"({', '.join(path.name for path in found[:3])}); move them, or pass another --out")
        # The UCI digits first: they need no fonts, so a machine without them still gets real handwriting.
        report(args.out, write_uci(args.out))
        report(args.out, build(args.out, args.per_font, args.per_stroke))
    except (cli.RunError, data.DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    cli.run(main)
