"""The web console in a real browser: headless Chromium (Debian's `chromium`)
driven by Playwright for Python, against a real keygate stack behind the
shipped Envoy configuration. Run by tests/tests/console.rs, one scenario per
call:

    console_browser.py SCENARIO

Environment (set by the Rust test):
    KEYGATE_CHROMIUM      the Chromium binary
    KEYGATE_CONSOLE_URL   the edge, e.g. http://127.0.0.1:41234 (console at /)
    KEYGATE_ADMIN_TOKEN   the control plane's admin token
    KEYGATE_CONSOLE_OUT   this scenario's output folder (failure screenshot)
    KEYGATE_OIDC_ISSUER   the OpenID provider (oidc-provider-mock), for the
                          scenarios that sign a user in through it
    KEYGATE_SCREENSHOTS   where `screenshots` writes the README's pictures

Prints `PASS <scenario>` and exits 0, or prints the failure, saves
`failure.png` (the whole page) in KEYGATE_CONSOLE_OUT and exits 1.
"""

import datetime
import json
import os
import re
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

HERE = Path(__file__).resolve().parent
BASE = os.environ.get("KEYGATE_CONSOLE_URL", "").rstrip("/")
ADMIN_TOKEN = os.environ.get("KEYGATE_ADMIN_TOKEN", "")
OUT = Path(os.environ.get("KEYGATE_CONSOLE_OUT", "target/e2e-console"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY_PATTERN = re.compile(r"ok1-\d+-\d+-[A-Za-z0-9_-]+")
expect.set_options(timeout=10_000)


def log(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- the API
def http(method: str, path: str, *, token=None, cookie=None, body=None, headers=None):
    """A raw request to the edge; returns (status, parsed JSON or text)."""
    request = urllib.request.Request(BASE + path, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if cookie:
        request.add_header("Cookie", cookie)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data=data, timeout=15) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def admin(method: str, path: str, body=None):
    status, data = http(method, path, token=ADMIN_TOKEN, body=body)
    assert 200 <= status < 300, f"admin {method} {path}: {status} {data}"
    return data


def unique(label: str) -> str:
    return f"{label}-{time.time_ns() % 10**10}"


def user_with_access(username: str, servers) -> int:
    user = admin("POST", "/api/users", {"username": username, "email": f"{username}@example.com"})
    grant(user["id"], servers)
    return user["id"]


def grant(user_id: int, servers) -> None:
    admin("POST", "/api/access-rules", {"name": unique(f"rule-{user_id}"), "mcpServerIds": list(servers), "subjects": [f"user:{user_id}"]})


def edge_status(key: str, server: str = "echo") -> int:
    """What the edge answers a key on an MCP server (an initialize POST)."""
    status, _ = http(
        "POST",
        f"/mcp-connect/{server}/mcp",
        token=key,
        body={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "console-test", "version": "1"}}},
        headers={"Accept": "application/json, text/event-stream"},
    )
    return status


def wait_edge_status(key: str, want: int, server: str = "echo", within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    status = None
    while time.monotonic() < deadline:
        status = edge_status(key, server)
        if status == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"the edge answered {status} on {server}, not {want}, within {within} s")


def call_tool_with_sdk(key: str, server: str = "echo") -> dict:
    """The official Python MCP SDK, through Envoy, with the key."""
    env = dict(os.environ, KEYGATE_TEST_KEY=key)
    done = subprocess.run(
        [sys.executable, str(HERE / "mcp_client.py"), f"{BASE}/mcp-connect/{server}/mcp"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and "error" not in report, f"MCP SDK call failed: {report} {done.stderr[-2000:]}"
    return report


# ------------------------------------------------------------ the browser
class Browser:
    """One Chromium with a fresh profile; contexts are fresh cookie jars."""

    def __init__(self, playwright):
        chromium = os.environ.get("KEYGATE_CHROMIUM")
        assert chromium and Path(chromium).is_file(), "KEYGATE_CHROMIUM must name the Chromium binary (cargo xtask test sets it)"
        self.browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        self.external = []
        self.pages = []

    def context(self, width=1280, height=860, scheme="light"):
        context = self.browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=BASE)

        def only_loopback(route):
            # The console must load nothing from outside (air-gapped
            # operators); the OpenID provider's page links a CDN stylesheet,
            # which is not ours and is refused here.
            url = route.request.url
            if not re.match(r"^https?://127\.0\.0\.1[:/]", url):
                if url.startswith(BASE):
                    self.external.append(url)
                frame_url = route.request.frame.url if route.request.frame else ""
                if frame_url.startswith(BASE):
                    self.external.append(url)
                route.abort()
            else:
                route.continue_()

        context.route("**/*", only_loopback)
        return context

    def page(self, **kwargs) -> Page:
        page = self.context(**kwargs).new_page()
        self.pages.append(page)
        return page


def sign_in_with_token(page: Page, next_path: str = "/api-keys") -> None:
    page.goto(f"{BASE}{next_path}")
    expect(page).to_have_url(re.compile(r"/signin\?next="))
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in with admin token").click()
    expect(page).to_have_url(f"{BASE}{next_path}")
    expect(page.get_by_role("button", name=re.compile("^Profile menu for"))).to_be_visible()


def sign_in_with_oidc(page: Page, subject: str, next_path: str = "/api-keys") -> None:
    """Through the real provider: the console's button, the provider's
    authorization form, the redirect back with a code."""
    page.goto(f"{BASE}{next_path}")
    expect(page).to_have_url(re.compile(r"/signin\?next="))
    page.get_by_role("button", name="Sign in with OpenID Connect").click()
    issuer = os.environ["KEYGATE_OIDC_ISSUER"].rstrip("/")
    expect(page).to_have_url(re.compile("^" + re.escape(issuer)))
    page.locator("input[name=sub]").fill(subject)
    page.get_by_role("button", name="Authorize").click()
    expect(page).to_have_url(f"{BASE}{next_path}", timeout=15_000)
    expect(page.get_by_role("button", name=re.compile("^Profile menu for"))).to_be_visible()


def set_provider_user(subject: str, claims: dict) -> None:
    issuer = os.environ["KEYGATE_OIDC_ISSUER"].rstrip("/")
    request = urllib.request.Request(f"{issuer}/users/{subject}", method="PUT", data=json.dumps(claims).encode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 204), response.status


def session_cookie(page: Page) -> str:
    cookies = [c for c in page.context.cookies(BASE) if c["name"] == "keygate_session"]
    assert cookies, "no keygate_session cookie after sign-in"
    cookie = cookies[0]
    assert cookie["httpOnly"], "the session cookie must be HttpOnly"
    assert cookie["sameSite"] == "Lax", f"the session cookie must be SameSite=Lax, is {cookie['sameSite']}"
    return f"keygate_session={cookie['value']}"


def future_day(days: int) -> str:
    return (datetime.date.today() + datetime.timedelta(days=days)).isoformat()


def open_create_dialog(page: Page):
    page.get_by_role("button", name="Create API Key").first.click()
    dialog = page.get_by_role("dialog", name="Create API Key")
    expect(dialog).to_be_visible()
    return dialog


def create_key_in_dialog(page: Page, name: str, servers=("echo",), expires_in_days=10, description="made by the browser test"):
    """Fills and submits Create API Key; returns the shown-once dialog."""
    dialog = open_create_dialog(page)
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label("Description").fill(description)
    if expires_in_days is not None:
        dialog.get_by_label("Expiration Date").fill(future_day(expires_in_days))
    if servers:
        dialog.get_by_label("Selected MCP Servers").check()
        for server in servers:
            dialog.get_by_role("checkbox", name=server, exact=True).check()
    else:
        dialog.get_by_label("All MCP Servers").check()
    with page.expect_response(lambda r: r.request.method == "POST" and "/api-keys" in r.url) as created:
        dialog.get_by_role("button", name="Create API Key").click()
    response = created.value
    assert response.status == 201, f"create answered {response.status}: {response.text()}"
    cache = response.headers.get("cache-control", "")
    assert "no-store" in cache, f"the create answer must carry Cache-Control: no-store, has {cache!r}"
    shown = page.get_by_role("dialog", name="API Key Created")
    expect(shown).to_be_visible()
    return shown


def read_shown_key(page: Page, shown) -> str:
    """Copies the key with the dialog's Copy button and reads it back from
    the clipboard; checks it is the key the dialog shows."""
    expect(shown).to_contain_text("shown only once")
    displayed = shown.locator("code.key").inner_text().strip()
    assert KEY_PATTERN.fullmatch(displayed), f"the dialog shows no key: {displayed!r}"
    copy = shown.get_by_role("button", name="Copy API key")
    copy.click()
    expect(copy).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == displayed, "the clipboard does not hold the shown key"
    return copied


def assert_key_nowhere(page: Page, key: str) -> None:
    """After the dialog closed: not in the DOM (markup or any form value),
    the URL, the history state, localStorage or sessionStorage."""
    expect(page.get_by_role("dialog", name="API Key Created")).to_have_count(0)
    found = page.evaluate(
        """(key) => {
            const where = [];
            if (document.documentElement.outerHTML.includes(key)) where.push('DOM markup');
            if (document.body.innerText.includes(key)) where.push('page text');
            for (const el of document.querySelectorAll('input, textarea, select')) {
                if ((el.value || '').includes(key)) where.push('a form value');
            }
            if (location.href.includes(key)) where.push('URL');
            if (JSON.stringify(history.state ?? null).includes(key)) where.push('history state');
            for (const store of [localStorage, sessionStorage]) {
                for (let i = 0; i < store.length; i++) {
                    const name = store.key(i);
                    if (name.includes(key) || (store.getItem(name) || '').includes(key)) where.push(store === localStorage ? 'localStorage' : 'sessionStorage');
                }
            }
            return where;
        }""",
        key,
    )
    assert not found, f"the key is still in: {found}"


def row_of(page: Page, name: str):
    return page.locator("tbody tr").filter(has=page.get_by_role("button", name=name, exact=True))


def delete_key_through_menu(page: Page, name: str) -> None:
    page.get_by_role("button", name=f"Actions for API key {name}").click()
    page.get_by_role("menuitem", name="Delete").click()
    confirm = page.get_by_role("alertdialog", name="Delete API Key")
    expect(confirm).to_contain_text(name)
    with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        confirm.get_by_role("button", name="Delete").click()
    assert deleted.value.status == 200, deleted.value.text()
    expect(confirm).to_have_count(0)
    expect(row_of(page, name)).to_have_count(0)


def cell(page: Page, name: str, column: str):
    return row_of(page, name).locator(f"td[data-label='{column}']")


def key_lifecycle(page: Page, key_name: str) -> None:
    """Create for one server with an expiry, copy, use with the MCP SDK,
    see Last Used change after a reload, delete, 401 at the edge."""
    shown = create_key_in_dialog(page, key_name, servers=("echo",), expires_in_days=10)
    key = read_shown_key(page, shown)
    expect(shown.get_by_text(f"{BASE}/mcp-connect/echo/mcp").first).to_be_visible()
    snippet = shown.locator("pre.snippet")
    expect(snippet).to_contain_text('"url": "' + f"{BASE}/mcp-connect/echo/mcp")
    assert key not in snippet.inner_text(), "the key is in a snippet before the person asked for it"
    shown.get_by_label("Fill in the key in the snippets").check()
    expect(snippet).to_contain_text(key)
    shown.get_by_role("button", name="Done").click()
    assert_key_nowhere(page, key)
    expect(cell(page, key_name, "Servers")).to_have_text("1")
    expect(cell(page, key_name, "Last Used")).to_have_text("Never")
    expect(cell(page, key_name, "Expires")).to_contain_text(re.compile(r"week|days"))
    expect(cell(page, key_name, "Expires").locator(".badge")).to_have_count(0)
    # The key expires at the end of the picked day in the browser's zone.
    listed = page.evaluate("fetch('/api/api-keys').then(r => r.json())")["items"]
    expires = next(k["expiresAt"] for k in listed if k["name"] == key_name)
    day = datetime.date.fromisoformat(future_day(10))
    end_of_day = datetime.datetime.combine(day, datetime.time(23, 59, 59)).astimezone()
    got = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00"))
    assert got == end_of_day, f"expiresAt {expires} is not the end of {day} in the browser's time zone ({end_of_day})"

    wait_edge_status(key, 200)
    report = call_tool_with_sdk(key)
    assert report.get("echo") == "hello from python", report
    deadline = time.monotonic() + 20
    while True:
        page.reload()
        if cell(page, key_name, "Last Used").inner_text().strip() != "Never":
            break
        assert time.monotonic() < deadline, "Last Used still says Never 20 s after the key was used"
        time.sleep(1)
    expect(cell(page, key_name, "Last Used").locator("time")).to_have_attribute("title", re.compile(r"\d"))
    assert_key_nowhere(page, key)

    delete_key_through_menu(page, key_name)
    wait_edge_status(key, 401)


# ------------------------------------------------------------- scenarios
def scenario_admin_key_lifecycle(browser: Browser) -> None:
    """The admin, signed in with the token, runs the whole life of one of
    their own keys (the OIDC scenario runs the same as a user)."""
    admin_me = admin("GET", "/api/me")
    grant(admin_me["id"], ["echo"])
    page = browser.page()
    sign_in_with_token(page)
    expect(page.get_by_role("heading", name="API Keys", level=1)).to_be_visible()
    key_lifecycle(page, unique("admin-laptop"))


def scenario_oidc_user_key_lifecycle(browser: Browser) -> None:
    """A user signs in through the OpenID provider (the redirect flow really
    runs), sees the empty state, and runs the whole life of a key; then
    cannot open admin pages or call admin routes with the session."""
    subject = unique("ada")
    set_provider_user(subject, {"email": f"{subject}@example.com", "email_verified": True, "preferred_username": subject, "name": "Ada"})
    page = browser.page()
    sign_in_with_oidc(page, subject)
    me = page.evaluate("fetch('/api/me').then(r => r.json())")
    assert me["role"] == "user", me
    expect(page.get_by_role("heading", name="No API keys yet")).to_be_visible()
    expect(page.get_by_text("without a browser sign-in")).to_be_visible()
    grant(me["id"], ["echo", "time"])
    page.reload()
    key_lifecycle(page, unique("ada-laptop"))

    # The profile menu shows who is signed in and links API Keys.
    page.get_by_role("button", name=f"Profile menu for {me['username']}").click()
    menu = page.get_by_role("menu")
    expect(menu).to_contain_text(me["username"])
    expect(menu.get_by_role("menuitem", name="API Keys")).to_be_visible()
    expect(menu.get_by_role("menuitem", name="Sign out")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("navigation", name="Main").get_by_text("User Management")).to_be_hidden()

    # Admin pages and routes refuse the user's session.
    for path in ("/admin/api-keys", "/admin/users", "/admin/mcp-servers", "/admin/access-rules"):
        page.goto(BASE + path)
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    statuses = page.evaluate(
        """async () => {
            const out = {};
            for (const [method, path, body] of [
                ['GET', '/api/users'], ['GET', '/api/admin-api-keys'], ['GET', '/api/access-rules'],
                ['POST', '/api/users', {username: 'mallory'}],
                ['POST', '/api/admin-api-keys', {userId: 1, name: 'x', mcpServerIds: ['*']}],
                ['DELETE', '/api/users/1']]) {
                const r = await fetch(path, {method, headers: body ? {'Content-Type': 'application/json'} : {}, body: body ? JSON.stringify(body) : undefined});
                out[method + ' ' + path] = r.status;
            }
            return out;
        }"""
    )
    assert all(status == 403 for status in statuses.values()), f"admin routes answered a user's session: {statuses}"
    # The Servers page lists what the user reaches, with URLs.
    page.goto(BASE + "/servers")
    for server in ("echo", "time"):
        expect(page.get_by_text(f"{BASE}/mcp-connect/{server}/mcp")).to_be_visible()


def scenario_admin_manages_other_users_keys(browser: Browser) -> None:
    """User Management > API Keys: the User column, the filter by user, a
    key created for a user, and another user's key deleted through the menu
    (it then gets 401 at the edge)."""
    bob = unique("bob")
    bob_id = user_with_access(bob, ["echo"])
    created = admin("POST", "/api/admin-api-keys", {"userId": bob_id, "name": "bob-ci", "mcpServerIds": ["echo"]})
    wait_edge_status(created["key"], 200)
    page = browser.page()
    sign_in_with_token(page, "/admin/api-keys")
    expect(page.get_by_role("columnheader", name="User")).to_be_visible()
    page.get_by_label("User", exact=True).select_option(label=bob)
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(cell(page, "bob-ci", "User")).to_have_text(bob)

    # A key for bob, made by the admin: bob's reach fills the checklist.
    dialog = open_create_dialog(page)
    expect(dialog.get_by_label("User")).to_have_value(str(bob_id))
    dialog.get_by_label("Name").fill("bob-laptop")
    dialog.get_by_label("Selected MCP Servers").check()
    dialog.get_by_role("checkbox", name="echo", exact=True).check()
    dialog.get_by_role("button", name="Create API Key").click()
    shown = page.get_by_role("dialog", name="API Key Created")
    new_key = read_shown_key(page, shown)
    assert new_key.startswith(f"ok1-{bob_id}-"), "the admin's key for bob is not bob's"
    page.keyboard.press("Escape")
    assert_key_nowhere(page, new_key)
    expect(page.locator("tbody tr")).to_have_count(2)

    delete_key_through_menu(page, "bob-ci")
    wait_edge_status(created["key"], 401)
    wait_edge_status(new_key, 200)


def serve_foreign_page(target: str):
    """A page on 127.0.0.1 at another port: same site as the console (so
    SameSite=Lax still sends the cookie), another origin."""
    page_html = f"""<!doctype html><title>elsewhere</title>
<form id="f" method="post" action="{target}/api/api-keys" enctype="text/plain">
<input type="hidden" name='{{"name":"csrf","mcpServerIds":["*"],"x":"' value='"}}'>
<button type="submit">Send</button></form>""".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the standard library's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page_html)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def scenario_csrf_and_sign_out(browser: Browser) -> None:
    """Cross-site requests that carry the session cookie are refused (403),
    and signing out ends the session (the old cookie gets 401)."""
    page = browser.page()
    sign_in_with_token(page)
    cookie = session_cookie(page)
    before = len(admin("GET", "/api/api-keys")["items"])

    foreign = serve_foreign_page(BASE)
    try:
        other = f"http://127.0.0.1:{foreign.server_address[1]}/"
        page.goto(other)
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name="Send").click()
        response = posted.value
        sent = response.request.all_headers()
        assert "keygate_session=" in sent.get("cookie", ""), f"the browser did not send the cookie, so this proves nothing: {sent}"
        assert sent.get("origin") == other.rstrip("/"), sent
        assert response.status == 403, f"a same-site cross-origin POST got {response.status}"
        assert "cross-site request refused" in response.text()
        # fetch from that origin, with credentials (no-cors: no preflight).
        page.goto(other)
        result = page.evaluate(
            """async (url) => {
                await fetch(url + '/api/api-keys', {method: 'POST', mode: 'no-cors', credentials: 'include',
                    headers: {'Content-Type': 'text/plain'}, body: JSON.stringify({name: 'csrf2', mcpServerIds: ['*']})});
                return 'sent';
            }""",
            BASE,
        )
        assert result == "sent"
    finally:
        foreign.shutdown()
    for origin in ("http://evil.example", "null", f"http://localhost:{BASE.rsplit(':', 1)[1]}"):
        status, body = http("POST", "/api/api-keys", cookie=cookie, headers={"Origin": origin}, body={"name": "csrf3", "mcpServerIds": ["*"]})
        assert status == 403 and body == {"error": "cross-site request refused"}, f"Origin {origin}: {status} {body}"
    status, body = http("DELETE", "/api/api-keys/1", cookie=cookie, headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403, f"no Origin, Sec-Fetch-Site cross-site: {status} {body}"
    after = len(admin("GET", "/api/api-keys")["items"])
    assert after == before, "a cross-site request created a key"
    # The same cookie from the console's own origin works.
    status, _ = http("GET", "/api/me", cookie=cookie)
    assert status == 200

    page.goto(BASE + "/api-keys")
    page.get_by_role("button", name=re.compile("^Profile menu for")).click()
    page.get_by_role("menuitem", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin"))
    status, body = http("GET", "/api/me", cookie=cookie)
    assert status == 401, f"the signed-out session still works: {status} {body}"
    page.goto(BASE + "/api-keys")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fapi-keys"))


def no_sideways_scroll(page: Page, what: str) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"{what}: the page scrolls sideways at {widths[1]} px (content {widths[0]} px)"


def scenario_look_and_keyboard(browser: Browser) -> None:
    """Light and dark follow the system; nothing scrolls sideways at 390 px;
    focus is visible; dialogs trap focus and close on Escape; a past
    expiration date is refused with a message; an ended session goes to
    sign-in and back to the page."""
    me = admin("GET", "/api/me")
    for n in range(3):
        admin("POST", "/api/admin-api-keys", {"userId": me["id"], "name": unique(f"look-{n}"), "description": "a key with a rather long description that must wrap on a phone", "mcpServerIds": ["*"], "expiresAt": f"{future_day(3)}T12:00:00Z"})
    backgrounds = {}
    for scheme in ("light", "dark"):
        page = browser.page(scheme=scheme)
        sign_in_with_token(page)
        backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.context.close()
    assert backgrounds["light"] != backgrounds["dark"], f"dark mode does not change the background: {backgrounds}"

    page = browser.page(width=390, height=844)
    sign_in_with_token(page)
    expect(page.get_by_text("Expires soon").first).to_be_visible()
    for path in ("/api-keys", "/servers", "/admin/api-keys", "/admin/users", "/admin/mcp-servers", "/admin/access-rules"):
        page.goto(BASE + path)
        expect(page.locator("main[aria-busy]")).to_have_count(0)
        no_sideways_scroll(page, path)
    page.goto(BASE + "/api-keys")
    expect(page.locator("main[aria-busy]")).to_have_count(0)
    dialog = open_create_dialog(page)
    no_sideways_scroll(page, "the create dialog at 390 px")

    # Focus stays in the dialog, and the focused control shows an outline.
    for _ in range(25):
        page.keyboard.press("Tab")
        inside = page.evaluate("document.activeElement.closest('dialog') !== null")
        assert inside, "Tab left the open dialog"
    for _ in range(5):
        page.keyboard.press("Shift+Tab")
        assert page.evaluate("document.activeElement.closest('dialog') !== null"), "Shift+Tab left the open dialog"
    outline = page.evaluate("(() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]; })()")
    assert outline[0] != "none" and outline[1] != "0px", f"the focused control has no visible outline: {outline}"

    # A past expiration date is refused, visibly.
    dialog.get_by_label("Name").fill("too-late")
    dialog.get_by_label("Expiration Date").fill((datetime.date.today() - datetime.timedelta(days=1)).isoformat())
    dialog.get_by_role("button", name="Create API Key").click()
    expect(dialog.get_by_text("The expiration date is in the past")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.get_by_role("button", name="Create API Key").first).to_be_focused()

    # A readable message for an API error (a name the API refuses).
    dialog = open_create_dialog(page)
    dialog.get_by_label("Name").fill("bad\u202ename")
    dialog.get_by_role("button", name="Create API Key").click()
    expect(dialog.get_by_role("alert").filter(has_text=re.compile("[A-Z].*\\."))).to_be_visible()
    page.keyboard.press("Escape")

    # An ended session goes to sign-in and back to the page it was on.
    page.goto(BASE + "/admin/users")
    expect(page.get_by_role("heading", name="Users", level=1)).to_be_visible()
    page.context.clear_cookies()
    page.reload()
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fadmin%2Fusers"))
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in with admin token").click()
    expect(page).to_have_url(f"{BASE}/admin/users")


def scenario_admin_pages(browser: Browser) -> None:
    """Users, MCP Servers and Access Rules can be run from the console."""
    page = browser.page()
    sign_in_with_token(page, "/admin/users")
    username = unique("carol")
    page.get_by_role("button", name="Create User").click()
    dialog = page.get_by_role("dialog", name="Create User")
    dialog.get_by_label("Username").fill(username)
    dialog.get_by_label("Email").fill(f"{username}@example.com")
    dialog.get_by_role("button", name="Create User").click()
    expect(page.get_by_role("cell", name=username, exact=True)).to_be_visible()
    page.get_by_label(f"Role of {username}").select_option("admin")
    expect(page.get_by_text(f"{username} is now an admin")).to_be_visible()
    users = admin("GET", "/api/users")["items"]
    assert any(u["username"] == username and u["role"] == "admin" for u in users), "the role did not change"

    page.goto(BASE + "/admin/mcp-servers")
    server = unique("srv")
    page.get_by_role("button", name="Add MCP Server").click()
    dialog = page.get_by_role("dialog", name="Add MCP Server")
    dialog.get_by_label("Name", exact=True).fill(server)
    dialog.get_by_role("button", name="Add MCP Server").click()
    expect(page.locator("td[data-label='Name']", has_text=server)).to_be_visible()

    page.goto(BASE + "/admin/access-rules")
    rule = unique("rule")
    page.get_by_role("button", name="Create Access Rule").click()
    dialog = page.get_by_role("dialog", name="Create Access Rule")
    dialog.get_by_label("Name").fill(rule)
    dialog.get_by_role("checkbox", name=server, exact=True).check()
    dialog.get_by_role("checkbox", name=username, exact=True).check()
    dialog.get_by_role("button", name="Create Access Rule").click()
    expect(page.get_by_role("cell", name=rule, exact=True)).to_be_visible()
    page.get_by_role("button", name=f"Actions for access rule {rule}").click()
    page.get_by_role("menuitem", name="Delete").click()
    page.get_by_role("alertdialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("cell", name=rule, exact=True)).to_have_count(0)

    page.goto(BASE + "/admin/mcp-servers")
    page.get_by_role("button", name=f"Actions for mcp server {server}").click()
    page.get_by_role("menuitem", name="Delete").click()
    page.get_by_role("alertdialog").get_by_role("button", name="Delete").click()
    expect(page.locator("td[data-label='Name']", has_text=server)).to_have_count(0)

    page.goto(BASE + "/admin/users")
    page.get_by_role("button", name=f"Actions for user {username}").click()
    page.get_by_role("menuitem", name="Delete").click()
    page.get_by_role("alertdialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("cell", name=username, exact=True)).to_have_count(0)


def scenario_audit_log(browser: Browser) -> None:
    """Audit Log: a user sees the events about their own key, made by
    anyone, and nothing else; the admin sees everything and narrows it by
    action and by user."""
    subject = unique("eve")
    set_provider_user(subject, {"email": f"{subject}@example.com", "email_verified": True, "preferred_username": subject})
    page = browser.page()
    sign_in_with_oidc(page, subject, "/audit-log")
    me = page.evaluate("fetch('/api/me').then(r => r.json())")
    grant(me["id"], ["echo"])
    key_name = unique("eve-key")
    key = admin("POST", "/api/admin-api-keys", {"userId": me["id"], "name": key_name, "mcpServerIds": ["echo"]})
    admin("PATCH", f"/api/admin-api-keys/{key['id']}", {"enabled": False, "name": key_name})
    server = unique("audit-srv")
    admin("POST", "/api/mcp-servers", {"name": server})

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit Log").click()
    expect(page.get_by_role("heading", name="Audit Log")).to_be_visible()
    table = page.get_by_role("table", name="Audit events")
    rows = table.get_by_role("row").filter(has_text=key_name)
    expect(rows).to_have_count(3)
    for action in ("Key created", "Key disabled", "Key edited"):
        expect(rows.filter(has=page.get_by_role("cell", name=action, exact=True))).to_have_count(1)
    expect(rows.first).to_contain_text("admin-token")
    expect(table).not_to_contain_text(server)
    expect(page.get_by_label("User", exact=True)).to_have_count(0)
    page.get_by_label("Action", exact=True).select_option("key.disabled")
    expect(table.get_by_role("row")).to_have_count(2)  # the header and one event
    expect(table.get_by_role("cell", name="Key disabled", exact=True)).to_be_visible()

    admin_page = browser.page()
    sign_in_with_token(admin_page, "/audit-log")
    table = admin_page.get_by_role("table", name="Audit events")
    expect(table.get_by_role("cell", name=f"MCP server {server}", exact=True)).to_be_visible()
    admin_page.get_by_label("Action", exact=True).select_option("server.created")
    expect(table.get_by_role("cell", name=f"MCP server {server}", exact=True)).to_be_visible()
    expect(table.get_by_role("cell", name="Key created", exact=True)).to_have_count(0)
    admin_page.get_by_label("Action", exact=True).select_option("")
    admin_page.get_by_label("User", exact=True).select_option(label=me["username"])
    expect(table.get_by_role("cell", name=f"MCP server {server}", exact=True)).to_have_count(0)
    expect(table.get_by_role("row").filter(has_text=key_name)).to_have_count(3)
    expect(table.get_by_role("row").filter(has_text="Signed in")).to_have_count(1)


def scenario_key_policy(browser: Browser) -> None:
    """User Management > Key Policy: the admin sets the limits (a default
    above the maximum is refused with the API's message); the Create API Key
    dialog then shows the default expiry pre-filled and the maximum, and a
    later date is refused with the API's message. The policy is cleared at
    the end: the other scenarios share the stack."""
    try:
        page = browser.page()
        sign_in_with_token(page, "/admin/api-keys")
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Key Policy").click()
        expect(page).to_have_url(f"{BASE}/admin/key-policy")
        expect(page.get_by_role("heading", name="Key Policy", level=1)).to_be_visible()
        expect(page.get_by_text("Never changed: no limits.")).to_be_visible()
        maximum = page.get_by_label("Maximum lifetime (days)")
        default = page.get_by_label("Default lifetime (days)")
        unused = page.get_by_label("Disable keys unused for (days)")
        for box in (maximum, default, unused):
            expect(box).to_have_value("")

        # A default above the maximum: the API's message, nothing stored.
        maximum.fill("90")
        default.fill("120")
        page.get_by_role("button", name="Save Key Policy").click()
        expect(page.get_by_role("alert")).to_contain_text("must not be more than maxLifetimeDays (90)")
        assert admin("GET", "/api/settings/key-policy")["maxLifetimeDays"] is None, "a refused policy was stored"

        default.fill("30")
        with page.expect_response(lambda r: r.request.method == "PUT") as saved:
            page.get_by_role("button", name="Save Key Policy").click()
        assert saved.value.status == 200, saved.value.text()
        expect(page.get_by_text("Key policy saved.")).to_be_visible()
        policy = admin("GET", "/api/settings/key-policy")
        assert (policy["maxLifetimeDays"], policy["defaultLifetimeDays"], policy["maxUnusedDays"]) == (90, 30, None), policy
        page.reload()
        expect(page.get_by_label("Maximum lifetime (days)")).to_have_value("90")
        expect(page.get_by_text("Last changed")).to_be_visible()

        # The Create API Key dialog: the default pre-filled, the maximum named.
        page.goto(BASE + "/api-keys")
        dialog = open_create_dialog(page)
        expires = dialog.get_by_label("Expiration Date")
        expect(expires).to_have_value(future_day(30))
        expect(dialog.get_by_text("Keys may last at most 90 days.")).to_be_visible()
        dialog.get_by_label("Name").fill(unique("policy-too-long"))
        dialog.get_by_label("All MCP Servers").check()
        expires.fill(future_day(120))
        with page.expect_response(lambda r: r.request.method == "POST" and "/api-keys" in r.url) as refused:
            dialog.get_by_role("button", name="Create API Key").click()
        assert refused.value.status == 400, refused.value.text()
        expect(dialog.get_by_role("alert")).to_contain_text("beyond the key policy's maximum lifetime of 90 days")
        expect(dialog).to_be_visible()

        # Within the maximum, the key is made with the date picked.
        expires.fill(future_day(60))
        with page.expect_response(lambda r: r.request.method == "POST" and "/api-keys" in r.url) as created:
            dialog.get_by_role("button", name="Create API Key").click()
        assert created.value.status == 201, created.value.text()
        shown = page.get_by_role("dialog", name="API Key Created")
        expect(shown).to_be_visible()
        shown.get_by_role("button", name="Done").click()
    finally:
        admin("PUT", "/api/settings/key-policy", {})


def scenario_screenshots(browser: Browser) -> None:
    """The README's pictures: the key list, the create dialog and the
    shown-once dialog (and, for review, dark and 390 px variants)."""
    folder = Path(os.environ.get("KEYGATE_SCREENSHOTS") or OUT)
    folder.mkdir(parents=True, exist_ok=True)
    me = admin("GET", "/api/me")
    grant(me["id"], ["echo", "time"])
    # The pictures show these keys only (other scenarios share the stack).
    for key in admin("GET", "/api/api-keys")["items"]:
        admin("DELETE", f"/api/api-keys/{key['id']}")
    samples = [
        ("CI pipeline", "Nightly integration tests", ["echo"], 40),
        ("Laptop VS Code", "Ada's editor", ["*"], None),
        ("Monitoring script", "Checks the time server every minute", ["time"], 5),
        ("Old demo", "", ["echo", "time"], None),
    ]
    for name, description, servers, days in samples:
        body = {"userId": me["id"], "name": name, "description": description, "mcpServerIds": servers}
        if days:
            body["expiresAt"] = f"{future_day(days)}T23:59:59Z"
        created = admin("POST", "/api/admin-api-keys", body)
        if name == "CI pipeline":
            wait_edge_status(created["key"], 200)
            call_tool_with_sdk(created["key"])
    for scheme, width, height, suffix in (("light", 1280, 800, ""), ("dark", 1280, 800, "-dark"), ("light", 390, 844, "-390")):
        page = browser.page(scheme=scheme, width=width, height=height)
        sign_in_with_token(page)
        expect(page.locator("main[aria-busy]")).to_have_count(0)
        page.screenshot(path=str(folder / f"console-api-keys{suffix}.png"))
        dialog = open_create_dialog(page)
        dialog.get_by_label("Name").fill("Release bot")
        dialog.get_by_label("Description").fill("Publishes release notes")
        dialog.get_by_label("Expiration Date").fill(future_day(30))
        dialog.get_by_label("Selected MCP Servers").check()
        dialog.get_by_role("checkbox", name="echo", exact=True).check()
        page.screenshot(path=str(folder / f"console-create-key{suffix}.png"))
        dialog.get_by_role("button", name="Create API Key").click()
        shown = page.get_by_role("dialog", name="API Key Created")
        expect(shown).to_be_visible()
        page.screenshot(path=str(folder / f"console-key-created{suffix}.png"))
        shown.get_by_role("button", name="Done").click()
        admin_keys = admin("GET", "/api/api-keys")["items"]
        for key in admin_keys:
            if key["name"] == "Release bot":
                admin("DELETE", f"/api/api-keys/{key['id']}")
        if suffix == "":
            page.goto(BASE + "/admin/api-keys")
            expect(page.locator("main[aria-busy]")).to_have_count(0)
            page.screenshot(path=str(folder / "console-admin-api-keys.png"))
            page.goto(BASE + "/servers")
            expect(page.locator("main[aria-busy]")).to_have_count(0)
            page.screenshot(path=str(folder / "console-servers.png"))
        page.context.close()
    empty = browser.page()
    empty.goto(BASE + "/signin")
    empty.screenshot(path=str(folder / "console-signin.png"))
    log(f"screenshots in {folder}")


def open_row_menu(page: Page, name: str) -> None:
    page.get_by_role("button", name=f"Actions for API key {name}").click()


def rotate_through_menu(page: Page, name: str, overlap: str):
    """Row menu > Rotate, with "Keep the old key working for" = `overlap`;
    returns the shown-once dialog of the new key."""
    open_row_menu(page, name)
    page.get_by_role("menuitem", name="Rotate").click()
    dialog = page.get_by_role("dialog", name="Rotate API Key")
    expect(dialog).to_contain_text(name)
    dialog.get_by_label("Keep the old key working for").select_option(label=overlap)
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/rotate")) as rotated:
        dialog.get_by_role("button", name="Rotate API Key").click()
    response = rotated.value
    assert response.status == 200, f"rotate answered {response.status}: {response.text()}"
    assert "no-store" in response.headers.get("cache-control", ""), "the rotate answer must not be cached"
    expect(dialog).to_have_count(0)
    shown = page.get_by_role("dialog", name="API Key Rotated")
    expect(shown).to_be_visible()
    return shown


def scenario_disable_enable_and_rotate(browser: Browser) -> None:
    """The key lifecycle from the row menu: Disable (the Status column says
    Disabled and the edge refuses the key), Enable; Rotate keeping the old
    key for 1 hour (the new key is shown once, works through Envoy with the
    MCP SDK, the old one still works, the detail says when it stops);
    Rotate with None (both older keys refused). The admin's list has the
    same actions."""
    me = admin("GET", "/api/me")
    grant(me["id"], ["echo"])
    page = browser.page()
    sign_in_with_token(page)
    name = unique("rotating")
    shown = create_key_in_dialog(page, name, servers=("echo",), expires_in_days=10)
    old = read_shown_key(page, shown)
    shown.get_by_role("button", name="Done").click()
    expect(page.get_by_role("columnheader", name="Status")).to_be_visible()
    expect(cell(page, name, "Status")).to_have_text("Active")
    wait_edge_status(old, 200)

    # Disable, then Enable.
    open_row_menu(page, name)
    page.get_by_role("menuitem", name="Disable").click()
    confirm = page.get_by_role("alertdialog", name="Disable API Key")
    expect(confirm).to_contain_text(name)
    confirm.get_by_role("button", name="Disable").click()
    expect(confirm).to_have_count(0)
    expect(cell(page, name, "Status")).to_have_text("Disabled")
    wait_edge_status(old, 401)
    open_row_menu(page, name)
    expect(page.get_by_role("menuitem", name="Rotate")).to_have_count(0)
    page.get_by_role("menuitem", name="Enable").click()
    expect(cell(page, name, "Status")).to_have_text("Active")
    wait_edge_status(old, 200)

    # Rotate, keeping the old key for an hour.
    shown = rotate_through_menu(page, name, "1 hour")
    new = read_shown_key(page, shown)
    # ok1-<userId>-<keyId>-<secret>: the same user and key id, a new secret.
    assert new != old and new.split("-")[:3] == old.split("-")[:3], "the rotated key is not the same key"
    expect(shown).to_contain_text("The old key keeps working until")
    expect(shown.get_by_text(f"{BASE}/mcp-connect/echo/mcp").first).to_be_visible()
    shown.get_by_role("button", name="Done").click()
    expect(shown).to_have_count(0)
    assert_key_nowhere(page, new)
    wait_edge_status(new, 200)
    report = call_tool_with_sdk(new)
    assert report.get("echo") == "hello from python", report
    assert edge_status(old) == 200, "the old key stopped during its overlap"
    expect(cell(page, name, "Status")).to_contain_text("Old key active")
    page.get_by_role("button", name=name, exact=True).click()
    detail = page.get_by_role("dialog", name=name)
    expect(detail.get_by_text("Old key stops")).to_be_visible()
    expect(detail.get_by_text("Rotated", exact=True)).to_be_visible()
    expect(detail.locator("dt:text-is('Rotated') + dd time")).to_have_count(1)
    expect(detail.locator("dt:text-is('Old key stops') + dd time")).to_have_count(1)
    detail.get_by_role("button", name="Close").click()

    # Rotate again without overlap: only the newest key works.
    shown = rotate_through_menu(page, name, "None")
    newest = read_shown_key(page, shown)
    expect(shown).to_contain_text("The old key no longer works")
    page.keyboard.press("Escape")
    assert_key_nowhere(page, newest)
    wait_edge_status(newest, 200)
    wait_edge_status(new, 401)
    wait_edge_status(old, 401)
    expect(cell(page, name, "Status")).to_have_text("Active")

    # The admin's list offers the same actions.
    page.goto(BASE + "/admin/api-keys")
    open_row_menu(page, name)
    page.get_by_role("menuitem", name="Disable").click()
    page.get_by_role("alertdialog", name="Disable API Key").get_by_role("button", name="Disable").click()
    expect(cell(page, name, "Status")).to_have_text("Disabled")
    wait_edge_status(newest, 401)
    open_row_menu(page, name)
    page.get_by_role("menuitem", name="Enable").click()
    expect(cell(page, name, "Status")).to_have_text("Active")
    open_row_menu(page, name)
    expect(page.get_by_role("menuitem", name="Rotate")).to_be_visible()
    page.keyboard.press("Escape")
    wait_edge_status(newest, 200)
    delete_key_through_menu(page, name)


def scenario_sign_in_stays_on_this_site(browser: Browser) -> None:
    """`next` after a token sign-in never leaves the console's origin, even
    spelled with the tab or newline that URL parsing drops (`/\t/evil` would
    otherwise become `//evil`)."""
    for spelled in ("/%09/evil.example/x", "/%0A/evil.example", "/%0D/evil.example", "//evil.example", "/%5Cevil.example"):
        page = browser.page()
        page.goto(f"{BASE}/signin?next={spelled}")
        page.get_by_label("Admin token").fill(ADMIN_TOKEN)
        page.get_by_role("button", name="Sign in with admin token").click()
        expect(page.get_by_role("button", name=re.compile("^Profile menu for"))).to_be_visible()
        assert page.url.startswith(BASE + "/"), f"next={spelled} left the site: {page.url}"
        page.close()


SCENARIOS = {
    "sign_in_stays_on_this_site": scenario_sign_in_stays_on_this_site,
    "admin_key_lifecycle": scenario_admin_key_lifecycle,
    "oidc_user_key_lifecycle": scenario_oidc_user_key_lifecycle,
    "admin_manages_other_users_keys": scenario_admin_manages_other_users_keys,
    "csrf_and_sign_out": scenario_csrf_and_sign_out,
    "look_and_keyboard": scenario_look_and_keyboard,
    "admin_pages": scenario_admin_pages,
    "audit_log": scenario_audit_log,
    "key_policy": scenario_key_policy,
    "disable_enable_and_rotate": scenario_disable_enable_and_rotate,
    "screenshots": scenario_screenshots,
}


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        print(f"usage: console_browser.py {{{'|'.join(SCENARIOS)}}}")
        return 2
    name = sys.argv[1]
    assert BASE and ADMIN_TOKEN, "KEYGATE_CONSOLE_URL and KEYGATE_ADMIN_TOKEN must be set"
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = Browser(playwright)
        try:
            SCENARIOS[name](browser)
            assert not browser.external, f"the console asked for something outside this host: {browser.external}"
        except BaseException:
            traceback.print_exc()
            for at, page in enumerate(p for p in browser.pages if not p.is_closed()):
                shot = OUT / ("failure.png" if at == 0 else f"failure-{at}.png")
                try:
                    page.screenshot(path=str(shot), full_page=True)
                    print(f"FAIL {name}: screenshot of {page.url} in {shot}", flush=True)
                except Exception as error:  # noqa: BLE001 - the failure above matters more
                    print(f"(no screenshot: {error})", flush=True)
            return 1
        finally:
            browser.browser.close()
    print(f"PASS {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
