#!/usr/bin/env python3
"""What users would run instead, on the same synthetic model and card as `codecllm bench`:
Hugging Face transformers bf16 generate() with the whole model on the GPU, and accelerate's
cpu_offload (weights in host RAM, moved to the GPU layer by layer). Prints a JSON line per
setup with tg tokens per second (decoding only: generate's time minus the prompt's) and peak
VRAM (torch.cuda.max_memory_allocated).

    scripts/compare-hf.py HF_MODEL_DIR [--prompt 512] [--gen 128] [--offload-gen 8] > hf.json
"""
import argparse
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def timed_generate(model, ids, n):
    torch.cuda.synchronize()
    t = time.perf_counter()
    model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    torch.cuda.synchronize()
    return time.perf_counter() - t


def measure(name, model, prompt, gen, device_ids):
    ids = torch.randint(3, model.config.vocab_size, (1, prompt), device=device_ids)
    timed_generate(model, ids, 2)  # warm-up
    torch.cuda.reset_peak_memory_stats()
    prompt_s = timed_generate(model, ids, 1)  # the prompt and one token
    total_s = timed_generate(model, ids, gen + 1)
    tg = gen / max(total_s - prompt_s, 1e-9)
    row = {"setup": name, "prompt": prompt, "gen": gen, "tg_tps": tg, "pp_tps": prompt / prompt_s,
           "vram_peak": torch.cuda.max_memory_allocated()}
    print(json.dumps(row), flush=True)
    print(f"{name}: tg {tg:.2f} tok/s, pp {prompt / prompt_s:.1f} t/s, peak VRAM {row['vram_peak'] / 2**30:.2f} GiB",
          file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--offload-gen", type=int, default=8, help="tokens for the (slow) cpu_offload run")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", file=sys.stderr)

    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16).to("cuda").eval()
    measure("transformers bf16 (all on GPU)", model, a.prompt, a.gen, "cuda")
    del model
    torch.cuda.empty_cache()

    from accelerate import cpu_offload
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16).eval()
    cpu_offload(model, execution_device=torch.device("cuda"))
    measure("accelerate cpu_offload", model, a.prompt, a.offload_gen, "cuda")


if __name__ == "__main__":
    with torch.inference_mode():
        main()
