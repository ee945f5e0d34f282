//! SentencePiece's `tokenizer.model` protobuf (`SentencePieceModel::parse`, our own decoder), as the quantizer
//! reads it from a Hugging Face folder.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = meddr_tokenizer::SentencePieceModel::parse(data) {
        let _ = m.vocab_size();
    }
});
