#!/usr/bin/env python3
"""Tables and the plot for docs/benchmarks.md from `codecllm bench -o json` files and
scripts/compare-hf.py's JSON lines: a markdown table per model on stdout, and a PNG of tg
tokens per second against peak VRAM (every mode, both models, the Hugging Face rows).

    scripts/bench-report.py --plot tg-vs-vram.png bench-tinyllama.json bench-8b.json [--hf hf-8b.json:llama31-8b]
    scripts/bench-report.py --budget-plot budget-curve.png bench-budget.json   (issue 8's curve)
"""
import argparse
import json


def depth(row):
    """A row's KV cache depth (bench -d; llama-bench's n_depth): 0 in files written before -d."""
    return row.get("n_depth", 0)


def table(b):
    c = b["ceilings"]
    print(f"### {b['model']} ({b['params'] / 1e9:.2f} B parameters, {b['file_bytes'] / 1e9:.2f} GB file, "
          f"ratio {b['compressed_bytes'] / b['decoded_bytes']:.3f}) on {b['device']}\n")
    budgets = any(r.get("budget") for r in b["rows"])
    plan = " budget (plan) |" if budgets else ""
    print(f"| mode |{plan} test | t/s | of roofline | VRAM | decode GB/s | H2D GB/s | stall | load s |")
    print("|---|" + ("---|" if budgets else "") + "---|---:|---:|---:|---:|---:|---:|---:|")
    for r in b["rows"]:
        plan = f" {r['budget']} ({r['placement']}) |" if budgets else ""
        roof = f"{100 * r['mean_tps'] / r['roofline_tps']:.0f}% {r['bound']}" if r["roofline_tps"] else "-"
        f = lambda v, fmt="{:.0f}": fmt.format(v) if v else "-"
        print(f"| {r['mode']} |{plan} {r['test']} | {r['mean_tps']:.2f} ± {r['std_tps']:.2f} | {roof} | "
              f"{r['vram_peak'] / 2**30:.2f} GiB | {f(r['decode_gbps'])} | {f(r['h2d_gbps'], '{:.1f}')} | "
              f"{f(r['stall_pct'])}% | {r['load_s']:.1f} |")
    print(f"\nCeilings measured in the same run: copy {c['copy_gbps']:.0f} GB/s (read+write), pinned host-to-device "
          f"{c['h2d_pinned_gbps']:.1f} GB/s, cuBLAS bf16 GEMM {c['gemm_tflops']:.0f} TFLOP/s\n")


# llama.cpp on the H200 machine, Llama-3.1-8B shape (issue 8): (VRAM GiB, tg128 F16, tg128 BF16, pp, pp test)
LLAMA_CPP = [(0.0, 8.85, 7.13, 38, "pp64"), (8.0, 15.1, 12.4, 600, "pp512 BF16"), (16.0, 159.5, 159.5, 18267, "pp512")]


def budget_plot(benches, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, test, col in ((axes[0], "tg", 1), (axes[1], "pp", 3)):
        for i, b in enumerate(benches):
            rows = sorted((r for r in b["rows"] if r["test"].startswith(test) and r.get("budget") and depth(r) == 0),
                          key=lambda r: r["vram_peak"])
            ax.plot([r["vram_peak"] / 2**30 for r in rows], [r["mean_tps"] for r in rows], "o-", color=f"C{i}",
                    label=f"codecllm --vram-budget ({b['model']})")
            for r in rows:
                ax.annotate(r["budget"], (r["vram_peak"] / 2**30, r["mean_tps"]), fontsize=7)
        ax.plot([p[0] for p in LLAMA_CPP], [p[col] for p in LLAMA_CPP], "x--", color="k",
                label="llama.cpp -ngl 0 / 16 / all (F16 tg, BF16 pp at 16 layers)")
        ax.set_yscale("log")
        ax.set_xlabel("VRAM (GiB; codecllm: measured peak)")
        ax.set_ylabel(f"{test}{'128' if test == 'tg' else '512'} tokens per second")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Llama-3.1-8B shape: speed against VRAM on {benches[0]['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", nargs="+")
    ap.add_argument("--hf", action="append", default=[], help="FILE:MODEL_TAG with compare-hf.py's JSON lines")
    ap.add_argument("--plot")
    ap.add_argument("--budget-plot", help="PNG of tg and pp against VRAM for --vram-budget rows, with llama.cpp's")
    a = ap.parse_args()
    benches = [json.load(open(p)) for p in a.bench]
    for b in benches:
        table(b)
    hf = []
    for spec in a.hf:
        path, tag = spec.rsplit(":", 1)
        for line in open(path):
            if line.startswith("{"):
                row = json.loads(line)
                row["model"] = tag
                hf.append(row)
    if hf:
        print("| model | setup | tg t/s | pp t/s | peak VRAM |\n|---|---|---:|---:|---:|")
        for r in hf:
            print(f"| {r['model']} | {r['setup']} | {r['tg_tps']:.2f} | {r['pp_tps']:.1f} | {r['vram_peak'] / 2**30:.2f} GiB |")
    if a.budget_plot:
        budget_plot(benches, a.budget_plot)
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.5))
        markers = {"full": "o", "resident": "s", "lowmem": "^"}
        for i, b in enumerate(benches):
            for r in b["rows"]:
                if r["test"].startswith("tg") and depth(r) == 0:
                    ax.scatter(r["vram_peak"] / 2**30, r["mean_tps"], marker=markers.get(r["mode"], "x"), s=60,
                               color=f"C{i}", label=f"codecllm {b['model']} {r['mode']}")
        for r in hf:
            ax.scatter(r["vram_peak"] / 2**30, r["tg_tps"], marker="x", s=60, color="k")
            ax.annotate(f"{r['setup']} ({r['model']})", (r["vram_peak"] / 2**30, r["tg_tps"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("peak VRAM (GiB)")
        ax.set_ylabel("tg128 tokens per second")
        ax.set_title(f"tg128 against peak VRAM on {benches[0]['device']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)


if __name__ == "__main__":
    main()
