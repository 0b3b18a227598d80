"""The ten digits as pen strokes (polylines in a unit square), and their drawing as images.

One set of shapes serves every place that needs a digit drawn the way a person draws one: the browser
test moves the mouse along them, and make_external.py draws them jittered with many pens.
"""

import math

from PIL import Image, ImageDraw


def _ellipse(cx, cy, rx, ry, points=20, start=-100):
    return [(cx + rx * math.cos(math.radians(start + 360 * i / points)),
             cy + ry * math.sin(math.radians(start + 360 * i / points))) for i in range(points + 1)]


# (x, y) from the top left, in [0, 1]; each digit is a list of strokes, each stroke a list of points.
DIGITS = {
    0: [_ellipse(0.5, 0.5, 0.19, 0.35)],
    1: [[(0.53, 0.14), (0.51, 0.5), (0.48, 0.86)]],
    2: [[(0.31, 0.3), (0.36, 0.18), (0.5, 0.13), (0.64, 0.18), (0.68, 0.3), (0.63, 0.44), (0.5, 0.58),
         (0.31, 0.84), (0.5, 0.83), (0.72, 0.84)]],
    3: [[(0.31, 0.2), (0.45, 0.13), (0.61, 0.16), (0.67, 0.28), (0.6, 0.41), (0.46, 0.47), (0.62, 0.53),
         (0.69, 0.67), (0.62, 0.81), (0.46, 0.87), (0.3, 0.8)]],
    4: [[(0.34, 0.14), (0.3, 0.56), (0.72, 0.56)], [(0.63, 0.14), (0.62, 0.5), (0.61, 0.88)]],
    5: [[(0.67, 0.14), (0.37, 0.14), (0.34, 0.46), (0.5, 0.41), (0.64, 0.49), (0.68, 0.65), (0.6, 0.8),
         (0.45, 0.86), (0.3, 0.8)]],
    6: [[(0.63, 0.14), (0.47, 0.28), (0.36, 0.48), (0.33, 0.68), (0.41, 0.83), (0.55, 0.87), (0.66, 0.76),
         (0.64, 0.6), (0.51, 0.53), (0.39, 0.58), (0.34, 0.68)]],
    7: [[(0.3, 0.16), (0.5, 0.16), (0.7, 0.16), (0.56, 0.45), (0.45, 0.86)]],
    8: [[(0.63, 0.22), (0.5, 0.13), (0.37, 0.2), (0.38, 0.34), (0.5, 0.46), (0.64, 0.58), (0.66, 0.74),
         (0.54, 0.86), (0.4, 0.84), (0.34, 0.72), (0.4, 0.58), (0.52, 0.48), (0.63, 0.36), (0.63, 0.22)]],
    9: [[(0.65, 0.3), (0.56, 0.16), (0.42, 0.16), (0.34, 0.28), (0.38, 0.42), (0.52, 0.46), (0.65, 0.36),
         (0.65, 0.3), (0.63, 0.6), (0.59, 0.87)]],
}


def _catmull_rom(points, steps):
    """A smooth curve through the points (the shape a hand makes through them), `steps` points a segment."""
    padded = [points[0], *points, points[-1]]
    curve = []
    for p0, p1, p2, p3 in zip(padded, padded[1:], padded[2:], padded[3:]):
        for i in range(steps):
            t = i / steps
            curve.append(tuple(0.5 * (2 * b + (c - a) * t + (2 * a - 5 * b + 4 * c - d) * t * t
                                      + (3 * b - a - 3 * c + d) * t ** 3) for a, b, c, d in zip(p0, p1, p2, p3)))
    return [*curve, points[-1]]


def smooth_strokes(digit, steps=6):
    """The digit's strokes as smooth curves, still in the unit square."""
    return [_catmull_rom(stroke, steps) for stroke in DIGITS[digit]]


def draw(polylines, size=280, width=None, ink=0, paper=255):
    """Strokes (polylines in the unit square) drawn smoothly with a round pen on a `size`-pixel square:
    dark ink on white paper by default, a stroke about a thirteenth of the square wide, as on the web
    page's pad, with anti-aliased edges as a browser's canvas draws them."""
    scale = 4  # drawn 4x larger, then averaged down: the edges get a canvas's grey steps
    width = (width or size / 13) * scale
    image = Image.new("L", (size * scale, size * scale), paper)
    pen = ImageDraw.Draw(image)
    for stroke in polylines:
        points = [(x * size * scale, y * size * scale) for x, y in _catmull_rom(stroke, 6)]
        pen.line(points, fill=ink, width=round(width))
        for x, y in points:  # round joins and caps, as a pen makes them
            pen.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=ink)
    return image.reduce(scale)


def render(digit, size=280, width=None, ink=0, paper=255):
    """The digit drawn as on the web page's pad (see draw)."""
    return draw(DIGITS[digit], size, width, ink, paper)
