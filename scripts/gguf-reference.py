#!/usr/bin/env python3
"""Independent references for quantized GGUF import (tests/test-gguf-real.cpp), from the `gguf`
package on PyPI (llama.cpp's own Python reader and dequantizer) and numpy:

  gguf-reference.py blocks TYPE IN.bin OUT.f32   dequantize raw blocks of ggml TYPE (e.g. Q4_K)
                                                 into little-endian f32
  gguf-reference.py crcs MODEL.gguf              one line per tensor: name, CRC-32 (zlib) of its
                                                 values dequantized to little-endian f32
  gguf-reference.py greedy MODEL.gguf N ID...    a float64 numpy forward pass of the Llama model
                                                 from the prompt ids; prints N greedy ids and the
                                                 margin between the two best logits at each step
"""
import sys
import zlib

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize


def tensor_values(t):
    """A tensor's values as float32 in PyTorch order [out, in]."""
    values = dequantize(t.data, t.tensor_type).astype(np.float32)
    return values.reshape(tuple(int(d) for d in reversed(t.shape.tolist())))


def cmd_blocks(type_name, in_path, out_path):
    raw = np.fromfile(in_path, dtype=np.uint8)
    values = dequantize(raw.reshape(1, -1), GGMLQuantizationType[type_name]).astype("<f4")
    values.tofile(out_path)


def cmd_crcs(path):
    for t in GGUFReader(path).tensors:
        print(t.name, zlib.crc32(np.ascontiguousarray(tensor_values(t), dtype="<f4").tobytes()))


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_interleaved(x, theta):
    """x (T, heads, head_dim): rotates adjacent pairs (GGUF's permuted q/k layout)."""
    t, _, hd = x.shape
    freqs = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    angle = np.arange(t, dtype=np.float64)[:, None] * freqs[None, :]
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def attention(q, k, v, n_heads, n_kv):
    """q (T, n_heads, hd), k and v (T, n_kv, hd), causal; returns (T, n_heads * hd)."""
    t, _, hd = q.shape
    mask = np.triu(np.full((t, t), -np.inf), 1)
    out = np.empty_like(q)
    for h in range(n_heads):
        kv = h // (n_heads // n_kv)
        s = q[:, h, :] @ k[:, kv, :].T / np.sqrt(hd) + mask
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        out[:, h, :] = (p / p.sum(axis=-1, keepdims=True)) @ v[:, kv, :]
    return out.reshape(t, -1)


def logits_of(w, cfg, tokens):
    """The last token's logits of a Llama forward pass over tokens, in float64."""
    x = w["token_embd.weight"][tokens]
    nh, nkv, eps, theta = cfg
    for layer in range(sum(1 for n in w if n.endswith("attn_q.weight"))):
        p = lambda n: w[f"blk.{layer}.{n}.weight"]
        h = rmsnorm(x, p("attn_norm"), eps)
        hd = p("attn_q").shape[0] // nh
        q = rope_interleaved((h @ p("attn_q").T).reshape(len(tokens), nh, hd), theta)
        k = rope_interleaved((h @ p("attn_k").T).reshape(len(tokens), nkv, hd), theta)
        v = (h @ p("attn_v").T).reshape(len(tokens), nkv, hd)
        x = x + attention(q, k, v, nh, nkv) @ p("attn_output").T
        h = rmsnorm(x, p("ffn_norm"), eps)
        gate = h @ p("ffn_gate").T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ p("ffn_up").T)) @ p("ffn_down").T
    out = w.get("output.weight", w["token_embd.weight"])
    return rmsnorm(x[-1], w["output_norm.weight"], eps) @ out.T


def cmd_greedy(path, n_predict, prompt):
    r = GGUFReader(path)
    w = {t.name: tensor_values(t).astype(np.float64) for t in r.tensors}
    cfg = (int(field(r, "llama.attention.head_count")), int(field(r, "llama.attention.head_count_kv")),
           float(field(r, "llama.attention.layer_norm_rms_epsilon")), float(field(r, "llama.rope.freq_base", 10000.0)))
    tokens = list(prompt)
    for _ in range(n_predict):
        logits = logits_of(w, cfg, tokens)
        best = np.argsort(logits)[::-1][:2]
        print(int(best[0]), float(logits[best[0]] - logits[best[1]]))
        tokens.append(int(best[0]))


def main(argv):
    if len(argv) == 5 and argv[1] == "blocks":
        cmd_blocks(argv[2], argv[3], argv[4])
    elif len(argv) == 3 and argv[1] == "crcs":
        cmd_crcs(argv[2])
    elif len(argv) >= 5 and argv[1] == "greedy":
        cmd_greedy(argv[2], int(argv[3]), [int(a) for a in argv[4:]])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
