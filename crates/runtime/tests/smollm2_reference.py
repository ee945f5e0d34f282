"""Reference token ids for crates/runtime/tests/smollm2.rs, independent of the Rust side's construction.

Builds SmolLM2's tokenizer the way its Hugging Face tokenizer.json describes it (BPE over the GGUF's tokens and
merges; pre-tokenizer Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=False, use_regex=True)];
CONTROL tokens as special added tokens) with the Python `tokenizers` package and gguf-py, and prints, as JSON,
for each input line of stdin (JSON strings): the ids with special tokens parsed and with them taken literally.

Usage: smollm2_reference.py FILE.gguf < inputs.jsonl
"""

import json
import sys

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CONTROL = 3


def field_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def main():
    reader = gguf.GGUFReader(sys.argv[1])
    tokens = field_strings(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field_strings(reader, "tokenizer.ggml.merges")]
    f = reader.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == CONTROL]
    )
    for line in sys.stdin:
        text = json.loads(line)
        tk.encode_special_tokens = False
        parsed = tk.encode(text, add_special_tokens=False).ids
        tk.encode_special_tokens = True
        literal = tk.encode(text, add_special_tokens=False).ids
        print(json.dumps({"text": text, "parsed": parsed, "literal": literal}))


if __name__ == "__main__":
    main()
