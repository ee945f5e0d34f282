//! Stop strings (OpenAI's `stop`, llama.cpp's "antiprompts") over streamed text.
//!
//! A stop string can span several tokens and a token can hold the start of one, so text that might still
//! become a stop string is held back until the next token decides it; the text let through never contains
//! (or ends inside) a stop string, and what was let through adds up to the final answer exactly.

use crate::{Result, RuntimeError};

/// OpenAI accepts at most 4 stop sequences.
pub const MAX_STOP_STRINGS: usize = 4;

/// Streaming stop-string matcher.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Text received but not yet let through (it ends with a possible start of a stop string).
    held: String,
    stopped: bool,
}

impl StopStrings {
    /// Errors: more than [`MAX_STOP_STRINGS`] strings, or an empty one (it would match before any text).
    pub fn new(stops: Vec<String>) -> Result<Self> {
        if stops.len() > MAX_STOP_STRINGS {
            return Err(RuntimeError::InvalidOption {
                field: "stop",
                value: stops.len().to_string(),
                reason: "at most 4 stop strings are accepted",
            });
        }
        if stops.iter().any(String::is_empty) {
            return Err(RuntimeError::InvalidOption {
                field: "stop",
                value: "\"\"".into(),
                reason: "a stop string must not be empty",
            });
        }
        Ok(StopStrings {
            stops,
            held: String::new(),
            stopped: false,
        })
    }

    /// Whether a stop string has been seen (nothing more is let through).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Takes the next piece of generated text and returns what can be shown now: everything before a stop
    /// string (then [`Self::stopped`] is true), or everything that cannot be the start of one.
    pub fn push(&mut self, delta: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(delta);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            let out = self.held[..at].to_owned();
            self.held.clear();
            return out;
        }
        // The longest tail of the held text that begins some stop string stays held.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let out = self.held[..keep].to_owned();
        self.held.drain(..keep);
        out
    }

    /// The end of generation: held text that never became a stop string is let through.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (Vec<String>, bool) {
        let mut s = StopStrings::new(stops.iter().map(|s| s.to_string()).collect()).unwrap();
        let mut out: Vec<String> = deltas.iter().map(|d| s.push(d)).collect();
        out.push(s.finish());
        (out, s.stopped())
    }

    #[test]
    fn a_stop_string_split_across_tokens_is_never_shown() {
        let (out, stopped) = run(&["\nQ:"], &["The answer", " is 4.\n", "Q", ":", " next"]);
        assert!(stopped);
        assert_eq!(out.concat(), "The answer is 4.");
        assert_eq!(
            out[1], " is 4.",
            "the newline is held until the next token decides it"
        );
    }

    #[test]
    fn a_false_start_is_let_through_unchanged() {
        let (out, stopped) = run(&["\nQ:"], &["a\n", "b", "\nQ", "x"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "a\nb\nQx");
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins_and_multibyte_text_is_cut_on_characters() {
        let (out, stopped) = run(&["é!", "END"], &["xxéEN", "Dé!"]);
        assert!(stopped);
        assert_eq!(out.concat(), "xxé");
        let (out, _) = run(&["ab"], &["ééa"]);
        assert_eq!(out, ["éé", "a"]);
    }

    #[test]
    fn bad_stop_lists_are_refused() {
        assert!(StopStrings::new(vec!["".into()]).is_err());
        assert!(StopStrings::new(vec!["a".into(); 5]).is_err());
    }
}
