"""Draws data/images/three.png: a handwritten-looking 3 in navy ink on cream
paper, for the README's `convnet predict` example. Standard library only.

    python3 scripts/draw_digit.py data/images/three.png
"""

import math
import random
import struct
import sys
import zlib

WIDTH, HEIGHT = 110, 140
INK = (30, 40, 90)
PAPER = (245, 242, 232)
BRUSH = 5.5  # half the stroke width, in pixels


def arc(cx, cy, rx, ry, start, end, steps=60):
    """Points along an ellipse from angle `start` to `end` (degrees, y down)."""
    points = []
    for i in range(steps + 1):
        t = math.radians(start + (end - start) * i / steps)
        points.append((cx + rx * math.cos(t), cy + ry * math.sin(t)))
    return points


def stroke_points():
    # Upper bowl from its left tip over the top to the middle, then the
    # lower, larger bowl from the middle round to its left tip: one stroke,
    # with a slight slant and a wobble as a hand would draw it.
    upper = arc(55, 42, 26, 22, -165, 95)
    lower = arc(53, 93, 31, 29, -95, 150)
    points = upper + lower
    return [(x + 0.12 * (70 - y) + 1.2 * math.sin(y / 9.0), y) for x, y in points]


def distance_to_segment(px, py, a, b):
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def render():
    random.seed(7)
    points = stroke_points()
    segments = list(zip(points, points[1:]))
    rows = []
    for y in range(HEIGHT):
        row = bytearray()
        for x in range(WIDTH):
            cx, cy = x + 0.5, y + 0.5
            near = [s for s in segments if abs(s[0][1] - cy) < 12 and abs(s[0][0] - cx) < 12]
            dist = min((distance_to_segment(cx, cy, a, b) for a, b in near), default=99.0)
            # Anti-aliased edge, and a brush that thins a little along the stroke.
            width = BRUSH * (1.0 - 0.15 * (y / HEIGHT))
            cover = max(0.0, min(1.0, width + 0.5 - dist))
            grain = random.uniform(-4, 4)
            for ink, paper in zip(INK, PAPER):
                value = paper + grain + cover * (ink - paper)
                row.append(max(0, min(255, round(value))))
        rows.append(bytes(row))
    return rows


def png(rows):
    raw = b"".join(b"\x00" + row for row in rows)

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


if __name__ == "__main__":
    with open(sys.argv[1], "wb") as out:
        out.write(png(render()))
