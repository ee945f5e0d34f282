//! Prompts against upstream's exact strings and ids (`expected.json → samples[]`).

mod common;

use common::*;
use meddr_runtime::{build_prompt, python_strip};

#[test]
fn prompts_and_ids_match_upstream() {
    let exp = expected();
    let tok = tokenizer();
    let n_img = exp["num_image_token"].as_u64().unwrap() as usize;
    let samples = exp["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4);
    for s in samples {
        let id = s["id"].as_str().unwrap();
        let q = s["question"].as_str().unwrap();
        let has_image = s["image"].is_string();
        let p = build_prompt("Answer the questions.", q, has_image, n_img);
        assert_eq!(p, s["prompt"].as_str().unwrap(), "{id}: prompt string");
        let ids = tok.encode(&p).unwrap();
        assert_eq!(ids, u32s(&s["input_ids"]), "{id}: prompt ids");
        // Surrounding whitespace in the question is stripped like upstream's demo does.
        let padded = format!(" \n\t{q}\u{3000}\u{1f} ");
        assert_eq!(
            build_prompt("Answer the questions.", &padded, has_image, n_img),
            p,
            "{id}"
        );
    }
}

#[test]
fn strip_follows_python_isspace() {
    // U+001C..U+001F are whitespace for Python's str.strip() but not for Rust's trim().
    assert_eq!(
        python_strip("\u{1c}\u{1d} a b \u{1e}\u{1f}\u{85}\u{a0}"),
        "a b"
    );
    assert_eq!(
        python_strip("\u{200b}x"),
        "\u{200b}x",
        "zero-width space is not whitespace in Python"
    );
    assert_eq!(python_strip(""), "");
}
