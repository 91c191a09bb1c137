#!/usr/bin/env python3
"""The store owner's portal in a real browser: headless Chromium (Debian's chromium
and chromium-driver, infra/chromium.sh) driven through WebDriver against the dev
server, with a webhook receiver on loopback. Each step saves a screenshot under
.run/portal/<mode>/ for review.

    infra/portal_test.py <path to herald-local> [header|jwt]

header (the default): the dev server's store picker (X-Store-Id).
jwt: the dev server with HERALD_AUTH=jwt (API Gateway's JWT authorizer on loopback)
and an OpenID Provider on loopback (infra/oidc/provider.mjs, the npm registry's
oidc-provider, installed by infra/oidc.sh): sign in on the provider's login page,
authorization code with PKCE, the code exchanged at a token endpoint on another origin
than the issuer's.

Everything stays on 127.0.0.1: the dev server, the receiver and the provider on ports
the OS picks, Chromium with its background services off and every other host
unresolvable.
"""

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
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
# infra/oidc.sh links the Node.js the OpenID Provider runs on here.
NODE = ROOT / "infra" / "oidc" / "node"
SHOTS = ROOT / ".run" / "portal"  # and the mode's folder under it
SERVER = None  # path to herald-local, from the command line
CLIENT_ID = "herald-portal"  # the portal's client at the loopback OpenID Provider
SECRET = "portal-test-secret-never-shown-again"
WAIT = 15  # seconds for any one thing to appear


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver on loopback that answers 200 and remembers the paths and
    the headers."""

    def __init__(self):
        self.paths = []
        self.headers = []
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.server.paths.append(self.path)
            self.server.headers.append({k.lower(): v for k, v in self.headers.items()})
            body = b"thanks, got it"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass


class Browser(unittest.TestCase):
    """The dev server, a webhook receiver and headless Chromium, for one class's
    visit; MODE names the sign-in and the screenshots' folder."""

    MODE = "header"

    @classmethod
    def setUpClass(cls):
        cls.shots = SHOTS / cls.MODE
        cls.shots.mkdir(parents=True, exist_ok=True)
        for old in cls.shots.glob("*.png"):
            old.unlink()
        cls.receiver = Receiver()
        threading.Thread(target=cls.receiver.serve_forever, daemon=True).start()
        cls.log = open(cls.shots / "herald-local.log", "w")
        cls.provider = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update({"PORT": "0", "RUST_LOG": "warn"})
        env.update(cls.server_env())
        cls.server = subprocess.Popen(
            [SERVER], env=env, stdout=subprocess.PIPE, stderr=cls.log, text=True
        )
        line = cls.server.stdout.readline()
        found = re.search(r"portal: (http://127\.0\.0\.1:\d+/portal)", line)
        if not found:
            cls.server.kill()
            cls.stop_provider()
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
    def server_env(cls):
        """The dev server's settings for this mode: the store picker."""
        return {}

    @classmethod
    def stop_provider(cls):
        if cls.provider is not None:
            cls.provider.terminate()
            try:
                cls.provider.wait(timeout=10)
            except subprocess.TimeoutExpired:
                cls.provider.kill()

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()
        cls.server.terminate()
        try:
            cls.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.server.kill()
        cls.stop_provider()
        cls.receiver.shutdown()
        cls.log.close()
        shutil.rmtree(cls.profile, ignore_errors=True)

    # --- helpers -----------------------------------------------------------------

    def shot(self, name):
        self.browser.save_screenshot(str(self.shots / f"{name}.png"))

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

    def create_webhook(self, name, hook):
        """Creates a webhook observing order.paid through the form."""
        self.find("#new-integration").click()
        self.text_of("#editor-title", "New integration")
        self.find("#f-data-name").send_keys(name)
        self.find('input[name=observes][value="order.paid"]').click()
        self.find("#f-data-configuration-url").send_keys(hook)
        self.find("#f-data-configuration-secret-key").send_keys(SECRET)
        self.find("#integration-form button[type=submit]").click()
        self.text_of("#notice", f"{name} is created.")

    def console_errors(self):
        return [
            e["message"]
            for e in self.browser.get_log("browser")
            if e["level"] == "SEVERE"
        ]



class Portal(Browser):
    """One store owner's visit, step by step, in one browser (the dev server's store
    picker)."""


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


    def test_a_store_owner_sets_a_webhooks_delivery_options_and_sees_a_bad_one_beside_its_field(self):
        b = self.browser
        hook = f"http://127.0.0.1:{self.receiver.server_address[1]}/options"
        b.get(self.portal)
        store = self.find("#store")
        store.clear()
        store.send_keys("options-shop")
        self.find("#view-signin button[type=submit]").click()
        self.text_of("#who-store", "Store options-shop")

        # A webhook that keeps its secret off the wire, retries for 5 minutes (under
        # the 30 the API allows) and takes 50 a second: the 5 is refused beside its
        # field, then 240 is taken.
        self.find("#new-integration").click()
        self.text_of("#editor-title", "New integration")
        self.find("#f-data-name").send_keys("Rated hook")
        self.find('input[name=observes][value="order.paid"]').click()
        self.find("#f-data-configuration-url").send_keys(hook)
        self.find("#f-data-configuration-secret-key").send_keys(SECRET)
        header = self.find("#f-data-delivery-secret-header")
        self.assertTrue(header.is_selected(), "Elastic Path's header is the default")
        header.click()
        window = self.find("#f-data-delivery-retry-window-minutes")
        window.send_keys("5")
        self.find("#f-data-delivery-max-per-second").send_keys("50")
        self.find("#integration-form button[type=submit]").click()
        self.text_of(
            "#f-data-delivery-retry-window-minutes-error",
            "must be a whole number of minutes from 30 to 1440 (or null for the default, 30)",
        )
        self.assertEqual(window.get_attribute("aria-invalid"), "true")
        self.assertEqual(b.switch_to.active_element, window)
        self.shot("12-delivery-option-refused")
        window.clear()
        window.send_keys("240")
        self.find("#f-data-configuration-secret-key").send_keys(SECRET)
        self.find("#integration-form button[type=submit]").click()
        self.text_of("#notice", "Rated hook is created.")
        [stored] = self.integrations("options-shop")
        self.assertEqual(
            stored["delivery"],
            {"secret_header": False, "retry_window_minutes": 240, "max_per_second": 50},
        )

        # Its test delivery carries the signature and not the secret.
        self.press("Send a test delivery to Rated hook")
        self.text_of("#test-result h2", "Test delivery to Rated hook (order.paid)")
        sent = self.receiver.headers[self.receiver.paths.index("/options")]
        self.assertNotIn("x-moltin-secret-key", sent)
        self.assertRegex(sent["webhook-signature"], r"^v1,")

        # Editing shows the stored options; clearing the rate and sending the header
        # again leaves only the retry window.
        self.press("Edit Rated hook")
        self.text_of("#editor-title", "Edit Rated hook")
        self.assertFalse(self.find("#f-data-delivery-secret-header").is_selected())
        window = self.find("#f-data-delivery-retry-window-minutes")
        self.assertEqual(window.get_attribute("value"), "240")
        rate = self.find("#f-data-delivery-max-per-second")
        self.assertEqual(rate.get_attribute("value"), "50")
        b.execute_script("arguments[0].scrollIntoView()", self.find("fieldset.delivery"))
        self.shot("13-delivery-options")
        rate.clear()
        self.find("#f-data-delivery-secret-header").click()
        self.find("#integration-form button[type=submit]").click()
        self.text_of("#notice", "Rated hook is saved.")
        [stored] = self.integrations("options-shop")
        self.assertEqual(stored["delivery"], {"retry_window_minutes": 240})

        # An SQS integration's form has no secret header to offer.
        self.find("#new-integration").click()
        Select(self.find("#f-data-integration-type")).select_by_visible_text("Amazon SQS queue")
        self.find("#f-data-delivery-max-per-second")
        self.assertEqual(
            b.find_elements(By.CSS_SELECTOR, "#f-data-delivery-secret-header"), []
        )
        self.find("#integration-form button[type=button]").click()  # Cancel

        origin = self.portal.removesuffix("/portal")
        self.assertEqual(
            self.console_errors(),
            [
                f"{origin}/v2/integrations - Failed to load resource: the server "
                "responded with a status of 422 (Unprocessable Entity)"
            ],
        )

    def integrations(self, store):
        """The store's integrations, as the API lists them (its own request)."""
        origin = self.portal.removesuffix("/portal")
        request = urllib.request.Request(
            f"{origin}/v2/integrations", headers={"X-Store-Id": store}
        )
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(request, timeout=WAIT) as answer:
            return json.load(answer)["data"]


def free_port():
    """A port free on 127.0.0.1 now: the dev server's, which the provider must know
    first (its client's redirect URI)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortalJwt(Browser):
    """The portal under AuthMode=JWT: OpenID Connect against a real OpenID Provider on
    loopback, the dev server validating its tokens as API Gateway's JWT authorizer
    does."""

    MODE = "jwt"

    @classmethod
    def server_env(cls):
        port = free_port()
        cls.provider_log = open(cls.shots / "oidc-provider.log", "w")
        cls.provider = subprocess.Popen(
            [
                # The Node.js infra/oidc.sh chose (20 or later), else the machine's.
                str(NODE) if NODE.exists() else "node",
                str(ROOT / "infra" / "oidc" / "provider.mjs"),
                "--redirect-uri",
                f"http://127.0.0.1:{port}/portal",
                "--client-id",
                CLIENT_ID,
            ],
            stdout=subprocess.PIPE,
            stderr=cls.provider_log,
            text=True,
        )
        line = cls.provider.stdout.readline()
        try:
            started = json.loads(line)
        except ValueError:
            cls.stop_provider()
            raise RuntimeError(
                f"the OpenID Provider did not start (infra/oidc.sh install?): {line!r}"
            )
        cls.issuer = started["issuer"]
        cls.token_endpoint = started["token_endpoint"]
        return {
            "PORT": str(port),
            "HERALD_AUTH": "jwt",
            "HERALD_JWT_ISSUER": cls.issuer,
            "HERALD_JWT_AUDIENCE": CLIENT_ID,
            "HERALD_PORTAL_CLIENT_ID": CLIENT_ID,
        }

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.provider_log.close()

    def storage(self):
        """Every key and value of the page's local and session storage, and its
        cookies."""
        return self.browser.execute_script(
            "const all = (s) => Object.fromEntries(Object.keys(s).map((k) => [k, s.getItem(k)]));"
            "return {local: all(localStorage), session: all(sessionStorage), cookie: document.cookie};"
        )

    def test_a_store_owner_signs_in_at_the_issuer_creates_a_webhook_and_signs_out(self):
        b = self.browser
        hook = f"http://127.0.0.1:{self.receiver.server_address[1]}/hook"
        self.assertNotEqual(
            self.issuer.rsplit(":", 1)[1],
            self.token_endpoint.split(":")[2].split("/")[0],
            "the token endpoint is on another origin than the issuer",
        )

        # The page offers the stack's issuer.
        b.get(self.portal)
        self.text_of("#signin-body p", f"Sign in with your account at {self.issuer}.")
        self.shot("01-sign-in")
        self.find("#signin-body button.primary").click()

        # The provider's own login page: the login is the account, and the store.
        login = self.find("input[name=login]")
        self.assertTrue(b.current_url.startswith(f"{self.issuer}/interaction/"), b.current_url)
        login.send_keys("jwt-shop")
        self.find("input[name=password]").send_keys("any password")
        self.shot("02-provider-login")
        self.find("button[type=submit]").click()

        # Back on the portal: the code exchanged (at the token endpoint's own origin),
        # the address bar cleaned, the token in the page's memory only.
        self.text_of("#who-store", "Signed in")
        self.text_of("#no-integrations", "No integrations yet.")
        self.assertEqual(b.current_url, self.portal)
        self.assertEqual(self.storage(), {"local": {}, "session": {}, "cookie": ""})
        self.shot("03-signed-in")

        # A webhook through the form, for the store the token names.
        self.create_webhook("Token hook", hook)
        self.assertEqual(
            self.row_cells(),
            ["Token hook", "Webhook", "Enabled", "order.paid", "Healthy"],
        )
        self.assertNotIn(SECRET, b.page_source)
        self.assertEqual(self.storage(), {"local": {}, "session": {}, "cookie": ""})
        self.shot("04-listed")

        # Sign out: the token is forgotten, the sign-in is offered again.
        self.find("#sign-out").click()
        self.text_of("#notice", "Signed out.")
        self.text_of("#signin-body p", f"Sign in with your account at {self.issuer}.")
        self.assertFalse(self.find_all_visible("#integrations-list tr"))
        self.shot("05-signed-out")

        # No script, style or connection was refused by the portal's policy, and no
        # request of the portal failed. (The provider's development login page asks for
        # a web font, which no host resolves to here, and a favicon it lacks.)
        provider_page = (f"{self.issuer}/favicon.ico ", "https://fonts.googleapis.com/")
        self.assertEqual(
            [e for e in self.console_errors() if not e.startswith(provider_page)], []
        )

    def find_all_visible(self, css):
        return [e for e in self.browser.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]


def main():
    global SERVER
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["header"], ["jwt"]):
        sys.exit("usage: infra/portal_test.py <path to herald-local> [header|jwt]")
    SERVER = os.path.abspath(sys.argv[1])
    mode = (sys.argv[2:] or ["header"])[0]
    test = {"header": Portal, "jwt": PortalJwt}[mode]
    started = time.monotonic()
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(test)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    print(
        f"portal browser tests ({mode}): {time.monotonic() - started:.1f} s; "
        f"screenshots in {SHOTS / mode}"
    )
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
