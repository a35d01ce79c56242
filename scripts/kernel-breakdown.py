#!/usr/bin/env python3
"""Where a forward pass's GPU time goes: sums the kernel durations of an Nsight Compute CSV
(`ncu --csv --metrics gpu__time_duration.sum ...`) by kind of kernel, per pass.

    scripts/kernel-breakdown.py profile.csv [--pass-start REGEX]

Every pass starts with one launch of the kernel matching --pass-start (the embedding lookup,
gather_rows); kernels before the first one (the ceilings `bench` measures, loading) are left
out, and the totals are divided by the number of passes."""
import argparse
import collections
import csv
import re
import sys

# Kernel name (as ncu prints it) -> kind; the first match wins, anything else is "other".
KINDS = [
    ("matrix-vector (matvec)", r"matvec"),
    ("attention", r"attention"),
    ("RMSNorm", r"rmsnorm"),
    ("RoPE + KV store", r"rope_store"),
    ("SwiGLU", r"swiglu_kernel"),
    ("tile decoder", r"decode_tiles"),
    ("embedding gather, copies", r"gather_rows|copy_f32"),
    ("cuBLAS GEMM", r"gemm|cutlass|xmma|sm\d+_|cublas|Kernel2"),
]
UNITS = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0, "second": 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--pass-start", default="gather_rows")
    args = ap.parse_args()
    lines = open(args.csv, encoding="utf-8", errors="replace").read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        sys.exit(f"{args.csv}: no ncu CSV table (a line starting with \"ID\") found")
    ms = collections.Counter()
    count = collections.Counter()
    passes = 0
    for row in csv.DictReader(lines[start:]):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        if re.search(args.pass_start, row["Kernel Name"]):
            passes += 1
        if passes == 0:
            continue
        unit = UNITS.get(row["Metric Unit"])
        if unit is None:
            sys.exit(f"{args.csv}: unknown time unit '{row['Metric Unit']}'")
        name = row["Kernel Name"]
        kind = next((k for k, rx in KINDS if re.search(rx, name)), "other")
        ms[kind] += float(row["Metric Value"].replace(",", "")) * unit
        count[kind] += 1
    total = sum(ms.values())
    if passes == 0 or total == 0:
        sys.exit(f"{args.csv}: no pass (no kernel matching '{args.pass_start}') with kernel durations")
    print(f"{passes} passes")
    print(f"| kernels | launches per pass | ms per pass | share |")
    print(f"|---|---:|---:|---:|")
    for kind, t in ms.most_common():
        print(f"| {kind} | {count[kind] / passes:.1f} | {t / passes:.3f} | {100 * t / total:.1f}% |")
    print(f"| all | {sum(count.values()) / passes:.1f} | {total / passes:.3f} | 100% |")


if __name__ == "__main__":
    main()
