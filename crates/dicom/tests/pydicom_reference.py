"""Independent reference renderer for crates/dicom (tests/pydicom_crosscheck.rs).

    python pydicom_reference.py CASES_JSON OUT_DIR

1. Synthesizes edge-case DICOM files with pydicom into OUT_DIR/synth/ (window width 1 and 0, several window
   values, MONOCHROME1, signed pixels with a negative slope, garbage bits above Bits Stored, pixel data
   shorter than Rows x Columns, absurd dimensions, 16-bit planar RGB, uncompressed YBR_FULL, multi-frame
   greyscale, a Modality LUT Sequence, an 8-bit palette with a first mapped value, a bare data set without
   preamble or meta header).
2. Renders every case of CASES_JSON ([{"name", "path", "frame", "window"}], a path starting with "synth/" is
   relative to OUT_DIR) with pydicom 3.0.2 + numpy, writing OUT_DIR/<name>.rgb (RGB8, row-major) and
   OUT_DIR/manifest.json {name: {"width", "height", "frame"} or {"error"}}.

The rendering rules are written out here from the issue text, not taken from the Rust code:
  greyscale: modality values (pydicom's apply_modality_lut when the file has both rescale values or a
  Modality LUT Sequence; else the stored values, times a lone slope, plus a lone intercept), the window
  (given, else the file's first, else c = (min+max)/2, w = max-min+1 over the frame), then
  y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255 clipped to 0..255, rounded half up (floor(y + 0.5)); width 1:
  0 where x <= c - 0.5, else 255; MONOCHROME1: 255 - y; replicated to RGB.
  palette: pydicom's apply_color_lut; 16-bit entries scaled as (v*510 + 65535) // 131070.
  colour: pydicom's pixel_array (YBR converted to RGB by pydicom); samples wider than 8 bits scaled as
  (v*510 + M) // (2M), M = 2**BitsStored - 1.
"""

import json
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def new_ds(rows, cols, pi="MONOCHROME2", bits=16, stored=None, signed=0, spp=1, ts=ExplicitVRLittleEndian):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = pi
    ds.BitsAllocated = bits
    ds.BitsStored = stored or bits
    ds.HighBit = (stored or bits) - 1
    ds.PixelRepresentation = signed
    if spp == 3:
        ds.PlanarConfiguration = 0
    return ds


def save(ds, path, pixel_bytes):
    ds.PixelData = pixel_bytes
    ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
    ds.save_as(path, enforce_file_format=True)


def synthesize(d):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(7)
    p = lambda n: os.path.join(d, n)

    # The 0..255 ramp with C=128 W=256: the standard maps it to itself (dicom-rs's own VOI does not).
    ds = new_ds(16, 16, bits=8)
    ds.WindowCenter, ds.WindowWidth = 128, 256
    save(ds, p("ramp_c128_w256.dcm"), np.arange(256, dtype=np.uint8).tobytes())

    # Width 1: a threshold at c - 0.5.
    ds = new_ds(16, 16)
    ds.WindowCenter, ds.WindowWidth = 100, 1
    save(ds, p("width1.dcm"), np.arange(256, dtype="<u2").tobytes())

    # Width 0 in the file: refused (the user's --window overrides it).
    ds = new_ds(16, 16)
    ds.WindowCenter, ds.WindowWidth = 100, 0
    save(ds, p("width0.dcm"), np.arange(256, dtype="<u2").tobytes())

    # Several window values: the first pair is used.
    ds = new_ds(16, 16)
    ds.WindowCenter, ds.WindowWidth = [100, 50], [50, 200]
    save(ds, p("two_windows.dcm"), (np.arange(256, dtype="<u2") * 3 % 400).astype("<u2").tobytes())

    # MONOCHROME1, 12 bits stored, window: inverted after windowing.
    ds = new_ds(32, 32, pi="MONOCHROME1", stored=12)
    ds.WindowCenter, ds.WindowWidth = 1000, 500
    save(ds, p("mono1_window.dcm"), rng.integers(0, 4096, 1024).astype("<u2").tobytes())

    # Signed pixels with a negative slope, no window (min/max over modality values) and with one.
    v = rng.integers(-1000, 1001, 1024).astype("<i2")
    ds = new_ds(32, 32, signed=1)
    ds.RescaleSlope, ds.RescaleIntercept = "-2.5", "100"
    save(ds, p("signed_neg_slope.dcm"), v.tobytes())
    ds = new_ds(32, 32, signed=1)
    ds.RescaleSlope, ds.RescaleIntercept = "-2.5", "100"
    ds.WindowCenter, ds.WindowWidth = "-300", "1201.5"
    save(ds, p("signed_neg_slope_window.dcm"), v.tobytes())

    # Garbage in the 4 bits above Bits Stored 12: ignored, unsigned and signed.
    low = rng.integers(0, 4096, 1024)
    junk = rng.integers(0, 16, 1024) << 12
    ds = new_ds(32, 32, stored=12)
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    save(ds, p("garbage_bits.dcm"), (low | junk).astype("<u2").tobytes())
    ds = new_ds(32, 32, stored=12, signed=1)
    save(ds, p("garbage_bits_signed.dcm"), (low | junk).astype("<u2").tobytes())

    # Rows x Columns disagreeing with the data: 64 x 64 declared, 64 x 32 present.
    ds = new_ds(64, 64)
    save(ds, p("short_data.dcm"), np.zeros(64 * 32, dtype="<u2").tobytes())

    # Declared dimensions far beyond the data: the largest side, 100000 frames, 256 bytes of data.
    ds = new_ds(16384, 16384)
    ds.NumberOfFrames = 100000
    save(ds, p("huge_frames.dcm"), np.zeros(128, dtype="<u2").tobytes())
    ds = new_ds(65535, 65535)
    save(ds, p("huge_side.dcm"), np.zeros(128, dtype="<u2").tobytes())

    # 16-bit RGB, planar configuration 1, big endian.
    rgb = rng.integers(0, 65536, (24, 20, 3)).astype(np.uint16)
    ds = new_ds(24, 20, pi="RGB", spp=3, ts=ExplicitVRBigEndian)
    ds.PlanarConfiguration = 1
    ds.PixelData = rgb.transpose(2, 0, 1).astype(">u2").tobytes()
    ds["PixelData"].VR = "OW"
    ds.save_as(p("rgb16_planar_be.dcm"), enforce_file_format=True)

    # Uncompressed YBR_FULL (pydicom's own RGB -> YBR conversion of a smooth image).
    yy, xx = np.mgrid[0:30, 0:40]
    rgb8 = np.stack([xx * 6, yy * 8, (xx + yy) * 3], axis=-1).clip(0, 255).astype(np.uint8)
    ds = new_ds(30, 40, pi="YBR_FULL", bits=8, spp=3)
    save(ds, p("ybr_full.dcm"), convert_color_space(rgb8, "RGB", "YBR_FULL").tobytes())

    # Five frames of 8-bit greyscale, each a different constant ramp offset.
    frames = np.stack([(np.arange(100).reshape(10, 10) + 30 * k) % 256 for k in range(5)]).astype(np.uint8)
    ds = new_ds(10, 10, bits=8)
    ds.NumberOfFrames = 5
    save(ds, p("five_frames.dcm"), frames.tobytes())

    # A Modality LUT Sequence (16-bit entries) instead of rescale values.
    ds = new_ds(16, 16, bits=8)
    item = Dataset()
    item.LUTDescriptor = [200, 20, 16]
    item.ModalityLUTType = "HU"
    item.LUTData = [(i * 37) % 5000 for i in range(200)]
    item["LUTData"].VR = "US"
    ds.ModalityLUTSequence = Sequence([item])
    ds.WindowCenter, ds.WindowWidth = 2500, 5000
    save(ds, p("modality_lut.dcm"), np.arange(256, dtype=np.uint8).tobytes())

    # An 8-bit palette of 100 entries from index 10 (indices outside clamp to the ends).
    ds = new_ds(16, 16, pi="PALETTE COLOR", bits=8)
    for c, k in (("Red", 1), ("Green", 2), ("Blue", 3)):
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [100, 10, 8])
        setattr(ds, f"{c}PaletteColorLookupTableData", bytes(((i * 7 * k) % 256) for i in range(100)))
        ds[f"{c}PaletteColorLookupTableData"].VR = "OW"
    save(ds, p("palette8.dcm"), np.arange(256, dtype=np.uint8).tobytes())

    # A bare data set: implicit VR little endian, no preamble, no meta information.
    ds = new_ds(16, 16, ts=ImplicitVRLittleEndian)
    ds.WindowCenter, ds.WindowWidth = 128, 200
    ds.PixelData = np.arange(256, dtype="<u2").tobytes()
    del ds.file_meta
    ds.save_as(p("bare_implicit.dcm"), implicit_vr=True, little_endian=True, enforce_file_format=False)


def round_half_up(y):
    return np.floor(y + 0.5)


def render(path, frame, window):
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        # A bare data set: pydicom read it in the encoding it found.
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if ds.original_encoding[0]
            else ExplicitVRLittleEndian if ds.original_encoding[1] else ExplicitVRBigEndian
        )
    n = int(ds.get("NumberOfFrames", 1) or 1)
    f = n // 2 if frame is None else frame
    arr = ds.pixel_array
    if n > 1:
        arr = arr[f]
    pi = str(ds.PhotometricInterpretation).strip()
    if pi in ("MONOCHROME1", "MONOCHROME2"):
        if "ModalityLUTSequence" in ds or ("RescaleSlope" in ds and "RescaleIntercept" in ds):
            x = apply_modality_lut(arr, ds).astype(np.float64)
        else:
            x = arr.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        if window is not None:
            c, w = window
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            wc, ww = ds.WindowCenter, ds.WindowWidth
            c = float(wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc)
            w = float(ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww)
        else:
            lo, hi = float(x.min()), float(x.max())
            c, w = (lo + hi) / 2, hi - lo + 1
        if w == 1:
            y = np.where(x <= c - 0.5, 0.0, 255.0)
        else:
            y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
            y = round_half_up(np.clip(y, 0, 255))
        if pi == "MONOCHROME1":
            y = 255 - y
        rgb = np.repeat(y.astype(np.uint8)[..., None], 3, axis=-1)
    elif pi == "PALETTE COLOR":
        out = apply_color_lut(arr, ds)
        if out.dtype == np.uint16:
            out = (out.astype(np.uint64) * 510 + 65535) // 131070
        rgb = out.astype(np.uint8)
    else:
        bits = int(ds.BitsStored)
        if bits > 8:
            m = (1 << bits) - 1
            arr = (arr.astype(np.uint64) * 510 + m) // (2 * m)
        rgb = arr.astype(np.uint8)
    return rgb, f


def main():
    cases_path, out = sys.argv[1], sys.argv[2]
    synthesize(os.path.join(out, "synth"))
    manifest = {"pydicom": pydicom.__version__, "numpy": np.__version__, "cases": {}}
    for case in json.load(open(cases_path)):
        name, path = case["name"], case["path"]
        if path.startswith("synth/"):
            path = os.path.join(out, path)
        try:
            window = case.get("window")
            rgb, f = render(path, case.get("frame"), tuple(window) if window else None)
        except Exception as e:  # noqa: BLE001 - reported to the Rust side
            manifest["cases"][name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        with open(os.path.join(out, name + ".rgb"), "wb") as fh:
            fh.write(np.ascontiguousarray(rgb).tobytes())
        manifest["cases"][name] = {"width": rgb.shape[1], "height": rgb.shape[0], "frame": f}
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)


if __name__ == "__main__":
    main()
