#!/usr/bin/env python3
"""The store owner's portal in a real browser: headless Chromium (Debian's chromium
and chromium-driver, infra/chromium.sh) driven through WebDriver against the dev
server, with a webhook receiver on loopback. Each step saves a screenshot under
.run/portal/ for review.

    infra/portal_test.py <path to herald-local>

Everything stays on 127.0.0.1: the dev server and the receiver on ports the OS picks,
Chromium with its background services off and every other host unresolvable.
"""

import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

# Selenium Manager must not look for a driver online: the driver is Debian's.
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / ".run" / "portal"
SERVER = None  # path to herald-local, from the command line
SECRET = "portal-test-secret-never-shown-again"
WAIT = 15  # seconds for any one thing to appear


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver on loopback that answers 200 and remembers the paths."""

    def __init__(self):
        self.paths = []
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.server.paths.append(self.path)
            body = b"thanks, got it"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass


class Portal(unittest.TestCase):
    """One store owner's visit, step by step, in one browser."""

    @classmethod
    def setUpClass(cls):
        SHOTS.mkdir(parents=True, exist_ok=True)
        for old in SHOTS.glob("*.png"):
            old.unlink()
        cls.receiver = Receiver()
        threading.Thread(target=cls.receiver.serve_forever, daemon=True).start()
        cls.log = open(SHOTS / "herald-local.log", "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update({"PORT": "0", "RUST_LOG": "warn"})
        cls.server = subprocess.Popen(
            [SERVER], env=env, stdout=subprocess.PIPE, stderr=cls.log, text=True
        )
        line = cls.server.stdout.readline()
        found = re.search(r"portal: (http://127\.0\.0\.1:\d+/portal)", line)
        if not found:
            cls.server.kill()
            raise RuntimeError(f"herald-local did not start: {line!r}")
        cls.portal = found.group(1)
        cls.profile = tempfile.mkdtemp(prefix="herald-portal-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for arg in [
            "--headless=new",
            "--no-sandbox",  # the tests run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1200,860",
            f"--user-data-dir={cls.profile}",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ]:
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        cls.browser = webdriver.Chrome(
            service=Service(executable_path=driver), options=options
        )
        # The page re-renders what it shows: an element found a moment ago may be
        # replaced before it is read, so a stale one is looked up again.
        cls.wait = WebDriverWait(
            cls.browser, WAIT, ignored_exceptions=[StaleElementReferenceException]
        )

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()
        cls.server.terminate()
        try:
            cls.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.server.kill()
        cls.receiver.shutdown()
        cls.log.close()
        shutil.rmtree(cls.profile, ignore_errors=True)

    # --- helpers -----------------------------------------------------------------

    def shot(self, name):
        self.browser.save_screenshot(str(SHOTS / f"{name}.png"))

    def find(self, css):
        return self.wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def text_of(self, css, text):
        """Waits until the element `css` reads exactly `text`."""
        try:
            self.wait.until(lambda b: b.find_element(By.CSS_SELECTOR, css).text == text)
        except Exception:
            found = [e.text for e in self.browser.find_elements(By.CSS_SELECTOR, css)]
            self.fail(f"{css}: expected {text!r}, found {found!r}")

    def row_cells(self):
        row = self.find("#integrations-table tbody tr")
        return [c.text for c in row.find_elements(By.CSS_SELECTOR, "th, td")][:5]

    def press(self, label):
        self.find(f'button[aria-label="{label}"]').click()

    def console_errors(self):
        return [
            e["message"]
            for e in self.browser.get_log("browser")
            if e["level"] == "SEVERE"
        ]

    # --- the visit ---------------------------------------------------------------

    def test_a_store_owner_creates_tests_finds_disables_and_deletes_a_webhook(self):
        b = self.browser
        hook = f"http://127.0.0.1:{self.receiver.server_address[1]}/hook"

        # Sign in: the dev server's store picker.
        b.get(self.portal)
        store = self.find("#store")
        self.assertEqual(b.switch_to.active_element, store)
        store.clear()
        store.send_keys("portal-shop")
        self.shot("01-sign-in")
        self.find("#view-signin button[type=submit]").click()
        self.text_of("#who-store", "Store portal-shop")
        self.text_of("#no-integrations", "No integrations yet.")
        self.shot("02-no-integrations")

        # Create a webhook through the form: first a URL the API refuses, its error
        # beside the field; then a good one.
        self.find("#new-integration").click()
        self.text_of("#editor-title", "New integration")
        self.assertEqual(
            Select(self.find("#f-data-integration-type")).first_selected_option.text,
            "Webhook",
        )
        self.find("#f-data-name").send_keys("Shipping hook")
        self.find('input[name=observes][value="order.paid"]').click()
        url = self.find("#f-data-configuration-url")
        url.send_keys("ftp://127.0.0.1/hook")
        self.find("#f-data-configuration-secret-key").send_keys(SECRET)
        self.find("#integration-form button[type=submit]").click()
        self.text_of("#f-data-configuration-url-error", "must be an http(s) URL, not ftp:")
        self.assertEqual(url.get_attribute("aria-invalid"), "true")
        self.assertIn(
            "f-data-configuration-url-error", url.get_attribute("aria-describedby")
        )
        self.assertEqual(b.switch_to.active_element, url)
        # The typed secret left with the request and is not kept in the page.
        self.assertEqual(
            self.find("#f-data-configuration-secret-key").get_attribute("value"), ""
        )
        self.shot("03-validation-error")
        url.clear()
        url.send_keys(hook)
        self.find("#f-data-configuration-secret-key").send_keys(SECRET)
        self.find("#integration-form button[type=submit]").click()
        self.text_of("#notice", "Shipping hook is created.")
        self.assertEqual(
            self.row_cells(),
            ["Shipping hook", "Webhook", "Enabled", "order.paid", "Healthy"],
        )
        self.assertNotIn(SECRET, b.page_source)
        self.shot("04-listed")

        # Editing shows the stored secret masked only, and an empty field.
        self.press("Edit Shipping hook")
        self.text_of("#editor-title", "Edit Shipping hook")
        secret = self.find("#f-data-configuration-secret-key")
        self.assertEqual(secret.get_attribute("value"), "")
        self.assertEqual(secret.get_attribute("type"), "password")
        masked = "*" * (len(SECRET) - 4) + SECRET[-4:]
        self.text_of(
            "#f-data-configuration-secret-key-help",
            f"Stored ({masked}). Leave empty to keep it.",
        )
        self.assertNotIn(SECRET, b.page_source)
        self.find("#integration-form button[type=button]").click()  # Cancel

        # A test delivery to the loopback receiver, and its result.
        self.press("Send a test delivery to Shipping hook")
        self.text_of("#test-result h2", "Test delivery to Shipping hook (order.paid)")
        answers = [e.text for e in b.find_elements(By.CSS_SELECTOR, "#test-result dd")]
        self.assertEqual(answers[0:2], ["Delivered", "200"])
        self.assertRegex(answers[2], r"^\d+\.\d{3} s$")
        self.assertEqual(answers[3:], ["none", "thanks, got it"])
        self.assertEqual(self.receiver.paths, ["/hook"])
        self.shot("05-test-delivery")

        # The attempt is in the store's logs, and not among the failures.
        self.find('#nav button[data-view="logs"]').click()
        self.text_of("#logs-title", "Logs")
        self.text_of("#logs-table tbody tr td:nth-child(2)", "order.paid")
        cells = [
            c.text
            for c in b.find_elements(By.CSS_SELECTOR, "#logs-table tbody tr td")
        ]
        self.assertEqual(cells[1:5], ["order.paid", "Shipping hook", "1", "Succeeded (200)"])
        self.assertEqual(len(b.find_elements(By.CSS_SELECTOR, "#logs-table tbody tr")), 1)
        self.shot("06-logs")
        Select(self.find("#logs-outcome")).select_by_visible_text("Failed")
        self.find("#view-logs .filters button[type=submit]").click()
        self.text_of("#logs-results .empty", "No attempts match.")
        Select(self.find("#logs-outcome")).select_by_visible_text("Succeeded")
        Select(self.find("#logs-event")).select_by_visible_text("order.paid")
        self.find("#view-logs .filters button[type=submit]").click()
        self.text_of("#logs-table tbody tr td:nth-child(5)", "Succeeded (200)")

        # Its page: the job as a timeline of its attempts, and the replay of its dead
        # letters (none) with its counts.
        self.find('#nav button[data-view="integrations"]').click()
        self.find("#integrations-table tbody th button").click()
        self.text_of("#integration-title", "Shipping hook")
        job = self.find("#jobs .job p")
        self.assertRegex(
            job.text, r"^order\.paid · delivered after 1 attempt · last status 200 · queued .+$"
        )
        attempts = self.find("#jobs .job button[aria-expanded]")
        attempts.click()
        self.assertEqual(attempts.get_attribute("aria-expanded"), "true")
        self.text_of("#jobs .timeline li strong", "Attempt 1")
        timeline = [e.text for e in b.find_elements(By.CSS_SELECTOR, "#jobs .timeline dd")]
        self.assertEqual(timeline[0:2], ["Delivered", "200"])
        self.find("#integration-body .actions button").click()  # Replay dead letters
        self.text_of(
            "#replay-result p",
            "Replayed 0 of 0 dead-lettered jobs (the dead-letter queue was read to its end).",
        )
        self.shot("07-jobs-and-replay")

        # Disable it, then delete it after confirming.
        self.find("#back-to-list").click()
        self.press("Disable Shipping hook")
        self.text_of("#notice", "Shipping hook is disabled.")
        self.assertEqual(
            self.row_cells(),
            ["Shipping hook", "Webhook", "Disabled", "order.paid", "Disabled"],
        )
        self.shot("08-disabled")
        b.set_window_size(390, 844)
        self.shot("09-phone")
        b.set_window_size(1200, 860)
        self.press("Delete Shipping hook")
        self.text_of("#confirm-title", "Delete Shipping hook?")
        self.shot("10-confirm-delete")
        self.find("#confirm-ok").click()
        self.text_of("#notice", "Shipping hook is deleted.")
        self.text_of("#no-integrations", "No integrations yet.")
        self.shot("11-deleted")

        # No script, style or connection was refused by the page's policy, and
        # nothing failed in the page but the refused creation the browser reports.
        origin = self.portal.removesuffix("/portal")
        self.assertEqual(
            self.console_errors(),
            [
                f"{origin}/v2/integrations - Failed to load resource: the server "
                "responded with a status of 422 (Unprocessable Entity)"
            ],
        )


def main():
    global SERVER
    if len(sys.argv) != 2:
        sys.exit("usage: infra/portal_test.py <path to herald-local>")
    SERVER = os.path.abspath(sys.argv[1])
    started = time.monotonic()
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    print(f"portal browser tests: {time.monotonic() - started:.1f} s; screenshots in {SHOTS}")
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
