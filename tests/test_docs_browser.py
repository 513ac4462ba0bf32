"""The documentation site in a real browser: the site is built, served by http.server on 127.0.0.1 (a random
port, in a thread), and every page is opened in headless Chromium with every other host unreachable, so
anything the site would fetch from the network shows up as an error.

Each page: no console error (a failed request is one), every picture loaded (naturalWidth > 0), every formula
rendered (no ``\\(``, ``\\[`` or ``$$`` left in the text outside code), no table cell showing ``\\|``, every
link to the site answered with HTTP 200. The search box finds a word (search needs HTTP: under file://
browsers refuse its web worker).

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages separated by
NUL bytes on file descriptors 3 and 4), so no Python package beyond the standard library is needed. The test is
skipped where no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

pytestmark = [pytest.mark.slow,  # a site build and a browser: 15-30 s
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium)")]


class Browser:
    """Headless Chromium and a minimal DevTools-protocol client over its debugging pipe."""

    def __init__(self, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def pipes_as_3_and_4():
            # Chromium reads commands from fd 3 and writes replies to fd 4; copy both above 4 first, so that
            # neither is overwritten by the other's dup2.
            read, write = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             # every host but the local server is unreachable: a page that needs the network fails visibly
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=pipes_as_3_and_4)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def close(self):
        os.close(self._to_chrome)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._from_chrome)

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed its debugging pipe (exit status {self.proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        """Send one command and return its result; the events that arrive meanwhile go to ``self.events``."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method and event.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            event = self._receive(deadline)
            if event.get("method") == method and event.get("sessionId") == session:
                return event
            self.events.append(event)

    def evaluate(self, expression: str, session: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"the page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> str:
        """A new tab showing ``url``, loaded; returns its session id (console and log events are recorded)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired", session)
        return session

    def errors(self, session: str) -> list[str]:
        """The console errors, uncaught exceptions and failed loads recorded for a tab so far."""
        found = []
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                words = (str(a.get("value", a.get("description", ""))) for a in params["args"])
                found.append("console: " + " ".join(words))
            elif event["method"] == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append("exception: " + details.get("exception", {}).get("description", details["text"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                found.append(f"log: {entry['text']} {entry.get('url', '')}".rstrip())
        return found


# What each page reports, read in the page itself once its fonts are in (KaTeX's math is laid out by then).
PAGE_FACTS = r"""(async () => {
  await document.fonts.ready;
  const images = [...document.images].map(i => ({src: i.currentSrc || i.src, width: i.naturalWidth}));
  const content = document.querySelector(".md-content").cloneNode(true);
  // code may hold backslashes and dollars on purpose; rendered formulas keep their TeX source in MathML
  content.querySelectorAll("pre, code, .katex").forEach(e => e.remove());
  const text = content.textContent;
  const raw = ["\\(", "\\[", "$$"].filter(s => text.includes(s)).map(s => {
    const at = text.indexOf(s); return text.slice(Math.max(0, at - 40), at + 40);
  });
  const math = document.querySelectorAll(".arithmatex").length;
  const rendered = document.querySelectorAll(".arithmatex .katex").length;
  // a pipe escaped for GitHub's tables (\|) that Python-Markdown would show with its backslash
  const escapedPipes = [...document.querySelectorAll("td, th")].map(c => c.textContent)
    .filter(t => t.includes("\\|"));
  const katexErrors = [...document.querySelectorAll(".katex-error")].map(e => e.textContent);
  const links = [...document.querySelectorAll("a[href]")].map(a => new URL(a.href))
    .filter(u => u.origin === location.origin).map(u => u.origin + u.pathname);
  return {images, raw, escapedPipes, math, rendered, katexErrors, links: [...new Set(links)]};
})()"""

SEARCH = r"""(async () => {
  const input = document.querySelector("[data-md-component=search-query]");
  input.focus();
  input.value = "surrogate";
  for (const type of ["input", "keyup"]) input.dispatchEvent(new Event(type, {bubbles: true}));
  for (let i = 0; i < 100; i++) {
    const found = document.querySelectorAll(".md-search-result__item").length;
    if (found) return found;
    await new Promise(resolve => setTimeout(resolve, 100));
  }
  return 0;
})()"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # a tab closed while a file was still being sent (the search index, a font) is not a fault of the site
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def served_site(tmp_path_factory):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    site = tmp_path_factory.mktemp("site")
    # NO_MKDOCS_2_WARNING: the theme's end-of-life notice, see mkdocs.yml
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    server = _Server(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    # the tests ask for it before served_site: Chromium is started (preexec_fn) before the server's thread exists
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_every_page_renders_offline(browser, served_site):
    site, base = served_site
    pages = sorted(p.parent.relative_to(site).as_posix() for p in site.rglob("index.html"))
    assert len(pages) > 15 and "." in pages and "analysis" in pages and "reproduce" in pages
    problems, links, pictures, formulas = [], set(), 0, 0
    for page in pages:
        url = base if page == "." else f"{base}{page}/"
        session = browser.open(url)
        facts = browser.evaluate(PAGE_FACTS, session)
        problems += [f"{page}: {e}" for e in browser.errors(session)]
        problems += [f"{page}: picture not loaded: {i['src']}" for i in facts["images"] if not i["width"]]
        problems += [f"{page}: raw TeX in the text: ...{snippet}..." for snippet in facts["raw"]]
        problems += [f"{page}: table cell with a backslash before its pipe: {c}" for c in facts["escapedPipes"]]
        problems += [f"{page}: KaTeX could not render: {e}" for e in facts["katexErrors"]]
        if facts["rendered"] != facts["math"]:
            problems.append(f"{page}: {facts['rendered']} of {facts['math']} formulas rendered")
        links.update(facts["links"])
        pictures += len(facts["images"])
        formulas += facts["math"]
        browser.send("Target.closeTarget", {"targetId": browser.send("Target.getTargetInfo", session=session)
                                            ["targetInfo"]["targetId"]})
    problems += [f"link answered {status}: {link}" for link in sorted(links) if (status := _status(link)) != 200]
    assert not problems, "\n".join(problems)
    # the checks above saw every picture of the built pages, and the links reached every page
    assert pictures == sum(p.read_text().count("<img ") for p in site.rglob("index.html")) > 0
    assert formulas > 20
    assert {base if p == "." else f"{base}{p}/" for p in pages} <= links


def test_the_checks_see_a_broken_page(browser, served_site, tmp_path):
    """The same checks, on a page with a missing picture, raw TeX and a script error, report all three."""
    site, base = served_site
    page = site / "broken-test-page.html"
    page.write_text('<html><body><div class="md-content"><p>\\(x^2\\) $$y$$</p><img src="missing.png">'
                    '<a href="nowhere/">x</a><table><tr><td><code>a\\|b</code></td></tr></table></div>'
                    '<script>undefined_function()</script></body></html>')
    try:
        session = browser.open(base + page.name)
        facts = browser.evaluate(PAGE_FACTS, session)
        errors = browser.errors(session)
    finally:
        page.unlink()
    assert [i["width"] for i in facts["images"]] == [0]
    assert len(facts["raw"]) == 2
    assert facts["escapedPipes"] == ["a\\|b"]
    assert any("undefined_function" in e for e in errors) and any("404" in e for e in errors), errors
    assert _status(base + "nowhere/") == 404


def test_search_finds_a_word_when_served(browser, served_site):
    _, base = served_site
    session = browser.open(base)
    assert browser.evaluate(SEARCH, session) > 0
    assert not browser.errors(session)
