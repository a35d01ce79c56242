#!/usr/bin/env python3
"""Regenerates tests/fixtures/hf-*: small random LlamaForCausalLM models saved with
Hugging Face transformers, with the logits and greedy tokens transformers computes for fixed
prompts. codecllm's CPU engine is tested against them (tests/test-hf-parity.cpp).

Needs torch and transformers (the GPU machine has both; no GPU is needed):
    python3 scripts/make-hf-fixtures.py tests/fixtures

Each fixture folder holds what save_pretrained writes (config.json, model.safetensors, ...)
plus expected.json (prompts, greedy continuations, shapes, versions) and, per prompt,
logits-<k>-f32.bin: little-endian float32 [len(prompt), vocab], from the saved weights computed
in float32 (for bf16 models also logits-<k>-bf16.bin: transformers' native bf16 compute).
"""
import json
import os
import sys

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 256
PROMPTS = [[1, 17, 200, 33, 4, 99, 250, 7, 64, 128, 3, 45], [1, 5, 9]]
GREEDY_TOKENS = 16

# name -> (dtype, tied, llama3 rope scaling, kv heads)
VARIANTS = {
    "hf-f32-gqa": (torch.float32, False, False, 2),
    "hf-f32-llama3-tied": (torch.float32, True, True, 2),
    "hf-bf16-llama3-gqa": (torch.bfloat16, False, True, 1),
}


def make_config(tied, llama3, kv_heads):
    kw = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="eager",
    )
    theta = 10000.0
    # Small original context so that all three llama3 regions (kept, scaled, smoothed) occur
    # for head_dim 16: wavelengths span 2*pi .. ~2e4, thresholds 32/4 = 8 and 32/1 = 32.
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32} if llama3 else None
    try:  # transformers >= 5: rope settings live in rope_parameters
        params = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            params = dict(scaling, rope_theta=theta)
        return LlamaConfig(rope_parameters=params, **kw)
    except TypeError:
        return LlamaConfig(rope_theta=theta, rope_scaling=scaling, **kw)


def main(out_root):
    for name, (dtype, tied, llama3, kv_heads) in VARIANTS.items():
        torch.manual_seed(1234)
        config = make_config(tied, llama3, kv_heads)
        model = LlamaForCausalLM(config)
        with torch.no_grad():  # norms away from 1 so that a missing norm weight shows
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
        model = model.to(dtype).eval()
        out = os.path.join(out_root, name)
        os.makedirs(out, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)

        expected = {"prompts": PROMPTS, "greedy": [], "vocab": VOCAB, "dtype": str(dtype).replace("torch.", ""),
                    "transformers": transformers.__version__, "torch": torch.__version__,
                    "logits": []}
        f32 = LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.float32, attn_implementation="eager").eval()
        for k, prompt in enumerate(PROMPTS):
            ids = torch.tensor([prompt])
            with torch.no_grad():
                logits = f32(ids).logits[0].float().contiguous()
                fn = f"logits-{k}-f32.bin"
                logits.numpy().astype("<f4").tofile(os.path.join(out, fn))
                entry = {"f32": fn, "shape": list(logits.shape)}
                if dtype == torch.bfloat16:
                    native = model(ids).logits[0].float().contiguous()
                    fn = f"logits-{k}-bf16.bin"
                    native.numpy().astype("<f4").tofile(os.path.join(out, fn))
                    entry["bf16"] = fn
                expected["logits"].append(entry)
                gen = f32.generate(ids, max_new_tokens=GREEDY_TOKENS, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)
                expected["greedy"].append(gen[0, len(prompt):].tolist())
        with open(os.path.join(out, "expected.json"), "w") as fh:
            json.dump(expected, fh, indent=1)
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, greedy {expected['greedy'][0]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
