#!/usr/bin/env python3
"""Specification of `codecllm serve` as its clients see it, over real HTTP.

Run by tests/test-serve.cpp (ctest) with the build's binary and stories260K compressed to a
temporary .cllm; the device is the CPU. Each check_* function is one rule of the server. With
the `openai` package (scripts/setup.sh installs it into .deps/venv) the official client is used
too; with --no-openai those checks are left out and said so. Timeouts are generous: CI machines
are small and busy.

    serve_test.py --binary build/bin/codecllm --model /tmp/x/stories260K.cllm [--no-openai]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = 120  # seconds for any one request or start-up
PROMPT = "Once upon a time"
CHAT = [{"role": "user", "content": "Tell me a story."}]


class Server:
    """A `codecllm serve` process on a free port; started, waited for (/health), stopped."""

    def __init__(self, binary, model, *flags, wait=True):
        self.binary, self.model, self.flags = binary, model, list(flags)
        cmd = [binary, "serve", "-m", model, "--port", "0", "--device", "cpu", "-t", "1"] + self.flags
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr_lines = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        line = self._first_line()
        m = re.match(r"codecllm serve: listening on http://([0-9.]+):(\d+)$", line.strip())
        if not m:
            raise AssertionError(f"expected the address on stdout, got {line!r}; stderr: {self.stderr()}")
        self.host, self.port = m.group(1), int(m.group(2))
        if wait:
            self.wait_healthy()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def stderr(self):
        return "".join(self.stderr_lines)

    def _first_line(self):
        box = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(TIMEOUT)
        if not box:
            raise AssertionError(f"the server printed no address within {TIMEOUT} s; stderr: {self.stderr()}")
        return box[0]

    def wait_healthy(self):
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            status, _ = self.get("/health")
            if status == 200:
                return
            assert status == 503, f"/health while loading: expected 503, got {status}"
            time.sleep(0.05)
        raise AssertionError("the server did not become healthy in time")

    def url(self):
        return f"http://{self.host}:{self.port}"

    def request(self, method, path, body=None, headers=None):
        """(status, parsed JSON or text) of one request."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read().decode("utf-8", "replace")
        conn.close()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, json.loads(raw) if ctype.startswith("application/json") else raw

    def get(self, path, headers=None):
        return self.request("GET", path, None, headers)

    def post(self, path, body, headers=None):
        return self.request("POST", path, body, headers)

    def stream(self, path, body, headers=None):
        """The JSON events of a streamed answer, and whether it ended with [DONE]."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        conn.request("POST", path, body=json.dumps(dict(body, stream=True)),
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        assert resp.status == 200, f"stream: status {resp.status}: {resp.read()!r}"
        assert resp.getheader("Content-Type", "").startswith("text/event-stream")
        events, done = [], False
        for block in resp.read().decode("utf-8").split("\n\n"):
            for line in block.splitlines():
                if line.startswith("data: "):
                    assert not done, "an event after [DONE]"
                    if line == "data: [DONE]":
                        done = True
                    else:
                        events.append(json.loads(line[len("data: "):]))
        conn.close()
        return events, done

    def metrics(self):
        status, text = self.get("/metrics")
        assert status == 200
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def stop(self, expect_within=10):
        """SIGTERM; the server must exit 0 within expect_within seconds."""
        start = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(expect_within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the server did not stop within {expect_within} s of SIGTERM")
        assert rc == 0, f"exit status {rc} after SIGTERM; stderr: {self.stderr()}"
        return time.time() - start


def completion(server, prompt=PROMPT, **fields):
    body = {"model": "stories260K", "prompt": prompt, "max_tokens": 24, "temperature": 0, **fields}
    status, j = server.post("/v1/completions", body)
    assert status == 200, f"completion: {status} {j}"
    return j


def chat(server, messages=CHAT, **fields):
    body = {"model": "stories260K", "messages": messages, "max_tokens": 24, "temperature": 0, **fields}
    status, j = server.post("/v1/chat/completions", body)
    assert status == 200, f"chat: {status} {j}"
    return j


def expect_error(server, path, body, status, *words, headers=None, method="POST"):
    """The answer is OpenAI's error JSON with this status, and its message has these words."""
    got, j = server.request(method, path, body, headers)
    assert got == status, f"{path} {str(body)[:80]}: expected {status}, got {got}: {j}"
    assert isinstance(j, dict) and "error" in j, f"expected error JSON, got {j!r}"
    err = j["error"]
    assert err["code"] == status and err["type"] and err["message"], err
    for w in words:
        assert w in err["message"], f"expected {w!r} in the message {err['message']!r}"
    return err


# ---- the rules


def check_health_and_models(s):
    assert s.get("/health") == (200, {"status": "ok"})
    status, j = s.get("/v1/models")
    assert status == 200 and j["object"] == "list"
    assert [m["id"] for m in j["data"]] == ["stories260K"], j
    assert j["data"][0]["meta"]["device"] == "cpu"


def check_completion_is_runs_text(s, binary, model):
    """Greedy text equals `codecllm run`'s; usage counts the prompt's and the generated tokens."""
    j = completion(s, max_tokens=30)
    assert j["object"] == "text_completion" and j["model"] == "stories260K" and j["id"].startswith("cmpl-")
    choice = j["choices"][0]
    run = subprocess.run([binary, "run", model, "-p", PROMPT, "-n", "30", "--temp", "0", "--device", "cpu", "-t", "1"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert run.stdout == PROMPT + choice["text"] + "\n", (run.stdout, choice["text"])
    ids = subprocess.run([binary, "tokenize", model, "--ids", PROMPT], capture_output=True, text=True,
                         timeout=TIMEOUT).stdout
    n_prompt = len(json.loads(ids))
    assert j["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 30, "total_tokens": n_prompt + 30}, j["usage"]
    assert choice["finish_reason"] == "length"


def check_streaming_equals_whole(s):
    for path, body, text_of in [
        ("/v1/completions", {"model": "stories260K", "prompt": PROMPT, "max_tokens": 40, "temperature": 0},
         lambda c: c["text"]),
        ("/v1/chat/completions", {"model": "stories260K", "messages": CHAT, "max_tokens": 40, "temperature": 0},
         lambda c: c["delta"].get("content", "")),
    ]:
        status, whole = s.post(path, body)
        assert status == 200, whole
        events, done = s.stream(path, dict(body, stream_options={"include_usage": True}))
        assert done, "the stream did not end with data: [DONE]"
        chunks = [e for e in events if e["choices"]]
        streamed = "".join(text_of(e["choices"][0]) for e in chunks)
        want = whole["choices"][0]["text"] if "text" in whole["choices"][0] else whole["choices"][0]["message"]["content"]
        assert streamed == want, (streamed, want)
        assert len(chunks) > 2, "the text came in one piece: not streamed"
        assert all(e["choices"][0]["finish_reason"] is None for e in chunks[:-1])
        assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
        assert events[-1]["usage"] == whole["usage"], (events[-1], whole["usage"])


def check_chat_shape(s):
    j = chat(s)
    assert j["object"] == "chat.completion" and j["id"].startswith("chatcmpl-")
    msg = j["choices"][0]["message"]
    assert msg["role"] == "assistant" and msg["content"], j
    assert j["choices"][0]["finish_reason"] in ("stop", "length")
    u = j["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and u["completion_tokens"] <= 24


def check_stop_strings(s):
    whole = completion(s, max_tokens=40)["choices"][0]["text"]
    word = whole.split()[3]  # a word from the middle of the greedy text
    j = completion(s, max_tokens=40, stop=[word, "zzzz"])
    assert j["choices"][0]["text"] == whole[:whole.index(word)], (j, word)
    assert j["choices"][0]["finish_reason"] == "stop"
    events, done = s.stream("/v1/completions", {"model": "stories260K", "prompt": PROMPT, "max_tokens": 40,
                                                "temperature": 0, "stop": word})
    assert done and "".join(e["choices"][0]["text"] for e in events) == j["choices"][0]["text"]


def check_concurrent_greedy(s):
    """Two requests at once give the texts each gives alone."""
    prompts = ["Once upon a time", "The little dog"]
    alone = [completion(s, p, max_tokens=40)["choices"][0]["text"] for p in prompts]
    together = [None, None]

    def one(i):
        together[i] = completion(s, prompts[i], max_tokens=40)["choices"][0]["text"]
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert together == alone, (together, alone)
    # Sampled with a seed: the same text twice.
    a = completion(s, temperature=1.0, seed=42)["choices"][0]["text"]
    b = completion(s, temperature=1.0, seed=42)["choices"][0]["text"]
    assert a == b


def check_bad_requests(s):
    c = "/v1/completions"
    expect_error(s, c, b"{not json", 400, "not valid JSON")
    expect_error(s, c, b"[1, 2]", 400, "JSON object")
    # Without a model: the server's only one answers (as llama-server does).
    status, j = s.post(c, {"prompt": "x", "max_tokens": 2, "temperature": 0})
    assert status == 200 and j["model"] == "stories260K", (status, j)
    expect_error(s, c, {"model": "stories260K"}, 400, "'prompt'")
    err = expect_error(s, c, {"model": "stories260K", "prompt": "x", "temperature": 3.5}, 400,
                       "'temperature'", "[0, 2]", "3.5")
    assert err["param"] == "temperature"
    expect_error(s, c, {"model": "stories260K", "prompt": "x", "max_tokens": 0}, 400, "'max_tokens'", "found 0")
    expect_error(s, c, {"model": "stories260K", "prompt": "x", "top_p": "high"}, 400, "'top_p'", "a string")
    expect_error(s, c, {"model": "stories260K", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "'stop'")
    expect_error(s, "/v1/chat/completions", {"model": "stories260K", "messages": []}, 400, "'messages'")
    expect_error(s, "/v1/chat/completions", {"model": "stories260K", "messages": [{"role": "robot", "content": "x"}]},
                 400, "messages[0].role", "robot")
    expect_error(s, c, {"model": "gpt-4", "prompt": "x"}, 404, "gpt-4", "stories260K")
    expect_error(s, "/v1/nothing", None, 404, "/v1/nothing", method="GET")
    # The context is 128 tokens (-c 128): a longer prompt, and a body over the 8 MiB limit.
    expect_error(s, c, {"model": "stories260K", "prompt": "the cat sat " * 100}, 413, "context of 128")
    expect_error(s, c, {"model": "stories260K", "prompt": "x" * (9 << 20)}, 413, "limit")
    assert s.get("/health")[0] == 200, "still serving after bad requests"


def check_metrics(s):
    m = s.metrics()
    assert m['codecllm_models_loaded'] == 1
    assert m['codecllm_requests_total{endpoint="/v1/completions",status="200"}'] >= 5
    assert m['codecllm_requests_total{endpoint="/v1/completions",status="400"}'] >= 5
    assert m['codecllm_completion_tokens_total{model="stories260K"}'] > 100
    assert m['codecllm_prompt_tokens_total{model="stories260K"}'] > 10
    assert m['codecllm_time_to_first_token_seconds_count{model="stories260K"}'] >= 5
    assert m['codecllm_decode_tokens_per_second{model="stories260K"}'] > 0
    # A repeated prompt finds all of itself but its last token (whose logits are needed) in the
    # KV cache, and gives the same text.
    key = 'codecllm_prompt_tokens_reused_total{model="stories260K"}'
    first = completion(s, max_tokens=10)
    before = s.metrics()[key]
    again = completion(s, max_tokens=10)
    assert s.metrics()[key] - before == again["usage"]["prompt_tokens"] - 1
    assert again["choices"][0]["text"] == first["choices"][0]["text"]


def check_curl(s):
    """The same API from curl, as docs/cli.md shows it."""
    out = subprocess.run(["curl", "-sS", "-m", str(TIMEOUT), s.url() + "/v1/completions", "-H",
                          "Content-Type: application/json", "-d",
                          json.dumps({"model": "stories260K", "prompt": PROMPT, "max_tokens": 8, "temperature": 0})],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["choices"][0]["text"] == completion(s, max_tokens=8)["choices"][0]["text"]


def check_openai_client(s):
    import openai
    client = openai.OpenAI(base_url=s.url() + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
    assert [m.id for m in client.models.list()] == ["stories260K"]
    c = client.completions.create(model="stories260K", prompt=PROMPT, max_tokens=30, temperature=0)
    assert c.choices[0].text == completion(s, max_tokens=30)["choices"][0]["text"]
    assert c.usage.completion_tokens == 30
    streamed = "".join(ch.choices[0].text for ch in client.completions.create(
        model="stories260K", prompt=PROMPT, max_tokens=30, temperature=0, stream=True))
    assert streamed == c.choices[0].text
    r = client.chat.completions.create(model="stories260K", messages=CHAT, max_tokens=30, temperature=0)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in client.chat.completions.create(
        model="stories260K", messages=CHAT, max_tokens=30, temperature=0, stream=True))
    assert r.choices[0].message.content and streamed == r.choices[0].message.content
    try:
        client.completions.create(model="nope", prompt="x", max_tokens=1)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        assert "nope" in str(e)
    try:
        client.completions.create(model="stories260K", prompt="x", temperature=9)
        raise AssertionError("temperature 9 was accepted")
    except openai.BadRequestError as e:
        assert "temperature" in str(e)


PARALLEL_PROMPTS = ["Once upon a time", "The little dog", "Lily saw a big red ball", "Tom and Sam went to",
                    "One day, the sun", "A cat sat on the", "The girl was sad because", "Ben had a toy car"]


def check_parallel(binary, model, use_openai):
    """-np 4: requests decoded together give exactly the texts each gives alone, whole or
    streamed. -c 512 is split into 4 slots of 128 positions. Each step waits 20 ms
    (--test-token-delay-ms) so that the 8 requests overlap and 4 run at once."""
    few = subprocess.run([binary, "serve", "-m", model, "--port", "0", "--device", "cpu", "-np", "4", "-c", "3"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert few.returncode != 0 and "-c 3 gives each of -np 4 slots no position" in few.stderr, few.stderr
    s = Server(binary, model, "-np", "4", "-c", "512", "--test-token-delay-ms", "20")
    try:
        wait_for("the slots printed at start-up", lambda: "4 slots of 128 positions" in s.stderr(), 5)
        assert s.get("/v1/models")[1]["data"][0]["meta"]["context"] == 128
        alone = [completion(s, p, max_tokens=40)["choices"][0]["text"] for p in PARALLEL_PROMPTS]
        assert len(set(alone)) == len(alone), alone

        if use_openai:
            import openai
            client = openai.OpenAI(base_url=s.url() + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)

            def whole(p):
                return client.completions.create(model="stories260K", prompt=p, max_tokens=40,
                                                 temperature=0).choices[0].text

            def streamed(p):
                return "".join(c.choices[0].text for c in client.completions.create(
                    model="stories260K", prompt=p, max_tokens=40, temperature=0, stream=True))
        else:
            def whole(p):
                return completion(s, p, max_tokens=40)["choices"][0]["text"]

            def streamed(p):
                events, done = s.stream("/v1/completions", {"model": "stories260K", "prompt": p, "max_tokens": 40,
                                                            "temperature": 0})
                assert done
                return "".join(e["choices"][0]["text"] for e in events if e["choices"])

        most_running = [0]
        over = threading.Event()

        def watch():
            while not over.is_set():
                running = s.metrics().get('codecllm_requests_running{model="stories260K"}', 0)
                most_running[0] = max(most_running[0], running)
                time.sleep(0.02)

        def at_once(ask):
            """Every prompt asked at once (ask(i, prompt) -> text), the texts in prompt order."""
            got = [None] * len(PARALLEL_PROMPTS)

            def one(i):
                got[i] = ask(i, PARALLEL_PROMPTS[i])
            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PARALLEL_PROMPTS))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(TIMEOUT)
            return got

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        together = at_once(lambda i, p: whole(p))
        assert together == alone, (together, alone)
        # Streaming beside whole answers under the same load: the same texts.
        mixed = at_once(lambda i, p: streamed(p) if i % 2 == 0 else whole(p))
        over.set()
        watcher.join(TIMEOUT)
        assert mixed == alone, (mixed, alone)
        assert most_running[0] == 4, f"at most {most_running[0]} requests ran at once, expected 4 (-np 4)"
    finally:
        s.stop()


def check_keep_alive(binary, model):
    """--keep-alive: a model without requests for that long is parked (/v1/models and /metrics say
    so, its memory given back); its next request loads it again and gets the same text. Two models
    (the second a copy under another name), each parked and brought back on its own."""
    with tempfile.TemporaryDirectory() as d:
        other = os.path.join(d, "other.cllm")
        shutil.copy(model, other)
        s = Server(binary, model, "-m", other, "--keep-alive", "0.3")
        try:
            def meta():
                return {m["id"]: m["meta"] for m in s.get("/v1/models")[1]["data"]}
            wait_for("both models parked", lambda: all(m["status"] == "parked" for m in meta().values()), 10)
            assert meta()["stories260K"]["device"].startswith("parked: "), meta()
            assert s.metrics().get("codecllm_models_loaded") == 0, s.metrics()
            first = completion(s, max_tokens=12)["choices"][0]["text"]
            assert "stories260K: loaded again from host RAM in " in s.stderr(), s.stderr()
            wait_for("parked again", lambda: meta()["stories260K"]["status"] == "parked", 10)
            again = completion(s, max_tokens=12)["choices"][0]["text"]
            assert again == first, (again, first)
            m = s.metrics()
            assert m.get('codecllm_model_reload_seconds_count{model="stories260K"}') == 2, m
            assert m.get('codecllm_model_reload_seconds_count{model="other"}') == 0, m
            assert meta()["stories260K"]["loads_again"] == 2
            other_text = completion(s, max_tokens=12, model="other")["choices"][0]["text"]
            assert other_text == first  # the same weights under another name
            # Two models: a request must name one.
            expect_error(s, "/v1/completions", {"prompt": "x"}, 400, "'model'", "stories260K, other", "found nothing")
        finally:
            s.stop()


def check_loading(binary, model):
    """While its models load the server answers, 503; then it serves."""
    s = Server(binary, model, "--test-load-delay-ms", "3000", wait=False)
    try:
        expect_error(s, "/health", None, 503, "loading", method="GET")
        expect_error(s, "/v1/completions", {"model": "stories260K", "prompt": "x"}, 503, "loading")
        s.wait_healthy()
        completion(s, max_tokens=2)
    finally:
        s.stop()


def check_auth(binary, model, use_openai):
    s = Server(binary, model, "--api-key", "sesame")
    try:
        body = {"model": "stories260K", "prompt": "x", "max_tokens": 2}
        expect_error(s, "/v1/completions", body, 401, "missing API key")
        expect_error(s, "/v1/completions", body, 401, "invalid API key", headers={"Authorization": "Bearer wrong"})
        expect_error(s, "/v1/models", None, 401, "missing", method="GET")
        status, _ = s.post("/v1/completions", body, headers={"Authorization": "Bearer sesame"})
        assert status == 200
        assert s.get("/health")[0] == 200 and s.get("/metrics")[0] == 200, "health and metrics need no key"
        # This server has no --chat-template, and stories260K no template of its own.
        expect_error(s, "/v1/chat/completions", {"model": "stories260K", "messages": CHAT}, 400,
                     "no chat format", "--chat-template", headers={"Authorization": "Bearer sesame"})
        if use_openai:
            import openai
            bad = openai.OpenAI(base_url=s.url() + "/v1", api_key="wrong", max_retries=0, timeout=TIMEOUT)
            try:
                bad.models.list()
                raise AssertionError("a wrong key was accepted")
            except openai.AuthenticationError:
                pass
            good = openai.OpenAI(base_url=s.url() + "/v1", api_key="sesame", max_retries=0, timeout=TIMEOUT)
            assert good.completions.create(model="stories260K", prompt="x", max_tokens=2).usage.completion_tokens >= 1
    finally:
        s.stop()


def start_slow_stream(s, max_tokens):
    """A streaming request on a raw socket, its first event read; returns the socket."""
    sock = socket.create_connection((s.host, s.port), timeout=TIMEOUT)
    body = json.dumps({"model": "stories260K", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
                       "stream": True})
    sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    got = b""
    while b"data: {" not in got:
        chunk = sock.recv(4096)
        assert chunk, "the stream closed before its first event"
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:100]
    return sock


def wait_for(what, predicate, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {seconds} s")


def check_queue_disconnect_and_stop(binary, model):
    """A full queue answers 503; a client gone mid-stream, or gone while it waits for a whole
    answer, stops its generation; SIGTERM stops the server cleanly even with a request running. Tokens take 50 ms each here
    (--test-token-delay-ms), so a request of 400 tokens runs for 20 s unless stopped."""
    s = Server(binary, model, "--max-queue", "1", "--test-token-delay-ms", "50")
    try:
        running = start_slow_stream(s, 400)
        waiting = threading.Thread(target=lambda: s.post("/v1/completions", {"model": "stories260K", "prompt": "x",
                                                                             "max_tokens": 1}))
        waiting.start()
        wait_for("a request waiting in the queue",
                 lambda: s.metrics().get('codecllm_requests_waiting{model="stories260K"}') == 1, 30)
        expect_error(s, "/v1/completions", {"model": "stories260K", "prompt": "x"}, 503, "queue is full")
        # The client goes away: the worker stops within a few tokens and takes the waiting
        # request at once (the model is free well before the 20 s the stream had left).
        running.close()
        left = time.time()
        wait_for("the cancelled generation counted",
                 lambda: s.metrics().get('codecllm_requests_cancelled_total{model="stories260K"}') == 1, 10)
        waiting.join(TIMEOUT)
        freed = time.time() - left
        assert freed < 3, f"the waiting request was answered {freed:.1f} s after the client left"
        assert s.metrics()['codecllm_completion_tokens_total{model="stories260K"}'] < 200
        # A client of a non-streamed request that leaves stops its generation too (the server
        # watches its connection while it waits), counted with nginx's 499.
        whole = socket.create_connection((s.host, s.port), timeout=TIMEOUT)
        body = json.dumps({"model": "stories260K", "prompt": PROMPT, "max_tokens": 400, "temperature": 0})
        whole.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        wait_for("the non-streamed request running",
                 lambda: s.metrics().get('codecllm_requests_running{model="stories260K"}') == 1, 30)
        time.sleep(0.3)
        whole.close()
        wait_for("the non-streamed generation cancelled",
                 lambda: s.metrics().get('codecllm_requests_cancelled_total{model="stories260K"}') == 2, 5)
        wait_for("the request counted 499",
                 lambda: s.metrics().get('codecllm_requests_total{endpoint="/v1/completions",status="499"}') == 1, 5)
        # SIGTERM while a stream runs: exit 0 within 10 s, the stream told why it ends.
        last = start_slow_stream(s, 400)
    finally:
        took = s.stop()
    rest = b""
    while chunk := last.recv(65536):
        rest += chunk
    assert b"the server is stopping" in rest and b"data: [DONE]" in rest, rest[-300:]
    print(f"  stopped {took:.2f} s after SIGTERM with a stream running")


def raw_exchange(s, data, seconds=TIMEOUT):
    """Sends data on a new connection; returns what the server sends before it closes it, and
    how long that took."""
    sock = socket.create_connection((s.host, s.port), timeout=seconds)
    start = time.time()
    if data:
        sock.sendall(data)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return got, time.time() - start


def check_bad_connections(binary, model):
    """Connections that send nothing, stall, send garbage or announce too much are answered or
    closed within the timeouts, and the server keeps serving. Here --timeout is 1 s, and the
    server has 10 connection threads (--max-queue 1: 1 x (1 + 1) + 8)."""
    s = Server(binary, model, "--timeout", "1", "--max-queue", "1")
    try:
        # Nothing sent: closed after the 2 s a request may take to begin.
        got, took = raw_exchange(s, b"")
        assert got == b"" and took < 6, (got, took)
        # Half a request, then nothing: closed after --timeout.
        got, took = raw_exchange(s, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
        assert took < 5 and (got == b"" or got.startswith(b"HTTP/1.1 4")), (got[:80], took)
        # A body shorter than its Content-Length: dropped after --timeout, not waited for.
        got, took = raw_exchange(s, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert took < 5, took
        # Not HTTP: 400.
        got, _ = raw_exchange(s, b"\x16\x03\x01 hello?\r\n\r\n")
        assert got == b"" or got.startswith(b"HTTP/1.1 400"), got[:80]
        # A Content-Length over the 8 MiB limit is refused before any of the body is read.
        got, took = raw_exchange(s, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                    b"\r\nContent-Length: 100000000\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 413") and b"over the limit" in got and took < 5, (got[:300], took)
        # More idle connections than the server has threads (10): they are closed in rounds of
        # 2 s as threads take them, and the server answers again meanwhile.
        idle = [socket.create_connection((s.host, s.port), timeout=TIMEOUT) for _ in range(14)]
        start = time.time()
        status, _ = s.get("/health")
        assert status == 200 and time.time() - start < 15, (status, time.time() - start)
        for sock in idle:
            assert sock.recv(1) == b"", "an idle connection got an answer"
            sock.close()
        took = time.time() - start
        assert took < 15, f"the idle connections were closed only {took:.1f} s later"
        completion(s, max_tokens=4)
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--no-openai", action="store_true", help="leave out the checks with the openai client")
    a = ap.parse_args()
    use_openai = not a.no_openai

    s = Server(a.binary, a.model, "-c", "128", "--chat-template", "llama2")
    checks = [lambda: check_health_and_models(s), lambda: check_completion_is_runs_text(s, a.binary, a.model),
              lambda: check_streaming_equals_whole(s), lambda: check_chat_shape(s), lambda: check_stop_strings(s),
              lambda: check_concurrent_greedy(s), lambda: check_bad_requests(s), lambda: check_curl(s),
              lambda: check_metrics(s)]
    names = ["health and models", "completion equals run", "streaming equals whole", "chat", "stop strings",
             "concurrent greedy", "bad requests", "curl", "metrics"]
    if use_openai:
        checks.append(lambda: check_openai_client(s))
        names.append("openai client")
    try:
        for name, check in zip(names, checks):
            check()
            print(f"ok: {name}")
    except BaseException:
        print("server stderr:\n" + s.stderr(), file=sys.stderr)
        s.proc.kill()
        raise
    took = s.stop()
    print(f"ok: SIGTERM: exit 0 in {took:.2f} s")
    check_loading(a.binary, a.model)
    print("ok: 503 while loading")
    check_auth(a.binary, a.model, use_openai)
    print("ok: auth")
    check_queue_disconnect_and_stop(a.binary, a.model)
    print("ok: queue full, disconnect, stop while streaming")
    check_bad_connections(a.binary, a.model)
    print("ok: idle, stalled, garbage and oversized connections")
    check_parallel(a.binary, a.model, use_openai)
    print("ok: -np 4: 8 requests at once, whole and streamed, give the texts each gives alone")
    check_keep_alive(a.binary, a.model)
    print("ok: --keep-alive: idle models parked, loaded again by their next request, the same text")
    if not use_openai:
        print("(the openai client checks were left out: --no-openai)")


if __name__ == "__main__":
    main()
