//! One safetensors shard as the quantizer reads it (`parse_shard_header`: the `safetensors` crate's header
//! checks plus our dtype and offset mapping).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.safetensors");
    if let Ok(tensors) = meddr_quantize::checkpoint::parse_shard_header(data, path, 0) {
        for t in &tensors {
            assert!(t.offset.checked_add(t.n_bytes).is_some_and(|end| end <= data.len() as u64), "{t:?}");
            let _ = t.n_elements();
        }
    }
});
