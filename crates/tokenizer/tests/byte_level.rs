//! Byte-level BPE from GGUF parts (`TokenizerSpec::from_gguf_byte_level`) on a small hand-made vocabulary:
//! merges by rank, added tokens, BOS/EOS, decoding, and typed errors (naming key and value) for malformed
//! arrays. llama.cpp's own vectors on real vocabularies are in crates/runtime/tests/llama_vocab.rs.

use meddr_tokenizer::{
    byte_to_char, token_type, GgufBpeParts, MedDrTokenizer, TokenizerError, TokenizerSpec,
};

const CONTROL: &str = "<|end|>";
const USER: &str = "<tab4>";

/// The 256 byte pieces, then "Ġ" + word pieces by merges, a CONTROL and a USER_DEFINED token.
fn parts() -> GgufBpeParts {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d",
    ];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push(CONTROL.into());
    tokens.push(USER.into());
    let mut types = vec![token_type::NORMAL; tokens.len()];
    let n = types.len();
    types[n - 2] = token_type::CONTROL;
    types[n - 1] = token_type::USER_DEFINED;
    GgufBpeParts {
        tokens,
        token_types: Some(types),
        scores: None,
        merges: merges.iter().map(|m| m.to_string()).collect(),
        pre: Some("gpt-2".into()),
        bos_id: Some(n as u32 - 2),
        eos_id: Some(n as u32 - 2),
        unk_id: None,
        pad_id: None,
        add_bos: None,
        add_eos: None,
    }
}

fn tok(p: GgufBpeParts) -> MedDrTokenizer {
    MedDrTokenizer::from_spec(&TokenizerSpec::from_gguf_byte_level(p).unwrap()).unwrap()
}

fn id(t: &MedDrTokenizer, s: &str) -> u32 {
    t.token_to_id(s).unwrap_or_else(|| panic!("no token {s:?}"))
}

#[test]
fn merges_added_tokens_and_decoding() {
    let t = tok(parts());
    let (end, user) = (id(&t, CONTROL), id(&t, USER));
    assert!(t.is_special(end) && t.is_control(end));
    assert!(!t.is_special(user) && !t.is_control(user));
    // gpt-2: no BOS by default.
    let ids = t.encode("hello world<|end|>x<tab4>").unwrap();
    let want: Vec<u32> = vec![id(&t, "hello"), id(&t, "Ġworld"), end, id(&t, "x"), user];
    assert_eq!(ids, want);
    assert_eq!(t.decode(&ids, false).unwrap(), "hello world<|end|>x<tab4>");
    assert_eq!(t.decode(&ids, true).unwrap(), "hello worldx<tab4>");
    assert_eq!(t.token_bytes(id(&t, "Ġworld")).unwrap(), b" world");
    assert_eq!(t.token_bytes(end).unwrap(), CONTROL.as_bytes());
    // parse_special = false: the control token is text, the user-defined one is still matched.
    let lit = t.encode_with("<|end|><tab4>", false, false).unwrap();
    assert!(!lit.contains(&end) && lit.ends_with(&[user]));
    assert_eq!(t.decode(&lit, false).unwrap(), "<|end|><tab4>");
    // A byte piece alone is no character; decode marks it, the stream holds it back.
    let e_acute = t.encode("é").unwrap();
    assert_eq!(e_acute.len(), 2);
    assert_eq!(t.decode(&e_acute[..1], false).unwrap(), "\u{FFFD}");
    let mut s = t.decode_stream();
    assert_eq!(s.step(e_acute[0]).unwrap(), None);
    assert_eq!(s.step(e_acute[1]).unwrap().as_deref(), Some("é"));
}

#[test]
fn bos_eos_flags_and_llama3_default() {
    let mut p = parts();
    p.add_bos = Some(true);
    p.add_eos = Some(true);
    let t = tok(p);
    let end = id(&t, CONTROL);
    assert_eq!(t.encode("hello").unwrap(), vec![end, id(&t, "hello"), end]);
    assert_eq!(
        t.encode_with("hello", false, true).unwrap(),
        vec![id(&t, "hello")]
    );
    let mut p = parts();
    p.pre = Some("llama-bpe".into());
    let t = tok(p);
    assert_eq!(t.encode("hello").unwrap(), vec![end, id(&t, "hello")]);
    // Missing pre is llama.cpp's "default" (no BOS).
    let mut p = parts();
    p.pre = None;
    let t = tok(p);
    assert_eq!(t.encode("hello").unwrap(), vec![id(&t, "hello")]);
}

fn err(p: GgufBpeParts) -> String {
    match TokenizerSpec::from_gguf_byte_level(p) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_parts_are_typed_errors() {
    let mut p = parts();
    p.pre = Some("qwen2".into());
    let e = TokenizerSpec::from_gguf_byte_level(p).unwrap_err();
    assert!(matches!(
        e,
        TokenizerError::UnsupportedGguf {
            key: "tokenizer.ggml.pre",
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "tokenizer.ggml.pre = \"qwen2\" is not supported (supported: default, llama-bpe, llama3, smollm, gpt-2)"
    );

    let mut p = parts();
    p.merges[3] = "hello".into();
    assert!(err(p).contains("tokenizer.ggml.merges[3] = \"hello\""));
    let mut p = parts();
    p.merges[0] = "h ".into();
    assert!(err(p).contains("tokenizer.ggml.merges[0] = \"h \""));

    let mut p = parts();
    p.bos_id = Some(1 << 20);
    assert!(err(p).contains("tokenizer.ggml.bos_token_id = 1048576"));
    let mut p = parts();
    p.pad_id = Some(u32::MAX);
    assert!(err(p).contains("tokenizer.ggml.padding_token_id"));

    let mut p = parts();
    p.token_types.as_mut().unwrap().pop();
    assert!(err(p).contains("tokenizer.ggml.token_type has"));
    let mut p = parts();
    p.token_types.as_mut().unwrap()[7] = 42;
    assert!(err(p).contains("tokenizer.ggml.token_type[7] = 42"));
    let mut p = parts();
    p.scores = Some(vec![0.0; 3]);
    assert!(err(p).contains("tokenizer.ggml.scores has 3"));
    let mut p = parts();
    let mut s = vec![0.0; p.tokens.len()];
    s[5] = f32::NAN;
    p.scores = Some(s);
    assert!(err(p).contains("tokenizer.ggml.scores[5] = NaN"));

    let mut p = parts();
    p.tokens[300 - 45] = "h".into();
    assert!(err(p).contains("repeats tokenizer.ggml.tokens"));
    let mut p = parts();
    p.tokens.clear();
    p.token_types = None;
    assert!(err(p).contains("tokenizer.ggml.tokens is empty"));
}

#[test]
fn odd_but_loadable_parts_do_not_panic() {
    // Merges of unknown pieces are left out; the rest still tokenizes.
    let mut p = parts();
    p.merges.push("zz qq".into());
    p.merges.push("x y".into()); // "xy" is no token
    let t = tok(p);
    assert_eq!(t.encode("xy").unwrap(), vec![id(&t, "x"), id(&t, "y")]);
    // Without token types everything is NORMAL: "<|end|>" is plain text then.
    let mut p = parts();
    p.token_types = None;
    let t = tok(p);
    assert!(!t.is_control(id(&t, CONTROL)));
    assert_eq!(
        t.decode(&t.encode("<|end|>").unwrap(), false).unwrap(),
        "<|end|>"
    );
    // A byte without its piece: encoding text with it is refused, not dropped silently.
    let mut p = parts();
    let at = p.tokens.iter().position(|t| t == "Ã").unwrap();
    p.tokens[at] = "Ã-missing".into();
    let t = tok(p);
    let e = t.encode("é").unwrap_err().to_string();
    assert!(e.contains("0xC3"), "{e}");
    assert_eq!(t.encode("hello").unwrap(), vec![id(&t, "hello")]);
}
