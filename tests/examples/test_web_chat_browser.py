"""The web chat in a real headless Chromium, on the real reader: the README's command, end to end.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``),
selenium (the ``dev`` extra) and the default reader (``memagent models install``). Set
``MEMAGENT_WEB_CHAT_SCREENSHOT=path.png`` to keep the page's picture (the README's is made so).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from memagent.llm.models import installed

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parents[2] / "examples" / "web_chat" / "app.py"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
READER = "qwen2.5-coder-1.5b-instruct"  # memory_chat.DEFAULT_READER
ANSWER_SECONDS = 600  # a 2-core CPU shared with other work: minutes per answer at worst


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    if READER not in {m.name for m in installed()}:
        pytest.skip(f"the reader is not installed: memagent models install {READER}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "server.log").open("w")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(
        [sys.executable, str(APP), "--path", str(tmp_path / "store"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # the embedder and the reader load before the server listens
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/sessions/new", timeout=5)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the web chat did not start:\n{(tmp_path / 'server.log').read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs chromium and chromedriver: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    # the driver named, so selenium-manager never tries to download one
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_a_fact_told_is_cited_in_a_later_session(server: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def css(selector: str) -> list:
        return browser.find_elements(By.CSS_SELECTOR, selector)

    def say(message: str) -> object:
        """Type ``message``, send it with Enter, and wait for the whole reply."""
        done = len(css(".msg.assistant[data-state='done']"))
        css("#message")[0].send_keys(message, Keys.ENTER)
        WebDriverWait(browser, ANSWER_SECONDS).until(
            lambda _: len(css(".msg.assistant[data-state='done']")) > done or css(".msg.error")
        )
        assert not css(".msg.error"), css(".msg.error")[0].text
        return css(".msg.assistant")[-1]

    browser.get(server)
    user = css("#user")[0]
    user.clear()
    user.send_keys("maya", Keys.TAB)  # the change event picks the user
    WebDriverWait(browser, 30).until(lambda _: css("#session")[0].text.startswith("session"))
    first_session = css("#session")[0].text
    assert "Noted" in say("My sister Lena lives in Porto.").text
    assert "Noted" in say("I adopted a greyhound called Pixel.").text

    css("#new-session")[0].click()
    WebDriverWait(browser, 30).until(lambda _: css("#session")[0].text != first_session)
    refused = say("What is my blood type?")
    assert "refused" in refused.get_attribute("class") and "Not in my memories" in refused.text

    answered = say("Where does my sister live?")
    assert "Porto" in answered.find_element(By.CSS_SELECTOR, ".text").text
    assert "refused" not in answered.get_attribute("class")
    cited = css("#memory-list li.memory.cited")
    assert [c for c in cited if "Lena lives in Porto" in c.text], [c.text for c in css("#memory-list li")]
    assert all(c.find_element(By.CSS_SELECTOR, "time").text for c in cited)  # each memory shows its date
    browser.save_screenshot(os.environ.get("MEMAGENT_WEB_CHAT_SCREENSHOT") or str(tmp_path / "web_chat.png"))

    css(".tabs button[data-view='all']")[0].click()  # every exchange was stored, the questions too
    WebDriverWait(browser, 30).until(lambda _: css("#memories-note")[0].text.startswith("4 memories of maya"))
    assert len(css("#memory-list li.memory")) == 4
