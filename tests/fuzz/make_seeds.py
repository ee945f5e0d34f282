"""Writes the committed seed corpora of tests/fuzz (run from anywhere; needs Pillow, numpy, gguf, safetensors:
the workspace .venv has them). Seeds are small on purpose: libFuzzer's input length limit follows the largest
seed, and small inputs keep executions fast. Deterministic: rerunning gives the same files.

    .venv/bin/python tests/fuzz/make_seeds.py [--shared ../shared]
"""
import argparse
import io
import json
import os
import struct
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "..", "shared"))
args = ap.parse_args()
OUT = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


rng = np.random.default_rng(9)
rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
grad = np.add.outer(np.arange(16), np.arange(16)).astype(np.uint8) * 8


def save(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


# JPEG: the decoder's branches (subsampling, progressive, restart markers, grey, CMYK, EXIF orientation tag).
im = Image.fromarray(rgb)
for name, kw in {
    "baseline-420.jpg": dict(quality=75, subsampling=2),
    "baseline-422.jpg": dict(quality=90, subsampling=1),
    "baseline-444.jpg": dict(quality=95, subsampling=0),
    "progressive.jpg": dict(quality=80, progressive=True),
    "optimized.jpg": dict(quality=60, optimize=True),
    "restart.jpg": dict(quality=70, restart_marker_blocks=1),
}.items():
    put("jpeg", name, save(im, "JPEG", **kw))
put("jpeg", "grey.jpg", save(Image.fromarray(grad), "JPEG", quality=85))
put("jpeg", "cmyk.jpg", save(im.convert("CMYK"), "JPEG", quality=85))
exif = Image.Exif()
exif[0x0112] = 6
put("jpeg", "exif.jpg", save(im, "JPEG", quality=80, exif=exif.tobytes()))
put("jpeg", "one-pixel.jpg", save(Image.new("RGB", (1, 1), (200, 10, 30)), "JPEG"))

# Every other format through the image path, plus the JPEGs above.
for f in os.listdir(os.path.join(OUT, "jpeg")):
    put("image", f, open(os.path.join(OUT, "jpeg", f), "rb").read())
put("image", "rgb.png", save(im, "PNG"))
put("image", "rgba.png", save(Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "PNG"))
put("image", "grey16.png", save(Image.fromarray((grad.astype(np.uint16) * 257)), "PNG"))
put("image", "palette.png", save(im.convert("P"), "PNG"))
put("image", "grey-alpha.png", save(im.convert("LA"), "PNG"))
put("image", "bilevel.png", save(Image.fromarray(grad).convert("1"), "PNG"))
put("image", "rgb.bmp", save(im, "BMP"))
put("image", "palette.bmp", save(im.convert("P"), "BMP"))
put("image", "rgb.tif", save(im, "TIFF"))
put("image", "grey.tif", save(Image.fromarray(grad), "TIFF", compression="tiff_lzw"))
put("image", "lossless.webp", save(im, "WEBP", lossless=True))
put("image", "lossy.webp", save(im, "WEBP", quality=50))
frames = [Image.fromarray(np.roll(rgb, k, axis=1)).convert("P") for k in range(3)]
put("image", "animated.gif", save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0))
tiny = os.path.join(args.shared, "fixtures", "images", "synth_tiny_20x30.png")
if os.path.exists(tiny):
    put("image", "fixture-tiny.png", open(tiny, "rb").read())

# safetensors shards: the dtypes the quantizer takes, an empty one, metadata, a tensor of another dtype.
from safetensors.numpy import save as st_save

put("safetensors", "f32.safetensors", st_save({"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}))
put("safetensors", "f16-meta.safetensors",
    st_save({"b": np.ones((4,), np.float16), "c": np.zeros((2, 2), np.float16)}, metadata={"format": "pt"}))
put("safetensors", "empty.safetensors", st_save({}))
put("safetensors", "i64.safetensors", st_save({"ids": np.arange(3, dtype=np.int64)}))
hdr = json.dumps({"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
put("safetensors", "bf16.safetensors", struct.pack("<Q", len(hdr)) + hdr + b"\x80\x3f\x00\x40")

# GGUF: a tiny MedDr-shaped file (metadata of every value type, a tokenizer of a few pieces, two tensors).
import gguf

path = os.path.join(OUT, "gguf-tmp.gguf")
w = gguf.GGUFWriter(path, "llama")
w.add_uint32("meddr.format_version", 1)
w.add_context_length(64)
w.add_embedding_length(8)
w.add_block_count(1)
w.add_head_count(2)
w.add_head_count_kv(1)
w.add_feed_forward_length(16)
w.add_layer_norm_rms_eps(1e-6)
w.add_rope_freq_base(10000.0)
w.add_tokenizer_model("llama")
toks = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "\u2581a", "b", "<0x41>"]
w.add_token_list(toks)
w.add_token_scores([0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -2.0, 0.0])
w.add_token_types([2, 3, 3, 3, 3, 1, 1, 6])
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_array("meddr.chat.stop_token_ids", [2, 4])
w.add_string("meddr.chat.system_message", "You are MedDr.")
w.add_bool("clip.has_vision_encoder", False)
w.add_float64("meddr.test.f64", 0.5)
w.add_int8("meddr.test.i8", -3)
w.add_tensor("token_embd.weight", np.ones((8, 8), np.float32))
w.add_tensor("output_norm.weight", np.ones((8,), np.float16))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
put("gguf", "tiny-meddr.gguf", open(path, "rb").read())
os.remove(path)

# DICOM: small real files of pydicom's test set (tests/setup.sh fetches it into .cache/pydicom-test-files) in
# every transfer syntax the decoder reads, plus tiny synthesized ones for the paths those miss.
dcm_dir = os.path.join(HERE, "..", "..", ".cache", "pydicom-test-files")
if os.path.isdir(dcm_dir):
    for f in ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
              "MR_small_jp2klossless.dcm", "SC_rgb_small_odd.dcm", "SC_rgb_small_odd_big_endian.dcm",
              "SC_rgb_small_odd_jpeg.dcm", "SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_gdcm_KY.dcm", "SC_rgb_jpeg_gdcm.dcm",
              "SC_rgb_rle_2frame.dcm", "rtdose_1frame.dcm", "rtdose_rle_1frame.dcm", "image_dfl.dcm",
              "dicomdirtests/77654033/CR1/6154"]:
        put("dicom", f.replace("/", "_"), open(os.path.join(dcm_dir, f), "rb").read())
try:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    def dcm(name, rows, cols, pi, bits, data, spp=1, **attrs):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, "1.2.3.4"
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, spp, pi
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
        if spp == 3:
            ds.PlanarConfiguration = 0
        for k, v in attrs.items():
            setattr(ds, k, v)
        ds.PixelData = data
        ds["PixelData"].VR = "OB" if bits <= 8 else "OW"
        b = io.BytesIO()
        ds.save_as(b, enforce_file_format=True)
        put("dicom", name, b.getvalue())

    dcm("palette.dcm", 4, 4, "PALETTE COLOR", 8, bytes(range(16)),
        RedPaletteColorLookupTableDescriptor=[8, 2, 8], GreenPaletteColorLookupTableDescriptor=[8, 2, 8],
        BluePaletteColorLookupTableDescriptor=[8, 2, 8], RedPaletteColorLookupTableData=bytes(range(0, 80, 10)),
        GreenPaletteColorLookupTableData=bytes(range(8)), BluePaletteColorLookupTableData=bytes(range(8, 0, -1)))
    dcm("ybr422.dcm", 2, 4, "YBR_FULL_422", 8, bytes(range(16)), spp=3)
    dcm("onebit.dcm", 4, 4, "MONOCHROME2", 1, b"\x5a\xa5")
    dcm("frames-mono1.dcm", 2, 2, "MONOCHROME1", 16, bytes(range(24)), NumberOfFrames=3, WindowCenter=[500, 9],
        WindowWidth=[1000, 2], RescaleSlope=-2, RescaleIntercept=7)
except ImportError:
    print("pydicom missing: no synthesized DICOM seeds", file=sys.stderr)

# Tokenizer JSON: a small SentencePiece-style BPE as our spec writes it, and a Metaspace variant.
def tok_json(pre):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<|im_end|>": 3, "<0x41>": 4, "\u2581": 5, "a": 6, "b": 7, "\u2581a": 8, "ab": 9}
    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for c, i in [("<unk>", 0), ("<s>", 1), ("</s>", 2), ("<|im_end|>", 3)]]
    j = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
         "normalizer": None if pre else {"type": "Sequence", "normalizers": [
             {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
         "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False} if pre else None,
         "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                     {"Sequence": {"id": "A", "type_id": 0}}],
                            "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {
                                "<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
         "decoder": {"type": "Sequence", "decoders": [
             {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
             {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
         "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                   "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                   "vocab": vocab, "merges": ["\u2581 a", "a b"]}}
    return json.dumps(j, ensure_ascii=False).encode()


put("tokenizer_json", "normalizer.json", tok_json(False))
put("tokenizer_json", "metaspace.json", tok_json(True))

# SentencePiece protobuf: the fixture's model (30 kB) when ../shared is there, and a one-piece model.
spm_path = os.path.join(args.shared, "fixtures", "tokenizer", "tokenizer.model")
if os.path.exists(spm_path):
    put("sentencepiece", "fixture.model", open(spm_path, "rb").read())
put("sentencepiece", "one-piece.model", b"\x0a\x0a\x0a\x01a\x15\x00\x00\xc0\xbf\x18\x04\x12\x04\x18\x02\x40\x01")
print("seeds written under", OUT, file=sys.stderr)
