#!/usr/bin/env python3
"""Hugging Face tokenizer.json files of every tokenizer shape codecllm imports, for the parity
tests (tests/test-tokenizer.cpp runs scripts/tokenizer-parity.py on each).

    python3 scripts/tokenizer-shapes.py SHAPE LLAMA3_TOKENIZER_JSON OUT_JSON
    python3 scripts/tokenizer-shapes.py gguf GGUF_FILE OUT_JSON

Byte-level shapes keep Llama 3.1's vocabulary and merges and give it another family's
normalizer and pre-tokenizer, as that family's own tokenizer.json writes them:
  qwen2    NFC, then Split (Qwen2/2.5/3's regex: one digit per piece), ByteLevel
  tekken   Split (Mistral Tekken's regex: case-aware words), ByteLevel, ignore_merges
  o200k    Split (Phi-4-mini's / GPT-4o's regex), ByteLevel
  gpt2     ByteLevel with GPT-2's regex, no prefix space
  gpt2-prefix  the same with add_prefix_space
  smollm2  Digits (individual), ByteLevel with GPT-2's regex; 21 bytes have no token of their
           own, as in SmolLM2's vocabulary, and unk_token is null
SentencePiece-style shapes turn the vocabulary into text ('▁' for a space; tokens that are not
whole UTF-8 dropped) with the 256 <0xNN> byte-fallback tokens and <unk> added:
  llama2     Prepend '▁' + Replace ' ' -> '▁' normalizers, byte_fallback, fuse_unk; a decoder that strips
             the leading space (Llama 2, Mistral v0.1, Phi-3 as transformers writes them)
  gemma      Replace ' ' -> '▁', a Split on ' ' (MergedWithPrevious), byte_fallback (Gemma 1/2/3)
  metaspace  a Metaspace pre-tokenizer (prepend_scheme "first", no split), byte_fallback (newer
             conversions of Llama 2 / Mistral)
  metaspace-unk  Metaspace (always, split), no byte fallback: unknown characters become <unk>
gguf: the tokenizer.json a GGUF "gpt2" vocabulary (tokens, merges, token types) stands for,
given its tokenizer.ggml.pre (smollm, llama-bpe, qwen2, tekken, gpt-2 ...).
"""
import json
import struct
import sys

LLAMA3_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
QWEN2_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
               "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
TEKKEN_REGEX = ("[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
                "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
                "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
O200K_REGEX = ("[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
               "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
               "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
SPACE = "\u2581"
SP_SPECIALS = ["<unk>", "<s>", "</s>", "<start_of_turn>", "<end_of_turn>"]


def split(regex):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def byte_level(prefix=False, regex=False):
    return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": regex}


DIGITS = {"type": "Digits", "individual_digits": True}
BYTE_LEVEL_SHAPES = {  # shape: (normalizer, pre-tokenizer steps, ignore_merges)
    "qwen2": ({"type": "NFC"}, [split(QWEN2_REGEX), byte_level()], False),
    "tekken": (None, [split(TEKKEN_REGEX), byte_level()], True),
    "o200k": (None, [split(O200K_REGEX), byte_level()], False),
    "gpt2": (None, [byte_level(False, True)], False),
    "gpt2-prefix": (None, [byte_level(True, True)], False),
    "smollm2": (None, [DIGITS, byte_level(False, True)], False),
}
# tokenizer.ggml.pre -> the same, for GGUF vocabularies (as the families' tokenizer.json have it).
GGUF_PRE = {
    "llama-bpe": (None, [split(LLAMA3_REGEX), byte_level()], True),
    "llama3": (None, [split(LLAMA3_REGEX), byte_level()], True),
    "qwen2": BYTE_LEVEL_SHAPES["qwen2"],
    "tekken": BYTE_LEVEL_SHAPES["tekken"],
    "gpt-4o": BYTE_LEVEL_SHAPES["o200k"],
    "gpt-2": BYTE_LEVEL_SHAPES["gpt2"],
    "default": BYTE_LEVEL_SHAPES["gpt2"],
    "smollm": BYTE_LEVEL_SHAPES["smollm2"],
}
# Bytes that have no token in the smollm2 shape (controls, as SmolLM2's vocabulary lacks them).
MISSING_BYTES = list(range(0x01, 0x09)) + list(range(0x0E, 0x1B))


def byte_alphabet():
    """GPT-2's byte -> character table."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def keep_merges(model):
    """The merges whose two sides and result are all in the vocabulary."""
    vocab = model["vocab"]
    out = []
    for m in model["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            out.append([a, b])
    model["merges"] = out


def byte_level_shape(j, shape):
    normalizer, steps, ignore_merges = BYTE_LEVEL_SHAPES[shape]
    j["normalizer"] = normalizer
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": steps}
    j["model"]["ignore_merges"] = ignore_merges
    if shape == "smollm2":  # the missing bytes' tokens get unreachable spellings
        alphabet = byte_alphabet()
        vocab = j["model"]["vocab"]
        for b in MISSING_BYTES:
            vocab[alphabet[b] * 9] = vocab.pop(alphabet[b])
        j["model"]["unk_token"] = None
        keep_merges(j["model"])
    return j


def sentencepiece_vocab(j):
    """Llama 3.1's vocabulary as SentencePiece-style text, byte tokens and <unk> added."""
    inverse = {c: b for b, c in byte_alphabet().items()}
    vocab, n = {}, 0
    for piece, i in sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1]):
        try:
            text = bytes(inverse[c] for c in piece).decode("utf-8")
        except (UnicodeDecodeError, KeyError):
            text = None
        if text is None or SPACE in text or text.startswith("<0x") or text in SP_SPECIALS:
            text = "<unused%d>" % i  # not whole UTF-8 (or a clash): unreachable
        vocab[text.replace(" ", SPACE)] = i
        n = max(n, i + 1)
    # The library wants the vocabulary's ids to run 0..n-1: Llama 3's added tokens (ids from
    # 128000) give way to the byte tokens, then <unk> and a few SentencePiece specials.
    for b in range(256):
        vocab["<0x%02X>" % b] = n + b
    j["added_tokens"] = []
    for k, content in enumerate(SP_SPECIALS):
        vocab[content] = n + 256 + k
        j["added_tokens"].append({"id": n + 256 + k, "content": content, "single_word": False, "lstrip": False,
                                  "rstrip": False, "normalized": False, "special": True})
    by_id = {i: p for p, i in vocab.items()}
    merges = []
    for m in j["model"]["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        merges.append([by_id[j["model"]["vocab"][a]], by_id[j["model"]["vocab"][b]]])
    j["model"].update({"vocab": vocab, "merges": merges, "byte_fallback": True, "fuse_unk": True, "unk_token": "<unk>",
                       "ignore_merges": False})
    keep_merges(j["model"])


def sentencepiece_shape(j, shape):
    sentencepiece_vocab(j)
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    undo = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]
    if shape == "llama2":
        j["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE}, replace]}
        j["pre_tokenizer"] = None
        j["decoder"] = {"type": "Sequence", "decoders": undo + [{"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    elif shape == "gemma":
        j["normalizer"] = replace
        j["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": False}
        j["decoder"] = {"type": "Sequence", "decoders": undo}
    elif shape == "metaspace":
        j["normalizer"] = None
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first", "split": False}
        j["decoder"] = {"type": "Sequence", "decoders": undo + [{"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    else:  # metaspace-unk
        j["model"]["byte_fallback"] = False
        j["normalizer"] = None
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always", "split": True}
        j["decoder"] = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always", "split": True}
    j["post_processor"] = None
    return j


def gguf_metadata(path):
    """The key/value metadata of a GGUF file (v2/v3): scalars, strings and arrays of them."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)  # the metadata comes first; 64 MiB holds any vocabulary
    magic, version, _, n_kv = struct.unpack_from("<4sIQQ", data, 0)
    if magic != b"GGUF" or version not in (2, 3):
        raise SystemExit("%s: not a GGUF v2/v3 file" % path)
    at = 24
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def value(t):
        nonlocal at
        if t == 8:
            (n,) = struct.unpack_from("<Q", data, at)
            s = data[at + 8:at + 8 + n].decode("utf-8")
            at += 8 + n
            return s
        if t == 9:
            et, n = struct.unpack_from("<IQ", data, at)
            at += 12
            return [value(et) for _ in range(n)]
        (v,) = struct.unpack_from(scalar[t], data, at)
        at += struct.calcsize(scalar[t])
        return v

    kv = {}
    for _ in range(n_kv):
        key = value(8)
        (t,) = struct.unpack_from("<I", data, at)
        at += 4
        kv[key] = value(t)
    return kv


def gguf_tokenizer(path):
    kv = gguf_metadata(path)
    if kv.get("tokenizer.ggml.model") != "gpt2":
        raise SystemExit("%s: tokenizer.ggml.model is %r, not gpt2" % (path, kv.get("tokenizer.ggml.model")))
    pre = kv.get("tokenizer.ggml.pre", "default")
    normalizer, steps, ignore_merges = GGUF_PRE[pre]
    tokens = kv["tokenizer.ggml.tokens"]
    types = kv.get("tokenizer.ggml.token_type", [1] * len(tokens))
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": ty == 4,
              "special": ty == 3} for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (3, 4)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": normalizer,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": steps}, "post_processor": None,
        "decoder": byte_level(),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ", 1) for m in kv["tokenizer.ggml.merges"]]},
    }


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    shape, source, out = sys.argv[1:]
    if shape == "gguf":
        j = gguf_tokenizer(source)
    else:
        with open(source, encoding="utf-8") as f:
            j = json.load(f)
        if shape in BYTE_LEVEL_SHAPES:
            j = byte_level_shape(j, shape)
        elif shape in ("llama2", "gemma", "metaspace", "metaspace-unk"):
            j = sentencepiece_shape(j, shape)
        else:
            print("tokenizer-shapes: unknown shape %r" % shape, file=sys.stderr)
            return 2
    with open(out, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    from tokenizers import Tokenizer  # the library must load what was written
    Tokenizer.from_file(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
