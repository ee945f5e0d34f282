//! Independent reference: the Python `sentencepiece` library on random text and random ids, for the MedDr
//! fixture model and for a real LLaMA SentencePiece model (Mistral's v1 tokenizer, 32000 pieces,
//! add_dummy_prefix true), which is downloaded once into `<workspace>/.cache/` through the venv's pip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use meddr_tokenizer::{MedDrTokenizer, SentencePieceModel, TokenizerSpec};
use serde_json::{json, Value};

const REFERENCE: &str = r#"
import json, sys
import sentencepiece as spm
inp = json.load(open(sys.argv[1], encoding='utf-8'))
sp = spm.SentencePieceProcessor(model_file=inp['model'])
enc = [sp.encode(t) for t in inp['texts']]
dec = []
for seq in inp['ids']:
    # transformers' LlamaTokenizer.convert_tokens_to_string: cut one leading '\u2581', then SentencePiece.
    pieces = [sp.id_to_piece(i) for i in seq]
    if pieces and pieces[0].startswith('\u2581'):
        pieces[0] = pieces[0][1:]
    dec.append(sp.decode_pieces(pieces))
json.dump({'encode': enc, 'decode': dec, 'size': sp.get_piece_size()}, open(sys.argv[2], 'w', encoding='utf-8'))
"#;

fn reference(
    model: &Path,
    texts: &[String],
    id_seqs: &[Vec<u32>],
    tag: &str,
) -> (Vec<Vec<u32>>, Vec<String>) {
    let dir = scratch(&format!("spref-{tag}"));
    let (inp, out) = (dir.join("in.json"), dir.join("out.json"));
    std::fs::write(
        &inp,
        json!({"model": model, "texts": texts, "ids": id_seqs}).to_string(),
    )
    .unwrap();
    let res = Command::new(python())
        .arg("-c")
        .arg(REFERENCE)
        .arg(&inp)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "python sentencepiece failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let v = read_json(&out);
    let enc = v["encode"].as_array().unwrap().iter().map(ids).collect();
    let dec = v["decode"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    (enc, dec)
}

const WORDS: &[&str] = &[
    "the",
    "chest",
    "radiograph",
    "lesion",
    "Findings",
    "impression",
    "normal",
    "tumor",
    "optic",
    "disc",
    "patient",
    "shows",
    "clear",
    "lung",
    "fields",
    "effusion",
    "cardiomegaly",
    "Hello",
    "world",
    "aaaa",
    "    ",
    "...",
    "----",
    "question",
    "answer",
    "<s>",
    "</s>",
    "<unk>",
    "<|Human|>",
    "2019",
    "3.2",
    "×",
];
const CHARS: &[&str] = &[
    "a",
    "b",
    "e",
    "t",
    "Z",
    "0",
    "1",
    "7",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "\r",
    ".",
    ",",
    ";",
    ":",
    "!",
    "?",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "<",
    ">",
    "|",
    "-",
    "_",
    "'",
    "\"",
    "/",
    "\\",
    "@",
    "#",
    "$",
    "%",
    "^",
    "&",
    "*",
    "+",
    "=",
    "~",
    "`",
    "é",
    "ß",
    "ø",
    "ñ",
    "Ω",
    "∑",
    "µ",
    "°",
    "–",
    "中",
    "文",
    "😀",
    "👍🏽",
    "\u{301}",
    "\u{200b}",
    "\u{2581}",
    "\u{0}",
    "привет",
    "مرحبا",
    "カタカナ",
    "한국어",
    "ﬁ",
    "Ⅻ",
];

fn random_texts(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut out: Vec<String> = ["", " ", "   ", " a", "a ", "\n", " \n ", "a  b   c", "😀"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    while out.len() < n {
        let mut s = String::new();
        for _ in 0..1 + rng.below(30) {
            match rng.below(3) {
                0 => s.push_str(WORDS[rng.below(WORDS.len())]),
                1 => s.push_str(CHARS[rng.below(CHARS.len())]),
                _ => s.push(' '),
            }
        }
        out.push(s);
    }
    out
}

fn random_ids(seed: u64, n: usize, pools: &[(u32, u32)]) -> Vec<Vec<u32>> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            (0..1 + rng.below(10))
                .map(|_| {
                    let (lo, hi) = pools[rng.below(pools.len())];
                    lo + rng.below((hi - lo) as usize) as u32
                })
                .collect()
        })
        .collect()
}

fn compare(tok: &MedDrTokenizer, model: &Path, texts: &[String], seqs: &[Vec<u32>], tag: &str) {
    let (enc, dec) = reference(model, texts, seqs, tag);
    let mut bad = Vec::new();
    for (t, want) in texts.iter().zip(&enc) {
        let got = tok.encode(t).unwrap();
        if &got != want {
            bad.push(format!("encode {t:?}: ours {got:?} sentencepiece {want:?}"));
        }
    }
    for (s, want) in seqs.iter().zip(&dec) {
        let got = tok.decode(s, false).unwrap();
        if &got != want {
            bad.push(format!("decode {s:?}: ours {got:?} reference {want:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "[{tag}] {} mismatches of {}:\n{}",
        bad.len(),
        texts.len() + seqs.len(),
        bad[..bad.len().min(10)].join("\n")
    );
}

#[test]
fn fixture_model_matches_sentencepiece() {
    let spec = fixture_spec();
    let model = fixture_dir().join("tokenizer.model");
    // No HF special ids in the random sequences (those are pinned by the fixtures): controls 3-5, bytes, pieces.
    let seqs = random_ids(11, 300, &[(3, 6), (9, 265), (9, 265), (265, 2000)]);
    // Texts are free of added tokens, so ours must equal plain `sp.encode`.
    let texts: Vec<String> = random_texts(5, 400)
        .into_iter()
        .filter(|t| {
            ![
                "<|im_start|>",
                "<|im_end|>",
                "<|im_sep|>",
                "<unk>",
                "<|startoftext|>",
                "<|endoftext|>",
            ]
            .iter()
            .any(|s| t.contains(s))
        })
        .collect();
    assert!(texts.len() > 300);
    for (name, tok) in all_runtimes(&spec) {
        compare(&tok, &model, &texts, &seqs, &format!("fixture {name}"));
    }
}

fn mistral_model() -> PathBuf {
    let cached = workspace_root().join(".cache/mistral-tokenizer.model.v1");
    if cached.is_file() {
        return cached;
    }
    let dl = scratch("mistral-download");
    let res = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "mistral-common==1.13.1",
            "-d",
        ])
        .arg(&dl)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "cannot download mistral-common==1.13.1 for the LLaMA SentencePiece test (needs PyPI): {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let wheel = dl.join("mistral_common-1.13.1-py3-none-any.whl");
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    let script = "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('mistral_common/data/tokenizer.model.v1'))";
    let tmp = cached.with_extension("partial");
    let res = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&wheel)
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "cannot extract tokenizer.model.v1: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::rename(&tmp, &cached).unwrap();
    cached
}

#[test]
fn llama_model_matches_sentencepiece() {
    let model = mistral_model();
    let sp = SentencePieceModel::parse(&std::fs::read(&model).unwrap()).unwrap();
    assert_eq!(sp.pieces.len(), 32000);
    assert!(sp.byte_fallback && sp.add_dummy_prefix);
    let dir = scratch("mistral");
    std::fs::copy(&model, dir.join("tokenizer.model")).unwrap();
    // Plain SentencePiece: no BOS, and no HF special tokens (their decoding is pinned by the MedDr fixtures).
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"add_bos_token": false, "add_eos_token": false}"#,
    )
    .unwrap();
    let spec = TokenizerSpec::from_hf_dir(&dir).unwrap();
    assert!(spec.add_space_prefix);
    assert_eq!((spec.bos_id, spec.eos_id, spec.unk_id), (1, 2, 0));
    let texts = random_texts(23, 400);
    let seqs = random_ids(29, 300, &[(0, 3), (3, 259), (3, 259), (259, 32000)]);
    let json_v: Value = serde_json::from_str(&spec.hf_json).unwrap();
    assert!(json_v["model"]["merges"].as_array().unwrap().len() > 30000);
    for (name, tok) in all_runtimes(&spec) {
        compare(&tok, &model, &texts, &seqs, &format!("llama {name}"));
    }
}
