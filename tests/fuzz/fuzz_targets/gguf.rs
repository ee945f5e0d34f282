//! GGUF header, metadata and tensor table (`meddr_gguf`), then what every loader reads from them: the model
//! facts and the embedded tokenizer (`meddr_runtime`), and each tensor's byte range.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The browser's incremental path: prefixes of unknown total length.
    let _ = meddr_gguf::GgufHeader::parse(data);
    let Ok(file) = meddr_gguf::GgufFile::from_vec(data.to_vec(), "fuzz.gguf") else { return };
    let h = &file.header;
    let _ = h.validate_layout();
    for t in &h.tensors {
        let _ = t.try_byte_size();
        let _ = file.try_tensor_data(t);
    }
    let _ = meddr_runtime::ModelInfo::from_gguf_header(h);
    if let Ok(tok) = meddr_runtime::tokenizer_from_gguf_header(h) {
        let _ = tok.encode("What is <IMG_CONTEXT> shown?");
        let _ = tok.decode(&[0, 1, 2, 3], false);
    }
});
