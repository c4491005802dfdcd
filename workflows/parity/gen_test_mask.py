#!/usr/bin/env python3
"""Write the deterministic inpainting mask used by the parity workflows: an RGB PNG (default
256x256) whose red channel is 255 where the image is to be repainted (an ellipse over the
disc of gen_test_image.py plus a rectangle over the checkerboard's edge), 0 elsewhere; green
and blue are 0. LoadImageMask with channel "red" turns it into a MASK (red / 255).

  gen_test_mask.py OUT.png [--size 256]

Standard library only; the bytes are fixed (filter 0 on every row, zlib level 9).
"""
import argparse
import struct
import sys
import zlib


def masked(x, y, n):
    cx, cy, rx, ry = 0.66 * n, 0.36 * n, 0.22 * n, 0.16 * n
    if ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0:
        return True
    return 0.30 * n <= x < 0.52 * n and 0.48 * n <= y < 0.70 * n


def png_bytes(n):
    rows = bytearray()
    for y in range(n):
        rows.append(0)
        for x in range(n):
            rows.extend((255 if masked(x, y, n) else 0, 0, 0))

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", n, n, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    with open(a.out, "wb") as f:
        f.write(png_bytes(a.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
