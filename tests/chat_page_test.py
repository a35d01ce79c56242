#!/usr/bin/env python3
"""Specification of the chat page at `/` of `codecllm serve`, as a person sees it in a browser.

Run by tests/test-serve.cpp (ctest) like serve_test.py: the build's binary, stories260K
compressed to a temporary .cllm, the CPU. The page runs in headless Chromium, driven through the
DevTools protocol over a pipe (--remote-debugging-pipe: Python's standard library is enough).
Tokens take 30 ms each here (--test-token-delay-ms), so that a reply is seen growing in the page
while it streams. Exits with status 4 when no Chromium is found (the caller reports a skip).

    chat_page_test.py --binary build/bin/codecllm --model /tmp/x/stories260K.cllm [--chromium PATH]
"""
import argparse
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_test  # noqa: E402  (the Server class and the plain HTTP helpers)

TIMEOUT = serve_test.TIMEOUT
NO_CHROMIUM = 4  # exit status: the test did not run
CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]


class Browser:
    """Headless Chromium, spoken to in DevTools protocol messages: JSON, each ended by a NUL,
    written to its fd 3 and read from its fd 4."""

    def __init__(self, chromium):
        self.profile = tempfile.TemporaryDirectory(prefix="cllm-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # Copies at 10 or above, so that bash's `3<&R 4>&W` cannot overwrite one with the other
        # (bash, not sh: dash takes single-digit descriptors only).
        r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w))
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)
        flags = ["--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--no-default-browser-check", "--disable-extensions", f"--user-data-dir={self.profile.name}",
                 "about:blank"]
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{r} 4>&{w}', chromium] + flags,
                                     pass_fds=(r, w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        os.close(r)
        os.close(w)
        self.pending = b""
        self.last_id = 0
        self.events = []  # the page's uncaught exceptions and console errors, for the report

    def send(self, method, session=None, **params):
        """The result of one command; the events that arrive meanwhile are kept if they are errors."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise AssertionError(f"DevTools {method}: {reply['error']}")
                return reply["result"]
            if reply.get("method") == "Runtime.exceptionThrown":
                self.events.append(reply["params"]["exceptionDetails"])
            elif reply.get("method") == "Runtime.consoleAPICalled" and reply["params"]["type"] == "error":
                self.events.append(reply["params"]["args"])

    def _receive(self):
        while b"\0" not in self.pending:
            ready, _, _ = select.select([self.from_browser], [], [], TIMEOUT)
            chunk = os.read(self.from_browser, 1 << 16) if ready else b""
            if not chunk:
                raise AssertionError("Chromium stopped answering on its DevTools pipe; stderr: " + self.stderr())
            self.pending += chunk
        message, _, self.pending = self.pending.partition(b"\0")
        return json.loads(message)

    def stderr(self):
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode("utf-8", "replace")[-3000:]

    def close(self):
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)
        self.profile.cleanup()


class Page:
    """One tab showing url; JavaScript evaluated in it."""

    def __init__(self, browser, url):
        self.browser = browser
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.send("Runtime.enable", session=self.session)
        browser.send("Page.enable", session=self.session)
        browser.send("Page.navigate", session=self.session, url=url)
        self.wait_for("the page to load", "document.readyState === 'complete' && location.href !== 'about:blank'")

    def eval(self, expression):
        r = self.browser.send("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True,
                              awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"in the page: {expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, what, expression, seconds=TIMEOUT):
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"{what}: not within {seconds} s (status line: {self.status()!r})")

    def status(self):
        return self.eval("document.getElementById('status').textContent")

    def fill(self, **fields):
        """Sets the page's inputs by id (max_tokens -> #max-tokens) as a person would type them."""
        for name, value in fields.items():
            self.eval(f"""(() => {{ const e = document.getElementById({json.dumps(name.replace('_', '-'))});
                          e.value = {json.dumps(str(value))};
                          e.dispatchEvent(new Event('change')); }})()""")

    def say(self, text):
        """Types text and presses Enter, as a person sends a message."""
        self.fill(prompt=text)
        self.eval("""document.getElementById('prompt').dispatchEvent(
                     new KeyboardEvent('keydown', {key: 'Enter', bubbles: true, cancelable: true}))""")

    def last_reply(self):
        """The newest assistant message's text and state (waiting, streaming, done, stopped, error)."""
        return self.eval("""(() => { const all = document.querySelectorAll('#log .assistant');
                            const r = all[all.length - 1];
                            return r ? [r.textContent, r.dataset.state] : ['', 'none']; })()""")

    def watch_reply(self, until=lambda text, state: False):
        """Polls the newest reply until it leaves waiting/streaming (or until(text, state) holds);
        returns the distinct texts seen while it streamed, and its last text and state."""
        seen = []
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            text, state = self.last_reply()
            if state == "streaming" and (not seen or seen[-1] != text):
                seen.append(text)
            if state not in ("waiting", "streaming") or until(text, state):
                return seen, text, state
            time.sleep(0.01)
        raise AssertionError(f"the reply did not end within {TIMEOUT} s")

    def buttons(self):
        return self.eval("[document.getElementById('send').disabled, document.getElementById('stop').disabled]")


def greedy_chat(s, messages, max_tokens):
    """The server's whole (not streamed) answer to the same conversation: its text and usage."""
    j = serve_test.chat(s, messages=messages, max_tokens=max_tokens)
    return j["choices"][0]["message"]["content"], j["usage"]


# ---- the rules


def check_lists_models(page):
    ids = page.wait_for("the model list", "[...document.getElementById('model').options].map(o => o.value).join()")
    assert ids == "stories260K", ids
    assert page.buttons() == [False, True], "with a model chosen: Send enabled, Stop disabled"


def check_reply_streams_into_the_page(page, s):
    """The reply is seen growing, each state a beginning of the final text, which is the server's
    whole answer to the same conversation; the status line gives the usage."""
    page.fill(temperature=0, max_tokens=40)
    page.say("Tell me a story.")
    seen, text, state = page.watch_reply()
    assert state == "done", (state, page.status())
    assert len(seen) >= 5, f"the reply was seen in {len(seen)} states while streaming: not rendered as it streamed"
    assert all(text.startswith(part) for part in seen), "a streamed state is not a beginning of the final text"
    user_text = page.eval("document.querySelector('#log .user').textContent")
    assert user_text == "Tell me a story.", user_text
    want, usage = greedy_chat(s, [{"role": "user", "content": "Tell me a story."}], 40)
    assert text == want, (text, want)
    assert re.fullmatch(rf"{usage['completion_tokens']} tokens in \d+\.\d s.*", page.status()), page.status()
    assert page.buttons() == [False, True]
    print(f"  the reply was seen in {len(seen)} states as it streamed")
    return text


def check_conversation_is_sent_whole(page, s, first_reply):
    """The next message goes with the earlier turns: the reply is the server's answer to all three."""
    page.say("What happened next?")
    _, text, state = page.watch_reply()
    assert state == "done", (state, page.status())
    history = [{"role": "user", "content": "Tell me a story."}, {"role": "assistant", "content": first_reply},
               {"role": "user", "content": "What happened next?"}]
    want, _ = greedy_chat(s, history, 40)
    assert text == want, (text, want)


def check_stop(page, s):
    """Stop ends the reply where it is and frees the model: the server counts the generation
    cancelled, and the next message is answered."""
    cancelled = 'codecllm_requests_cancelled_total{model="stories260K"}'
    before = s.metrics().get(cancelled, 0)
    page.eval("document.getElementById('new-chat').click()")
    assert page.eval("document.getElementById('log').children.length") == 0, "New chat left messages"
    page.fill(max_tokens=400)
    page.say("Tell me a long story.")
    page.watch_reply(until=lambda text, state: len(text) > 20)
    assert page.buttons() == [True, False], "while a reply streams: Send disabled, Stop enabled"
    page.eval("document.getElementById('stop').click()")
    _, text, state = page.watch_reply()
    assert state == "stopped" and page.status() == "stopped", (state, page.status())
    time.sleep(0.5)
    assert page.last_reply() == [text, "stopped"], "the reply changed after Stop"
    serve_test.wait_for("the server to cancel the stopped generation",
                        lambda: s.metrics().get(cancelled, 0) == before + 1, 10)
    page.fill(max_tokens=5)
    page.say("And then?")
    _, _, state = page.watch_reply()
    assert state == "done", (state, page.status())


def check_text_is_not_markup(page):
    page.eval("document.getElementById('new-chat').click()")
    page.fill(max_tokens=2)
    page.say("<b>bold</b> & <img src=x onerror=alert(1)>")
    page.watch_reply()
    assert page.eval("document.querySelector('#log .user').textContent") == "<b>bold</b> & <img src=x onerror=alert(1)>"
    assert page.eval("document.querySelectorAll('#log b, #log img').length") == 0, "a message was rendered as HTML"


def check_errors_are_shown(page):
    """A refused request shows the server's message, and the page goes on."""
    page.fill(temperature=5, max_tokens=2)
    page.say("Hello")
    _, _, state = page.watch_reply()
    assert state == "error", state
    assert "400" in page.status() and "'temperature'" in page.status(), page.status()
    assert page.buttons() == [False, True]
    page.fill(temperature=0)


def check_api_key(browser, binary, model):
    """Against a server with --api-key, the page shows the 401 until a key is entered, then
    lists the models and chats with the key sent."""
    s = serve_test.Server(binary, model, "--api-key", "sesame", "--chat-template", "llama2")
    try:
        page = Page(browser, s.url() + "/")
        page.wait_for("the 401 shown", "document.getElementById('status').textContent.includes('missing API key')")
        assert page.buttons() == [True, True], "without a model: Send disabled"
        page.fill(api_key="wrong")
        page.wait_for("the wrong key refused", "document.getElementById('status').textContent.includes('invalid API key')")
        page.fill(api_key="sesame")
        page.wait_for("the models listed with the key", "document.getElementById('model').value === 'stories260K'")
        page.fill(temperature=0, max_tokens=4)
        page.say("Hi")
        _, text, state = page.watch_reply()
        assert state == "done" and text, (state, text, page.status())
    finally:
        s.stop()


def find_chromium(given):
    if given:
        return given
    return os.environ.get("CLLM_CHROMIUM") or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--chromium", help="the browser (default: $CLLM_CHROMIUM, else chromium on PATH)")
    a = ap.parse_args()
    chromium = find_chromium(a.chromium)
    if not chromium:
        print("no Chromium found (" + ", ".join(CHROMIUM_NAMES) + " on PATH, or $CLLM_CHROMIUM)")
        sys.exit(NO_CHROMIUM)

    browser = Browser(chromium)
    s = serve_test.Server(a.binary, a.model, "-c", "256", "--chat-template", "llama2", "--test-token-delay-ms", "30")
    try:
        page = Page(browser, s.url() + "/")
        check_lists_models(page)
        print("ok: the page lists the models")
        first = check_reply_streams_into_the_page(page, s)
        print("ok: the reply streams into the page, equal to the whole answer")
        check_conversation_is_sent_whole(page, s, first)
        print("ok: the conversation is sent whole")
        check_stop(page, s)
        print("ok: Stop ends the reply and the server's generation")
        check_text_is_not_markup(page)
        print("ok: messages are shown as text")
        check_errors_are_shown(page)
        print("ok: errors are shown")
        s.stop()
        check_api_key(browser, a.binary, a.model)
        print("ok: the API key")
        assert not browser.events, f"the page threw or logged errors: {browser.events}"
    except BaseException:
        print("server stderr:\n" + s.stderr(), file=sys.stderr)
        print("page errors: " + json.dumps(browser.events)[:3000], file=sys.stderr)
        if s.proc.poll() is None:
            s.proc.kill()
        raise
    finally:
        browser.close()


if __name__ == "__main__":
    main()
