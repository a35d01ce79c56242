#!/usr/bin/env python3
"""The BPE parity corpus and its reference ids from Hugging Face's `tokenizers`.

    python3 scripts/tokenizer-parity.py TOKENIZER_JSON OUT_DIR [--seed N] [--cases N_RANDOM]

Writes, for tests/test-tokenizer.cpp to compare against codecllm's own tokenizer:
  OUT_DIR/corpus.bin   the test strings as raw bytes (some deliberately not valid UTF-8)
  OUT_DIR/hf_ids.bin   per string: the ids of tokenizer.encode(text, add_special_tokens=False)
  OUT_DIR/hf_text.bin  per string: tokenizer.decode(those ids, skip_special_tokens=False)
  OUT_DIR/hf_norm.bin  per string: the tokenizer's normalizer's output (only when it has one)
Each file is a sequence of records: u32 little-endian count, then that many bytes (corpus,
hf_text) or u32 ids (hf_ids). Strings that are not valid UTF-8 reach the library as Python's
bytes.decode("utf-8", errors="replace") makes them (each ill-formed subpart -> U+FFFD).

The corpus is deterministic for a seed: every code point of planes 0-3 and every assigned one
above, each after a letter, digit, punctuation, space, newline or apostrophe; unicode categories, runs of every kind of white space and newline, digits of many scripts, English
contractions in every case, emoji sequences (ZWJ, flags, skin tones, keycaps), CJK, Arabic and
Hebrew text with bidi marks, combining marks, code, special tokens written in the text (whole,
partial, mis-cased, glued to words), invalid UTF-8, random mixtures of all of them, and a few
long strings (tens of KiB, long runs of one class).
"""
import argparse
import os
import random
import struct
import sys
import unicodedata


def category_pools():
    """Code points by general category (Python's Unicode database), surrogates left out."""
    pools = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        cat = unicodedata.category(chr(cp))
        if cat == "Cn" and cp % 97 != 0:  # unassigned: a sample is enough
            continue
        pools.setdefault(cat, []).append(cp)
    return pools


WHITESPACE = [" ", "\t", "\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0",
              "\u1680", "\u180e", "\u2000", "\u2001", "\u2002", "\u2003", "\u2006", "\u2009", "\u200a",
              "\u200b", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff", "\u00ad"]
DIGITS = ["0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669",
          "\u0966\u0967\u0968\u0969\u096a", "\uff10\uff11\uff12\uff13", "\u00b2\u00b3\u00b9\u00bc\u00bd",
          "\u2160\u2161\u2162\u216b", "\u2460\u2461\u2462", "\U0001d7ce\U0001d7cf\U0001d7d0", "\u3007\u4e00"]
WORDS = ["hello", "Hello", "HELLO", "world", "the", "The", "a", "I", "naïve", "café", "façade", "Straße",
         "ǅemal", "İstanbul", "ﬁnance", "Ωmega", "Привет", "мир", "Ελλάδα", "日本語", "中文", "한국어",
         "ひらがな", "カタカナ", "ｶﾀｶﾅ", "ＡＢＣ", "עברית", "שָׁלוֹם", "العربية", "مرحبا", "فارسی", "हिन्दी",
         "தமிழ்", "ไทย", "ລາວ", "ქართული", "Հայերեն", "አማርኛ", "ᚠᚢᚦ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𐌰𐌱𐌲", "e\u0301", "a\u0308\u0323",
         "Z\u0351\u0345\u0330a\u035bl\u0322g\u0358o", "x\u20d7", "ſ", "K", "ﬀ", "ǈ"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'M", "'LL", "'D",
                "'ſ", "'K", "’s", "'x", "''", "'", "n't", "'tis", "rock'n'roll", "don't", "I'M", "we'LL",
                "they'Re", "it's'", "'s's", "O'Neil", "y'all'd've"]
EMOJI = ["🦙", "🚀", "😀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳\ufe0f\u200d🌈", "🇫🇷", "🇯🇵🇺🇸", "1\ufe0f\u20e3",
         "#\ufe0f\u20e3", "❤\ufe0f", "☺", "\U0001f9d1\U0001f3ff\u200d\U0001f680", "🫠", "🪿", "🀄", "🂡"]
PUNCT = [".", ",", "!", "?", "...", "…", "—", "–", "-", "--", "(", ")", "[", "]", "{", "}", "<", ">", "<|",
         "|>", "|", "\"", "“", "”", "«", "»", "„", "‚", "・", "。", "、", "،", "؟", "¿", "¡", "@", "#", "$",
         "%", "^", "&", "*", "_", "__", "=", "+", "~", "`", "/", "\\", ";", ":", "€", "£", "¥", "©", "®",
         "™", "°", "±", "×", "÷", "→", "⇒", "∀", "∑", "√", "∞", "≠", "≤", "♠", "♥", "✓", "✗", "★"]
BIDI = ["\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2069",
        "\u061c"]
CODE = ["def f(x):\n    return x**2  # square\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
        "{\"key\": [1, 2.5e-3, null, true], \"s\": \"a\\nb\"}", "SELECT * FROM t WHERE id=42;",
        "<div class=\"x\">&amp;&lt;</div>", "$ ls -la | grep '^d' > out.txt 2>&1", "x=1;y=2\r\nz=3\r\n",
        "    \n\n    indented\n\t\ttabs\n", "if a!=b&&c||d:pass", "https://example.com/a?b=c&d=%20e#f"]


def special_tokens(tokenizer_json):
    import json
    with open(tokenizer_json, encoding="utf-8") as f:
        j = json.load(f)
    return [t["content"] for t in j.get("added_tokens", [])]


def invalid_utf8(rng):
    """Byte strings that are not valid UTF-8, mixed with valid text."""
    kinds = [
        lambda: bytes([rng.randrange(0x80, 0xC0)]),                       # lone continuation
        lambda: bytes([rng.choice([0xC0, 0xC1, 0xF5, 0xF8, 0xFE, 0xFF])]),  # never valid
        lambda: "€".encode()[:rng.choice([1, 2])],                         # truncated 3-byte
        lambda: "🦙".encode()[:rng.choice([1, 2, 3])],                      # truncated 4-byte
        lambda: b"\xe0\x80\xaf",                                            # overlong
        lambda: b"\xc0\xaf",                                                # overlong 2-byte
        lambda: b"\xed\xa0\x80",                                            # surrogate
        lambda: b"\xed\xbf\xbf\xed\xa0\x80",                                # surrogate pair in UTF-8
        lambda: b"\xf4\x90\x80\x80",                                        # above U+10FFFF
        lambda: b"\xf0\x80\x80\x80",                                        # overlong 4-byte
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9))),  # random bytes
    ]
    parts = []
    for _ in range(rng.randrange(1, 6)):
        if rng.random() < 0.5:
            parts.append(rng.choice(kinds)())
        else:
            parts.append(rng.choice(WORDS + PUNCT + WHITESPACE + EMOJI).encode())
    return b"".join(parts)


def fragment(rng, pools, specials):
    """One random piece of tricky text."""
    r = rng.random()
    if r < 0.12:
        return rng.choice(WHITESPACE) * rng.randrange(1, 12)
    if r < 0.20:
        return "".join(rng.choice(WHITESPACE) for _ in range(rng.randrange(1, 8)))
    if r < 0.30:
        d = rng.choice(DIGITS)
        return "".join(rng.choice(d) for _ in range(rng.randrange(1, 14)))
    if r < 0.45:
        return rng.choice(WORDS)
    if r < 0.52:
        return rng.choice(CONTRACTIONS)
    if r < 0.58:
        return rng.choice(EMOJI)
    if r < 0.68:
        return rng.choice(PUNCT)
    if r < 0.72:
        return rng.choice(BIDI)
    if r < 0.76:
        return rng.choice(CODE)
    if r < 0.84 and specials:
        s = rng.choice(specials[:12] + [rng.choice(specials)])
        m = rng.random()
        if m < 0.6:
            return s
        if m < 0.75:
            return s[: rng.randrange(1, len(s))]           # a prefix only
        if m < 0.9:
            return s.upper() if rng.random() < 0.5 else s.replace("|", "｜")
        return s[:-2] + s                                   # overlapping starts
    cat = rng.choice(sorted(pools))
    return "".join(chr(rng.choice(pools[cat])) for _ in range(rng.randrange(1, 4)))


def make_corpus(seed, n_cases, specials):
    rng = random.Random(seed)
    pools = category_pools()
    cases = [b""]
    # Each category alone, then next to letters, digits and spaces.
    for cat in sorted(pools):
        sample = [chr(c) for c in rng.sample(pools[cat], min(40, len(pools[cat])))]
        cases.append("".join(sample).encode("utf-8", "surrogatepass"))
        cases.append((" ".join(sample) + " ab1 " + "x".join(sample)).encode())
    # Every assigned code point, and every unassigned one in planes 0-3 (where Unicode's newer
    # versions add letters and numbers), after a letter, digit, punctuation, space, newline or
    # apostrophe: the pieces show how the regex classifies each one.
    every = [cp for cp in range(0x40000) if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) != "Co"]
    every += [cp for cp in range(0x40000, 0x110000) if unicodedata.category(chr(cp)) not in ("Cn", "Co")]
    contexts = ["a", "1", "!", " ", "\n", "'"]
    for b in range(0, len(every), 64):
        cases.append("".join(contexts[cp % 6] + chr(cp) for cp in every[b:b + 64]).encode())
    # White space and newline runs of every kind and length, alone and between words.
    for w in WHITESPACE:
        for k in (1, 2, 3, 5, 17):
            cases.append((w * k).encode())
            cases.append(("a" + w * k + "b").encode())
            cases.append(("a" + w * k).encode())
            cases.append((w * k + "!").encode())
    # Digits: run lengths around the 3-digit groups.
    for d in DIGITS:
        for k in range(1, 11):
            cases.append(("x" + d[0] * k + " " + "".join(d[i % len(d)] for i in range(k))).encode())
    for c in CONTRACTIONS:
        for ctx in ("{}", "it{}", "IT{} ok", " {}", "'{}'", "{}{}", "1{}", "\n{}"):
            cases.append(ctx.format(c, c).encode())
    for s in specials[:16] + specials[-4:]:
        for ctx in ("{}", " {}", "{} ", "a{}b", "{}{}", "\n{}\n", "<|{}|>", "{}hello"):
            cases.append(ctx.format(s, s).encode())
    for t in WORDS + EMOJI + PUNCT + CODE + BIDI:
        cases.append(t.encode())
        cases.append((" " + t + " " + t + "\n").encode())
    # Random mixtures and invalid UTF-8.
    for _ in range(n_cases):
        if rng.random() < 0.08:
            cases.append(invalid_utf8(rng))
        else:
            cases.append("".join(fragment(rng, pools, specials) for _ in range(rng.randrange(1, 24))).encode())
    # Long strings: a long mixture, and long runs of one class.
    cases.append("".join(fragment(rng, pools, specials) for _ in range(6000)).encode())
    for run in (" " * 70000, "a" * 70000, "7" * 70000, "\n" * 30000, " \n" * 30000, "日" * 30000, "!" * 70000,
                ("ab " * 20000), "🦙" * 20000):
        cases.append(run.encode())
    return cases


def write_records(path, records):
    with open(path, "wb") as f:
        for r in records:
            f.write(struct.pack("<I", len(r)))
            f.write(r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokenizer_json")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=20240723)
    ap.add_argument("--cases", type=int, default=30000, help="random mixtures, after the systematic cases")
    a = ap.parse_args()
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("tokenizer-parity: the Python package 'tokenizers' is missing (scripts/setup.sh installs it "
              "into .deps/venv)", file=sys.stderr)
        return 3
    tok = Tokenizer.from_file(a.tokenizer_json)
    cases = make_corpus(a.seed, a.cases, special_tokens(a.tokenizer_json))
    texts = [c.decode("utf-8", errors="replace") for c in cases]
    encodings = tok.encode_batch(texts, add_special_tokens=False)
    ids = [e.ids for e in encodings]
    decoded = tok.decode_batch(ids, skip_special_tokens=False)
    os.makedirs(a.out_dir, exist_ok=True)
    write_records(os.path.join(a.out_dir, "corpus.bin"), cases)
    with open(os.path.join(a.out_dir, "hf_ids.bin"), "wb") as f:
        for i in ids:
            f.write(struct.pack("<I", len(i)))
            f.write(struct.pack("<%dI" % len(i), *i))
    write_records(os.path.join(a.out_dir, "hf_text.bin"), [d.encode("utf-8") for d in decoded])
    if tok.normalizer is not None:
        write_records(os.path.join(a.out_dir, "hf_norm.bin"), [tok.normalizer.normalize_str(t).encode("utf-8") for t in texts])
    print("tokenizer-parity: %d strings, %d bytes, %d tokens, tokenizers %s" % (
        len(cases), sum(map(len, cases)), sum(map(len, ids)), __import__("tokenizers").__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
