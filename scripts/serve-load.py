#!/usr/bin/env python3
"""Load test for an OpenAI-compatible server (codecllm serve, llama-server): concurrent streaming
clients on /v1/completions, standard library only (it runs on the GPU machine, which has no PyPI).

  scripts/serve-load.py URL --clients 16 --requests 1 --max-tokens 128      # 16 requests at once
  scripts/serve-load.py URL --clients 64 --seconds 60 --max-tokens 128      # 64 clients for 60 s

Each client sends greedy streaming requests (temperature 0, a prompt of its own) one after the
other, until it has sent --requests or --seconds have passed. Printed (and written as JSON with
--json): requests ok and failed, completion tokens, aggregate tokens per second (all clients'
streamed tokens over the wall time from the first request to the last byte), per-request decode
tokens per second, and time to first token p50/p99 in milliseconds. Exit status 1 when any
request failed or returned no token.
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "Once upon a time, in a small village by the sea,",
    "The history of the printing press begins",
    "Here is a short story about a robot who learns to paint:",
    "In the morning the market was already full of",
]


def one_request(host, port, model, prompt, max_tokens, timeout):
    """Streams one completion; returns (ttft_s, tokens, total_s) or raises."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True, "ignore_eos": True})
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    ttft, tokens, done = None, 0, False
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            break
        event = json.loads(data)
        if "error" in event:
            raise RuntimeError(f"error event: {event['error']}")
        if event.get("choices") and event["choices"][0].get("text"):
            tokens += 1  # one event per token on both servers
            if ttft is None:
                ttft = time.perf_counter() - t0
    conn.close()
    if not done:
        raise RuntimeError("the stream ended without data: [DONE]")
    if tokens == 0:
        raise RuntimeError("no token streamed")
    return ttft, tokens, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help="http://HOST:PORT")
    ap.add_argument("--model", default="", help="the model field (codecllm: the file name without .cllm)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=0, help="requests per client (0: until --seconds)")
    ap.add_argument("--seconds", type=float, default=0, help="stop sending new requests after this long")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--label", default="")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if a.requests <= 0 and a.seconds <= 0:
        ap.error("give --requests or --seconds")
    u = urllib.parse.urlparse(a.url)
    lock = threading.Lock()
    results, errors = [], []
    start = time.perf_counter()
    deadline = start + a.seconds if a.seconds > 0 else None

    def client(i):
        sent = 0
        while True:
            if a.requests > 0 and sent >= a.requests:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            prompt = f"{PROMPTS[i % len(PROMPTS)]} (client {i}, request {sent})"
            sent += 1
            try:
                r = one_request(u.hostname, u.port, a.model, prompt, a.max_tokens, a.timeout)
                with lock:
                    results.append(r)
            except Exception as e:  # every failure is counted and shown, none ends the run
                with lock:
                    errors.append(f"client {i}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = sum(r[1] for r in results)
    ttfts = sorted(r[0] * 1000 for r in results)
    decode = [(r[1] - 1) / (r[2] - r[0]) for r in results if r[1] > 1 and r[2] > r[0]]

    def pct(v, p):
        return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")

    out = {"label": a.label, "clients": a.clients, "ok": len(results), "failed": len(errors),
           "completion_tokens": tokens, "wall_s": round(wall, 3), "aggregate_tok_s": round(tokens / wall, 2),
           "per_request_decode_tok_s": round(statistics.median(decode), 2) if decode else None,
           "ttft_ms_p50": round(pct(ttfts, 50), 1), "ttft_ms_p99": round(pct(ttfts, 99), 1)}
    print(json.dumps(out))
    for e in errors[:5]:
        print("  failed:", e, file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    sys.exit(1 if errors or not results else 0)


if __name__ == "__main__":
    main()
