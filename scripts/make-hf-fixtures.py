#!/usr/bin/env python3
"""Regenerates tests/fixtures/hf-*: small random models of each supported family
(LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, SmolLM3ForCausalLM,
Phi3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM) saved with Hugging Face transformers, with the logits and
greedy tokens transformers computes for fixed prompts. codecllm's CPU engine is tested against
them (tests/test-hf-parity.cpp), its GPU engine against the CPU (tests/test-gpu-engine.cpp).

Needs torch and transformers (CPU is enough):
    python3 scripts/make-hf-fixtures.py tests/fixtures [NAME ...]
With names, only those fixtures are written (the others keep the transformers they were made with).

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
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM, SmolLM3Config, SmolLM3ForCausalLM,
                          Phi3Config, Phi3ForCausalLM, Gemma2Config, Gemma2ForCausalLM, Gemma3TextConfig,
                          Gemma3ForCausalLM, Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig)

VOCAB = 256
PROMPTS = [[1, 17, 200, 33, 4, 99, 250, 7, 64, 128, 3, 45], [1, 5, 9]]
# Sliding-window fixtures: a window of 8, a prompt of 21 tokens (every query past the 8th has
# keys masked below its window) and 16 greedy tokens decoded one by one past it.
WINDOW = 8
LONG_PROMPTS = [[1, 17, 200, 33, 4, 99, 250, 7, 64, 128, 3, 45, 77, 12, 180, 9, 222, 31, 5, 140, 66], [1, 5, 9]]
GREEDY_TOKENS = 16

# family -> (config class, model class)
FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "smollm3": (SmolLM3Config, SmolLM3ForCausalLM),
    "phi3": (Phi3Config, Phi3ForCausalLM),
    "gemma2": (Gemma2Config, Gemma2ForCausalLM),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM),
    # Gemma 3 4B and larger: the text model beside a vision tower; codecllm imports the text part
    "gemma3-vision": (Gemma3Config, Gemma3ForConditionalGeneration),
}
GEMMAS = ("gemma2", "gemma3", "gemma3-vision")

# name -> (family, dtype, tied, llama3 rope scaling, kv heads)
VARIANTS = {
    "hf-f32-gqa": ("llama", torch.float32, False, False, 2),
    "hf-f32-llama3-tied": ("llama", torch.float32, True, True, 2),
    "hf-bf16-llama3-gqa": ("llama", torch.bfloat16, False, True, 1),
    "hf-mistral-f32-swa": ("mistral", torch.float32, False, False, 2),
    "hf-mistral-bf16-swa-tied": ("mistral", torch.bfloat16, True, False, 1),
    "hf-qwen2-f32-gqa": ("qwen2", torch.float32, False, False, 2),
    "hf-qwen2-bf16-tied": ("qwen2", torch.bfloat16, True, False, 1),
    "hf-qwen3-f32-gqa": ("qwen3", torch.float32, False, False, 2),
    "hf-qwen3-bf16-tied": ("qwen3", torch.bfloat16, True, False, 1),
    "hf-smollm3-f32-nope": ("smollm3", torch.float32, False, False, 2),
    "hf-smollm3-bf16-nope-tied": ("smollm3", torch.bfloat16, True, False, 1),
    "hf-phi3-f32-longrope": ("phi3", torch.float32, False, False, 2),
    "hf-phi3-bf16-longrope-gqa": ("phi3", torch.bfloat16, False, False, 1),
    "hf-gemma2-f32-softcap": ("gemma2", torch.float32, False, False, 2),
    "hf-gemma2-bf16-softcap-tied": ("gemma2", torch.bfloat16, True, False, 1),
    "hf-gemma3-f32-tied": ("gemma3", torch.float32, True, False, 2),
    "hf-gemma3-bf16-gqa": ("gemma3", torch.bfloat16, False, False, 1),
    "hf-gemma3-vision-f32-tied": ("gemma3-vision", torch.float32, True, False, 2),
}


def make_config(family, tied, llama3, kv_heads):
    if family == "gemma3-vision":
        # the Gemma 3 text fixture's config under a one-layer vision tower; image tokens
        # 251 .. 253 stay out of the prompts
        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=28, patch_size=14)
        return Gemma3Config(text_config=make_config("gemma3", tied, llama3, kv_heads), vision_config=vision,
                            mm_tokens_per_image=4, boi_token_index=251, eoi_token_index=252, image_token_index=253,
                            tie_word_embeddings=tied)
    config_class = FAMILIES[family][0]
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
    if family != "llama":
        # Sharper attention than the default 0.02, so that the family's feature (a window,
        # biases) changes the logits by far more than the tests' tolerance, and greedy tokens
        # vary instead of repeating the last prompt token.
        kw["initializer_range"] = 0.1
    if family == "mistral":
        kw["sliding_window"] = WINDOW
    if family == "smollm3":
        kw["no_rope_layers"] = [1, 0]  # layer 1 without RoPE (the default puts none in 2 layers)
        kw["pad_token_id"] = None  # its default, 128004, is outside a 256-token vocabulary
    if family == "qwen3":
        kw["head_dim"] = 32  # not hidden / heads = 16: the config's head_dim must be the one used
    if family == "phi3":
        kw["pad_token_id"] = None  # its default, 32000, is outside a 256-token vocabulary
        kw["original_max_position_embeddings"] = 64  # the config's own field wins over rope_parameters'
    if family in GEMMAS:
        # Layer 0 slides (window 8), layer 1 attends to everything, as Gemma alternates them;
        # a query scale of 1/sqrt(24), not 1/sqrt(head_dim); a GeGLU width of 160; softcaps
        # low enough to bend these small logits (Gemma 2's 50 and 30 would barely touch them).
        kw.update(sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"],
                  query_pre_attn_scalar=24, pad_token_id=0)
        if family == "gemma2":
            kw["head_dim"] = 16  # Gemma2Config's default is 256
            kw.update(attn_logit_softcapping=1.0, final_logit_softcapping=2.0)
        else:
            kw["head_dim"] = 32  # not hidden / heads = 16
    theta = 10000.0
    # Small original context so that all three llama3 regions (kept, scaled, smoothed) occur
    # for head_dim 16: wavelengths span 2*pi .. ~2e4, thresholds 32/4 = 8 and 32/1 = 32.
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32} if llama3 else None
    if family == "phi3":
        # Partial rotary (12 of 16 dimensions: 6 frequencies) and LongRoPE with an original
        # context of 64 (the prompts stay below it: short factors) in a context of 128 (an
        # attention factor of sqrt(1 + ln 2 / ln 64)).
        scaling = {"rope_type": "longrope", "original_max_position_embeddings": 64,
                   "short_factor": [1.0, 1.3, 1.9, 2.6, 4.1, 7.5], "long_factor": [1.2, 2.0, 3.4, 6.0, 11.0, 21.0],
                   "partial_rotary_factor": 0.75}
    if family == "gemma3":
        # Sliding layers rotate with their own base (rope_local_base_freq); full ones with
        # rope_theta and linear scaling (Gemma 3 4B and larger use factor 8).
        params = {"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": theta},
                  "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}
        return config_class(rope_parameters=params, **kw)
    try:  # transformers >= 5: rope settings live in rope_parameters
        params = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            params = dict(scaling, rope_theta=theta)
        return config_class(rope_parameters=params, **kw)
    except TypeError:
        return config_class(rope_theta=theta, rope_scaling=scaling, **kw)


def greedy_without_cache(model, prompt, n):
    """Greedy tokens from full forward passes (no KV cache): a check on generate()'s cache."""
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def check_window_matters(model_class, folder, prompt):
    """The window must change the logits of the positions it shortens, and only those: else the
    parity test could not tell a model that ignores it."""
    def logits(**kw):
        m = model_class.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", **kw).eval()
        with torch.no_grad():
            return m(torch.tensor([prompt])).logits[0]
    a, b = logits(), logits(sliding_window=10**6)  # wider than any prompt: no window
    rel = ((a - b).norm(dim=-1) / b.norm(dim=-1)).tolist()
    assert max(rel[:WINDOW]) == 0.0 and min(rel[WINDOW:]) > 1e-2, f"window effect per position: {rel}"


def check_nope_matters(model_class, folder, prompt):
    """Layer 1's missing RoPE must change the logits of every position but 0 (where RoPE is the
    identity): else the parity test could not tell a model that rotates there anyway."""
    def logits(**kw):
        m = model_class.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", **kw).eval()
        with torch.no_grad():
            return m(torch.tensor([prompt])).logits[0]
    a, b = logits(), logits(no_rope_layers=[1, 1])
    rel = ((a - b).norm(dim=-1) / b.norm(dim=-1)).tolist()
    assert rel[0] == 0.0 and min(rel[1:]) > 1e-2, f"NoPE effect per position: {rel}"


def check_softcaps_matter(model_class, folder, prompt):
    """Without the attention and final-logit softcaps the logits must move: else the parity
    test could not tell a model that skips them."""
    def logits(**kw):
        m = model_class.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager", **kw).eval()
        with torch.no_grad():
            return m(torch.tensor([prompt])).logits[0]
    base = logits()
    for kw in ({"attn_logit_softcapping": None}, {"final_logit_softcapping": None}):
        b = logits(**kw)
        rel = ((base - b).norm(dim=-1) / b.norm(dim=-1)).tolist()
        assert min(rel[1:]) > 1e-2, f"{kw} effect per position: {rel}"


def check_biases_matter(model_class, folder, prompt):
    """Zeroing the q, k, v biases must change the logits: else the parity test could not tell
    a model that ignores them."""
    m = model_class.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        a = m(torch.tensor([prompt])).logits[0]
        for n, p in m.named_parameters():
            if n.endswith(".bias"):
                p.zero_()
        b = m(torch.tensor([prompt])).logits[0]
    rel = ((a - b).norm(dim=-1) / b.norm(dim=-1)).tolist()
    assert min(rel) > 1e-2, f"bias effect per position: {rel}"


def main(out_root, names):
    for name, (family, dtype, tied, llama3, kv_heads) in VARIANTS.items():
        if names and name not in names:
            continue
        model_class = FAMILIES[family][1]
        prompts = LONG_PROMPTS if family in ("mistral",) + GEMMAS else PROMPTS
        torch.manual_seed(1234)
        config = make_config(family, tied, llama3, kv_heads)
        model = model_class(config)
        with torch.no_grad():  # norms away from 1 and biases away from 0 (transformers' init),
            for n, p in model.named_parameters():  # so that a missing one shows
                if "norm" in n:  # Gemma's norms scale by (1 + weight), its weights sit near 0
                    p.copy_((0.0 if family in GEMMAS else 1.0) + 0.2 * torch.randn_like(p))
                elif n.endswith(".bias"):
                    p.copy_(0.5 * torch.randn_like(p))
                elif family in GEMMAS and tied and n.endswith("embed_tokens.weight"):
                    # embeddings times sqrt(hidden) in the residual and again as the tied
                    # classifier: drawn small so that the layers, not the input token, pick
                    # the next token (else greedy repeats the prompt's last token)
                    p.mul_(0.5)
        model = model.to(dtype).eval()
        out = os.path.join(out_root, name)
        os.makedirs(out, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)

        expected = {"family": family, "prompts": prompts, "greedy": [], "vocab": VOCAB,
                    "dtype": str(dtype).replace("torch.", ""),
                    "transformers": transformers.__version__, "torch": torch.__version__,
                    "logits": []}
        if family in ("mistral",) + GEMMAS:
            expected["sliding_window"] = WINDOW
        if family in ("mistral", "gemma2", "gemma3"):  # (the vision model's text part is gemma3's)
            check_window_matters(model_class, out, prompts[0])
        if family == "gemma2":
            check_softcaps_matter(model_class, out, prompts[0])
        if family == "qwen2":
            check_biases_matter(model_class, out, prompts[0])
        if family == "smollm3":
            check_nope_matters(model_class, out, prompts[0])
        f32 = model_class.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        for k, prompt in enumerate(prompts):
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
                greedy = gen[0, len(prompt):].tolist()
                assert greedy == greedy_without_cache(f32, prompt, GREEDY_TOKENS), f"{name}: generate() and full passes differ"
                expected["greedy"].append(greedy)
        with open(os.path.join(out, "expected.json"), "w") as fh:
            json.dump(expected, fh, indent=1)
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, greedy {expected['greedy'][0]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures", set(sys.argv[2:]))
