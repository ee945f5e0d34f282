#!/usr/bin/env python3
"""Writes the language-model half of a MedDr GGUF: every tensor except the vision tower (`v.*`) and projector
(`mm.*`), every key except ours (`meddr.*`) and the vision keys (`clip.*`), so that llama.cpp's loader (which counts tensors) takes it as a
plain llama model. A stand-in for the benchmark until the quantizer writes the text model and its mmproj as
two files (issue 10.4). Uses gguf-py (llama.cpp's own reader and writer).

Usage: PYTHONPATH=path/to/gguf-py text_gguf.py model.gguf text.gguf
"""
import os
import sys

import gguf


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        print(f"text_gguf.py: {src} has architecture {arch!r}, not llama", file=sys.stderr)
        return 1
    tmp = dst + ".partial"
    writer = gguf.GGUFWriter(tmp, arch, use_temp_file=False)
    for field in reader.fields.values():
        # GGUF.* are the reader's virtual header fields; the writer writes the architecture itself.
        if field.name.startswith(("GGUF.", "meddr.", "clip.")) or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    kept = [t for t in reader.tensors if not t.name.startswith(("v.", "mm."))]
    for t in kept:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in kept:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    os.replace(tmp, dst)
    print(f"text_gguf.py: {dst}: {len(kept)} of {len(reader.tensors)} tensors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
