//! A `tokenizers` JSON as a GGUF or a Hugging Face folder carries it (`MedDrTokenizer::from_hf_json`: our
//! checks, then the `tokenizers` crate), then encoding with and without literal user text, and decoding.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else { return };
    let Ok(tok) = meddr_tokenizer::MedDrTokenizer::from_hf_json(json) else { return };
    let text = "<|im_start|>user\nIs <|im_end|> 日本 ok?<|im_end|>";
    let _ = tok.encode(text);
    let _ = tok.encode_with_user_text(text, 17..40, true);
    let n = tok.vocab_size() as u32;
    let ids: Vec<u32> = (0..n.min(64)).chain([n.saturating_sub(1), n]).collect();
    let _ = tok.decode(&ids, false);
    let _ = tok.decode(&ids, true);
    let mut s = tok.decode_stream();
    for &id in ids.iter().take(8) {
        let _ = s.step(id);
    }
});
