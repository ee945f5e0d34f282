"""Writes test images in many formats/modes with Pillow and Pillow's own results for them.

Usage: python pillow_reference.py OUT_DIR
For every image: OUT_DIR/<name> (the file), <name>.rgb (np.array(Image.open(f).convert('RGB'))
bytes) and <name>.448 (MedDr's expand2square + resize((448, 448), BICUBIC) bytes), plus
manifest.json. Needs pillow==10.2.0 (the version behind the shared fixtures) and numpy.
"""
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

PAD = (123, 116, 103)


def expand2square(img, bg):
    w, h = img.size
    if w == h:
        return img
    s = max(w, h)
    out = Image.new(img.mode, (s, s), bg)
    out.paste(img, (0, (s - h) // 2) if w > h else ((s - w) // 2, 0))
    return out


def synth(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(w + h - 2, 1)], -1)
    noise = rng.integers(-40, 41, size=(h, w, 3))
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    img[h // 3 : h // 2, w // 4 : w // 2] = [250, 20, 30]  # sharp edges stress ringing
    return img


def png_chunk(t, data):
    return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)


def raw_png(width, height, bit_depth, color_type, rows, plte=None):
    """A PNG written by hand, for layouts Pillow cannot save (16-bit RGB, 16-bit LA, 2-bit)."""
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    if plte is not None:
        out += png_chunk(b"PLTE", plte)
    out += png_chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + r for r in rows)))
    return out + png_chunk(b"IEND", b"")


def main(out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    rgb = Image.fromarray(synth(101, 67, 1))
    tall = Image.fromarray(synth(45, 130, 2))
    alpha = np.linspace(0, 255, 101 * 67).reshape(67, 101).astype(np.uint8)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(alpha))

    def save(name, img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        files[name] = b.getvalue()

    # JPEG: chroma layouts, odd sizes, progressive, grey, CMYK (Adobe, inverted), tiny edge cases.
    save("q90_420.jpg", rgb, "JPEG", quality=90, subsampling=2)
    save("q75_422.jpg", rgb, "JPEG", quality=75, subsampling=1)
    save("q95_444.jpg", tall, "JPEG", quality=95, subsampling=0)
    save("prog_420.jpg", tall, "JPEG", quality=85, subsampling=2, progressive=True)
    save("prog_444.jpg", rgb, "JPEG", quality=60, subsampling=0, progressive=True)
    save("grey.jpg", rgb.convert("L"), "JPEG", quality=88)
    save("cmyk.jpg", rgb.convert("CMYK"), "JPEG", quality=90)
    save("tiny_1x1_420.jpg", rgb.resize((1, 1)), "JPEG", subsampling=2)
    save("tiny_2x3_420.jpg", rgb.resize((2, 3)), "JPEG", subsampling=2)
    save("tiny_3x2_422.jpg", rgb.resize((3, 2)), "JPEG", subsampling=1)
    save("q100_420_17x9.jpg", rgb.resize((17, 9)), "JPEG", quality=100, subsampling=2)
    save("restart_420.jpg", rgb, "JPEG", quality=80, subsampling=2, restart_marker_blocks=3)
    # PNG: every Pillow mode MedDr users are likely to send.
    save("rgb.png", rgb, "PNG")
    save("rgba.png", rgba, "PNG")
    save("grey.png", rgb.convert("L"), "PNG")
    save("grey_alpha.png", rgba.convert("LA"), "PNG")
    save("palette.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=200), "PNG")
    pal_t = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("palette_trns.png", pal_t, "PNG", transparency=3)
    save("bilevel.png", rgb.convert("1"), "PNG")
    g16 = (np.arange(67 * 101, dtype=np.uint32).reshape(67, 101) * 9 % 700).astype(np.uint16)
    save("grey16.png", Image.fromarray(g16), "PNG")
    r16 = (synth(101, 67, 3).astype(np.uint16) * 257 + np.arange(3, dtype=np.uint16) * 77).astype(">u2")
    files["rgb16.png"] = raw_png(101, 67, 16, 2, [r16[y].tobytes() for y in range(67)])
    la16 = np.stack([g16 * 90, g16 * 3], -1).astype(">u2")
    files["grey_alpha16.png"] = raw_png(101, 67, 16, 4, [la16[y].tobytes() for y in range(67)])
    g2 = (np.arange(67 * 104).reshape(67, 104) % 4).astype(np.uint8)
    packed2 = [bytes((r[i] << 6) | (r[i + 1] << 4) | (r[i + 2] << 2) | r[i + 3] for i in range(0, 104, 4)) for r in g2]
    files["grey2bit.png"] = raw_png(104, 67, 2, 0, packed2)
    pal4 = bytes(np.random.default_rng(5).integers(0, 256, 48, dtype=np.uint8))
    files["palette4bit.png"] = raw_png(104, 67, 4, 3, [bytes(((r[i] * 5) & 15) << 4 | (r[i + 1] * 3) & 15 for i in range(0, 104, 2)) for r in g2], plte=pal4)
    # GIF (Pillow writes them interlaced): palette, grey, a transparency index, and an animation whose first
    # frame is what upstream reads.
    save("palette.gif", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=200), "GIF")
    save("grey.gif", rgb.convert("L"), "GIF")
    save("trns.gif", pal_t, "GIF", transparency=3)
    frames = [rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
              Image.fromarray(synth(101, 67, 9)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)]
    save("animated.gif", frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    # BMP, TIFF, WebP.
    save("rgb.bmp", rgb, "BMP")
    save("palette.bmp", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "BMP")
    save("grey.bmp", rgb.convert("L"), "BMP")
    save("bilevel.bmp", rgb.convert("1"), "BMP")
    save("rgb.tif", rgb, "TIFF")
    save("rgb_lzw.tif", tall, "TIFF", compression="tiff_lzw")
    save("rgb_deflate.tif", rgb, "TIFF", compression="tiff_adobe_deflate")
    save("rgba.tif", rgba, "TIFF")
    save("grey.tif", rgb.convert("L"), "TIFF")
    save("lossless.webp", rgb, "WEBP", lossless=True)
    save("lossless_rgba.webp", rgba, "WEBP", lossless=True)
    save("lossy.webp", rgb, "WEBP", quality=80)
    save("lossy_tall.webp", tall, "WEBP", quality=50)

    manifest = {"pillow": PIL.__version__, "images": []}
    for name, data in files.items():
        (out / name).write_bytes(data)
        im = Image.open(out / name)
        mode = im.mode
        conv = im.convert("RGB")
        (out / (name + ".rgb")).write_bytes(np.asarray(conv).tobytes())
        resized = expand2square(conv, PAD).resize((448, 448), Image.BICUBIC)
        (out / (name + ".448")).write_bytes(np.asarray(resized).tobytes())
        manifest["images"].append({"name": name, "mode": mode, "width": conv.size[0], "height": conv.size[1]})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
