//! The tokenizer against upstream's recorded behaviour (`fixtures/tokenizer/tokenizer_fixtures.json`,
//! `fixtures/expected/dev/expected.json`).

mod common;

use common::*;
use meddr_tokenizer::{token_type, MedDrTokenizer, PieceKind, SentencePieceModel, TokenizerSpec};

#[test]
fn encode_cases_match_upstream() {
    let spec = fixture_spec();
    let fx = fixtures();
    let cases = fx["encode_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 27);
    for (name, tok) in all_runtimes(&spec) {
        for c in cases {
            let text = c["text"].as_str().unwrap();
            let want = ids(&c["input_ids"]);
            assert_eq!(tok.encode(text).unwrap(), want, "[{name}] encode {text:?}");
            let toks: Vec<&str> = want.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
            let want_toks: Vec<&str> = c["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert_eq!(toks, want_toks, "[{name}] tokens of {text:?}");
            assert_eq!(
                tok.decode(&want, false).unwrap(),
                c["decode"].as_str().unwrap(),
                "[{name}] decode {text:?}"
            );
            assert_eq!(
                tok.decode(&want, true).unwrap(),
                c["decode_skip_special"].as_str().unwrap(),
                "[{name}] decode(skip) {text:?}"
            );
        }
    }
}

#[test]
fn decode_cases_match_upstream() {
    let spec = fixture_spec();
    let fx = fixtures();
    let cases = fx["decode_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 13);
    for (name, tok) in all_runtimes(&spec) {
        for c in cases {
            let i = ids(&c["ids"]);
            assert_eq!(
                tok.decode(&i, false).unwrap(),
                c["decode"].as_str().unwrap(),
                "[{name}] decode {i:?}"
            );
            assert_eq!(
                tok.decode(&i, true).unwrap(),
                c["decode_skip_special"].as_str().unwrap(),
                "[{name}] decode(skip) {i:?}"
            );
        }
    }
}

#[test]
fn prompts_tokenise_exactly() {
    let spec = fixture_spec();
    let exp = read_json(&shared().join("fixtures/expected/dev/expected.json"));
    let samples = exp["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4);
    for (name, tok) in all_runtimes(&spec) {
        for s in samples {
            let want = ids(&s["input_ids"]);
            assert_eq!(want.len() as u64, s["num_input_ids"].as_u64().unwrap());
            let got = tok.encode(s["prompt"].as_str().unwrap()).unwrap();
            assert_eq!(got, want, "[{name}] prompt of {}", s["id"]);
            // The prompt also decodes back (specials kept) to text that re-encodes to the same ids.
            let greedy = ids(&s["upstream_generate_tokens"]);
            assert_eq!(
                tok.decode(&greedy, true).unwrap(),
                s["upstream_generate_text"].as_str().unwrap(),
                "[{name}] generated text of {}",
                s["id"]
            );
            let g24 = ids(&s["greedy_tokens"]);
            assert_eq!(
                tok.decode(&g24, true).unwrap(),
                s["greedy_text"].as_str().unwrap(),
                "[{name}] greedy_text"
            );
            assert_eq!(
                tok.decode(&g24, false).unwrap(),
                s["greedy_text_keep_special"].as_str().unwrap(),
                "[{name}] greedy_text_keep_special"
            );
        }
    }
}

#[test]
fn decode_stream_yields_the_same_text() {
    let spec = fixture_spec();
    let tok = MedDrTokenizer::from_spec(&spec).unwrap();
    let exp = read_json(&shared().join("fixtures/expected/dev/expected.json"));
    let mut seqs: Vec<Vec<u32>> = exp["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| ids(&s["greedy_tokens"]))
        .collect();
    // Multi-byte characters split over byte pieces, an invalid byte at the end, specials in between.
    seqs.push(vec![
        1953, 237, 193, 182, 7, 1939, 249, 168, 161, 137, 2002, 237, 193,
    ]);
    for seq in seqs {
        let mut stream = tok.decode_stream();
        let mut out = String::new();
        for &id in &seq {
            if let Some(d) = stream.step(id).unwrap() {
                assert!(!d.is_empty());
                out.push_str(&d);
            }
        }
        if let Some(d) = stream.finish().unwrap() {
            out.push_str(&d);
        }
        assert_eq!(out, tok.decode(&seq, true).unwrap(), "stream of {seq:?}");
        assert_eq!(stream.text().unwrap(), out);
    }
}

/// The streaming decoder's windowed steps hand out, step for step, what decoding every id so far and
/// taking the new complete text gives (the quadratic definition it replaced), on random sequences biased
/// towards the pieces that make a window's start tricky: byte pieces, a lone or short `▁` piece, specials
/// and added tokens, the unknown piece. Half end with `step_last`, half with `finish`.
#[test]
fn decode_stream_steps_equal_whole_decodes_on_random_ids() {
    let spec = fixture_spec();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for (name, tok) in all_runtimes(&spec) {
        let n = tok.vocab_size() as u32;
        let tricky: Vec<u32> = (0..n)
            .filter(|&i| {
                let t = tok.id_to_token(i).unwrap_or_default();
                t.starts_with("<0x")
                    || (t.starts_with('\u{2581}') && t.chars().count() <= 2)
                    || tok.is_special(i)
                    || !(3..2000).contains(&i)
            })
            .collect();
        assert!(tricky.len() > 256, "[{name}] {} tricky ids", tricky.len());
        // By hand first: windows that start at a lone `▁` (1920: nothing on its own) or at a skipped
        // `<|im_end|>` (7), before words (`▁the` 269, `▁a` 267).
        let mut seqs: Vec<Vec<u32>> = vec![
            vec![269, 1920, 269],
            vec![269, 1920, 1920, 267],
            vec![1920, 269, 1920, 7, 267],
            vec![269, 7, 267, 1920, 7, 269],
        ];
        for _ in 0..1500 {
            let len = 1 + (next() % 48) as usize;
            seqs.push(
                (0..len)
                    .map(|_| {
                        if next() % 2 == 0 {
                            tricky[(next() % tricky.len() as u64) as usize]
                        } else {
                            (next() % u64::from(n)) as u32
                        }
                    })
                    .collect(),
            );
        }
        for (case, seq) in seqs.iter().enumerate() {
            let len = seq.len();
            let mut stream = tok.decode_stream();
            let mut emitted = 0usize;
            let whole_delta = |full: String, emitted: &mut usize| {
                if full.len() <= *emitted || !full.is_char_boundary(*emitted) {
                    return None;
                }
                let d = full[*emitted..].to_owned();
                *emitted = full.len();
                Some(d)
            };
            let last_step = case % 2 == 0;
            for (i, &id) in seq.iter().enumerate() {
                let full = tok.decode(&seq[..=i], true).unwrap();
                let (got, want) = if last_step && i + 1 == len {
                    (stream.step_last(id).unwrap(), whole_delta(full, &mut emitted))
                } else {
                    let want = if full.ends_with('\u{FFFD}') {
                        None
                    } else {
                        whole_delta(full, &mut emitted)
                    };
                    (stream.step(id).unwrap(), want)
                };
                assert_eq!(got, want, "[{name}] case {case}, step {i} of {seq:?}");
            }
            if !last_step {
                let want = whole_delta(tok.decode(seq, true).unwrap(), &mut emitted);
                assert_eq!(stream.finish().unwrap(), want, "[{name}] finish of {seq:?}");
            }
        }
    }
}

fn kind_name(k: PieceKind) -> &'static str {
    match k {
        PieceKind::Normal => "normal",
        PieceKind::Unknown => "unknown",
        PieceKind::Control => "control",
        PieceKind::UserDefined => "user_defined",
        PieceKind::Unused => "unused",
        PieceKind::Byte => "byte",
    }
}

#[test]
fn pieces_scores_and_types_match() {
    let fx = fixtures();
    let bytes = std::fs::read(fixture_dir().join("tokenizer.model")).unwrap();
    let sp = SentencePieceModel::parse(&bytes).unwrap();
    let want = fx["sentencepiece_pieces"].as_array().unwrap();
    assert_eq!(sp.pieces.len(), 2000);
    assert_eq!(want.len(), 2000);
    let user_defined = ids(&fx["sentencepiece_user_defined_ids"]);
    assert_eq!(user_defined, vec![6, 7, 8]);
    for (i, (p, w)) in sp.pieces.iter().zip(want).enumerate() {
        assert_eq!(p.piece, w[0].as_str().unwrap(), "piece {i}");
        assert_eq!(p.score, w[1].as_f64().unwrap() as f32, "score of piece {i}");
        // The fixture lists SentencePiece's public predicates, under which user-defined pieces read "normal".
        let kind = if user_defined.contains(&(i as u32)) {
            assert_eq!(p.kind, PieceKind::UserDefined, "piece {i}");
            "normal"
        } else {
            kind_name(p.kind)
        };
        assert_eq!(kind, w[2].as_str().unwrap(), "type of piece {i}");
    }
    assert!(sp.byte_fallback && !sp.add_dummy_prefix && !sp.remove_extra_whitespaces);
    assert_eq!((sp.unk_id, sp.bos_id, sp.eos_id, sp.pad_id), (0, 1, 2, -1));

    // GGUF arrays: SentencePiece values, except that llama.cpp's converter turns every added_tokens_decoder
    // entry into CONTROL (all are special here) with score -1000 and appends the added tokens.
    let spec = fixture_spec();
    assert_eq!(
        spec.tokens.len(),
        fx["len_tokenizer"].as_u64().unwrap() as usize
    );
    let decoder = fx["added_tokens_decoder"].as_object().unwrap();
    #[allow(clippy::needless_range_loop)]
    for i in 0..spec.tokens.len() {
        if let Some(a) = decoder.get(&i.to_string()) {
            assert_eq!(spec.tokens[i], a["content"].as_str().unwrap());
            assert_eq!(
                (spec.token_types[i], spec.scores[i]),
                (token_type::CONTROL, -1000.0),
                "token {i}"
            );
        } else {
            assert!(i < 2000, "token {i} must be a piece");
            assert_eq!(spec.tokens[i], want[i][0].as_str().unwrap());
            assert_eq!(spec.scores[i], want[i][1].as_f64().unwrap() as f32);
            assert_eq!(spec.token_types[i], sp.pieces[i].kind.gguf_type());
        }
    }
    assert_eq!(&spec.token_types[3..6], &[token_type::CONTROL; 3]);
    assert_eq!(spec.token_types[9], token_type::BYTE);
    assert_eq!(spec.token_types[1920], token_type::NORMAL);
}

#[test]
fn special_token_metadata() {
    let fx = fixtures();
    let spec = fixture_spec();
    assert_eq!(spec.bos_id as u64, fx["bos_token_id"].as_u64().unwrap());
    assert_eq!(spec.eos_id as u64, fx["eos_token_id"].as_u64().unwrap());
    assert_eq!(spec.unk_id as u64, fx["unk_token_id"].as_u64().unwrap());
    assert_eq!(spec.pad_id.map(u64::from), fx["pad_token_id"].as_u64());
    assert_eq!(spec.add_bos, fx["add_bos_token"].as_bool().unwrap());
    assert_eq!(spec.add_eos, fx["add_eos_token"].as_bool().unwrap());
    assert!(!spec.add_space_prefix);
    assert_eq!(
        spec.chat_template, None,
        "the fixture config has no chat_template"
    );
    let special = ids(&fx["all_special_ids"]);
    for (name, tok) in all_runtimes(&spec) {
        assert_eq!(tok.vocab_size(), 2009);
        for id in 0..2009u32 {
            assert_eq!(
                tok.is_special(id),
                special.contains(&id),
                "[{name}] is_special({id})"
            );
            assert_eq!(tok.id_to_token(id).unwrap(), spec.tokens[id as usize]);
        }
        for (t, id) in fx["internvl_token_ids"]
            .as_object()
            .unwrap()
            .iter()
            .chain(fx["chatml_token_ids"].as_object().unwrap())
        {
            assert_eq!(tok.token_to_id(t), Some(id.as_u64().unwrap() as u32));
        }
        assert_eq!(tok.id_to_token(2009), None);
        assert!(tok.decode(&[2009], true).is_err());
    }
}

#[test]
fn add_bos_goes_through_the_post_processor() {
    let dir = scratch("addbos");
    for f in [
        "tokenizer.model",
        "added_tokens.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(fixture_dir().join(f), dir.join(f)).unwrap();
    }
    let mut cfg = read_json(&fixture_dir().join("tokenizer_config.json"));
    cfg["add_bos_token"] = true.into();
    cfg["chat_template"] = "{{ messages }}".into();
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let spec = TokenizerSpec::from_hf_dir(&dir).unwrap();
    assert!(spec.add_bos && !spec.add_eos);
    assert_eq!(spec.chat_template.as_deref(), Some("{{ messages }}"));
    for (name, tok) in all_runtimes(&spec) {
        assert_eq!(tok.encode("x").unwrap(), vec![1, 1953], "[{name}]");
        assert_eq!(tok.encode("").unwrap(), vec![1], "[{name}]");
    }
}

#[test]
fn tokenizer_json_only_directory() {
    let spec = fixture_spec();
    let dir = scratch("jsononly");
    std::fs::write(dir.join("tokenizer.json"), &spec.hf_json).unwrap();
    std::fs::copy(
        fixture_dir().join("tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    let js = TokenizerSpec::from_hf_dir(&dir).unwrap();
    assert_eq!(js.tokens, spec.tokens);
    assert_eq!(js.token_types, spec.token_types);
    assert_eq!(
        (js.bos_id, js.eos_id, js.unk_id, js.pad_id),
        (spec.bos_id, spec.eos_id, spec.unk_id, spec.pad_id)
    );
    assert_eq!(
        (js.add_bos, js.add_eos, js.add_space_prefix),
        (false, false, false)
    );
    // Scores are rebuilt from merge ranks: a merged piece's score is minus its first merge rank, so the
    // score order of merge results is the merge order.
    let fx = fixtures();
    let want = fx["sentencepiece_pieces"].as_array().unwrap();
    let mut merged: Vec<usize> = (265..2000)
        .filter(|&i| spec.tokens[i].chars().count() > 1)
        .collect();
    merged.sort_by(|&a, &b| js.scores[b].total_cmp(&js.scores[a]));
    let mut by_sp = merged.clone();
    by_sp.sort_by(|&a, &b| {
        want[b][1]
            .as_f64()
            .unwrap()
            .total_cmp(&want[a][1].as_f64().unwrap())
    });
    assert_eq!(merged, by_sp);
    let tok = MedDrTokenizer::from_spec(&js).unwrap();
    for c in fx["encode_cases"].as_array().unwrap() {
        assert_eq!(
            tok.encode(c["text"].as_str().unwrap()).unwrap(),
            ids(&c["input_ids"])
        );
        assert_eq!(
            tok.decode(&ids(&c["input_ids"]), false).unwrap(),
            c["decode"].as_str().unwrap()
        );
    }
}

/// Without `tokenizer.huggingface.json` the engine rebuilds the JSON from the GGUF arrays. Every CONTROL token
/// is then matched in text (llama.cpp's behaviour), so only text spelling a SentencePiece-only control piece
/// (`<|Human|>`) differs from upstream.
#[test]
fn gguf_arrays_without_json() {
    let spec = fixture_spec();
    let parts = TokenizerSpec::from_gguf_parts(
        spec.tokens.clone(),
        spec.scores.clone(),
        spec.token_types.clone(),
        spec.bos_id,
        spec.eos_id,
        spec.unk_id,
        spec.pad_id,
        spec.add_bos,
        spec.add_eos,
        spec.add_space_prefix,
        None,
    )
    .unwrap();
    let tok = MedDrTokenizer::from_spec(&parts).unwrap();
    let fx = fixtures();
    let mut checked = 0;
    for c in fx["encode_cases"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        if text.contains("<|Human|>") {
            assert_eq!(tok.encode(text).unwrap()[2..4], [1920, 3]);
            continue;
        }
        assert_eq!(tok.encode(text).unwrap(), ids(&c["input_ids"]), "{text:?}");
        checked += 1;
    }
    assert_eq!(checked, 26);
    let exp = read_json(&shared().join("fixtures/expected/dev/expected.json"));
    for s in exp["samples"].as_array().unwrap() {
        assert_eq!(
            tok.encode(s["prompt"].as_str().unwrap()).unwrap(),
            ids(&s["input_ids"])
        );
    }
}
