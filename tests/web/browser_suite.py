#!/usr/bin/env python3
"""The web page's browser checks: headless Chromium through Playwright.

Run by tests/web.rs against a real four-server cluster. Environment:
WEB_URL (server 1's HTTPS, self-signed), ALICE_PASSWORD, BOB_PASSWORD,
WORK (a folder for made and downloaded files), SHOTS (a folder for
screenshots). To stop dfs4 it writes $WORK/stop-server and waits for
$WORK/server-stopped. Prints one line per check and "N checks passed";
the first failed check ends it with a non-zero exit code.
"""

import os
import sys
import time
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright, expect

WEB_URL = os.environ["WEB_URL"].rstrip("/") + "/"
ORIGIN = "{0.scheme}://{0.netloc}".format(urlsplit(WEB_URL))
ALICE_PASSWORD = os.environ["ALICE_PASSWORD"]
BOB_PASSWORD = os.environ["BOB_PASSWORD"]
WORK = os.environ["WORK"]
SHOTS = os.environ["SHOTS"]

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
WRONG_LOGIN = "wrong user name or password"
BIG = "big-upload.bin"
RENAMED = "renamed.bin"
SMALL = "notes.txt"
DROPPED = "dropped.txt"

passed = 0


class CheckFailed(Exception):
    pass


def check(condition, what):
    """One check: a line when it holds, the end of the run when not."""
    global passed
    if not condition:
        raise CheckFailed(what)
    passed += 1
    print(f"ok {passed}: {what}", flush=True)


def watch(page, log):
    """Records every request's URL and every console error of a page."""
    page.on("request", lambda r: log["urls"].append(r.url))
    page.on("console", lambda m: m.type == "error" and log["errors"].append(m.text))
    page.on("pageerror", lambda e: log["errors"].append(f"uncaught: {e}"))


def new_page(browser, log):
    context = browser.new_context(ignore_https_errors=True, viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    watch(page, log)
    return context, page


def status_of(page, path, method="GET", headers=None, body=None):
    """The HTTP status of a fetch made from inside the page."""
    return page.evaluate(
        """async ([path, method, headers, body]) => {
            const r = await fetch(path, {method, headers, body, credentials: 'same-origin'});
            return r.status;
        }""",
        [path, method, headers or {}, body],
    )


def login(page, user, password):
    page.goto(WEB_URL)
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    page.click("#login-form button[type=submit]")


def row(page, path):
    return page.locator(f'#file-rows tr[data-path="{path}"]')


def open_folder(page, path):
    """Follows a folder's link in the list, as a user would."""
    row(page, path).locator("a.folder-link").click()
    expect(page.locator("#crumbs [aria-current=page]")).to_have_text(path.split("/")[-1])


def upload(page, path, name):
    page.set_input_files("#upload-input", path)
    item = page.locator(f'#uploads li[data-name="{name}"]')
    expect(item).to_have_attribute("data-state", "done", timeout=120_000)
    return item


def drop_file(page, name):
    """Drops a small file made in the page onto the file list."""
    page.evaluate(
        """(name) => {
            const data = new DataTransfer();
            data.items.add(new File(['dropped on the list\\n'], name, {type: 'text/plain'}));
            const zone = document.getElementById('drop');
            for (const type of ['dragenter', 'dragover', 'drop']) {
                zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
            }
        }""",
        name,
    )


def wait_for_file(path, seconds):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def run(browser):
    log = {"urls": [], "errors": []}
    alice_context, page = new_page(browser, log)

    # 1. A wrong password: one message, no session.
    login(page, "alice", "not-her-password")
    expect(page.locator("#login-error")).to_have_text(WRONG_LOGIN)
    shown = page.get_by_text(WRONG_LOGIN)
    visible = sum(1 for i in range(shown.count()) if shown.nth(i).is_visible())
    check(visible == 1, "a wrong password shows exactly one error message")
    check(status_of(page, "/web/session") == 401, "after a wrong password GET /web/session is 401")
    names = [c["name"] for c in alice_context.cookies()]
    check("ringdfs_session" not in names, "after a wrong password there is no session cookie")

    # 2. Alice logs in; the cookie is HttpOnly, Secure, SameSite=Strict.
    page.fill("#login-password", ALICE_PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#files-view")).to_be_visible()
    expect(page.locator("#user-name")).to_have_text("alice")
    check(page.locator("#login-error").is_hidden(), "alice logs in and sees her files")
    cookie = next((c for c in alice_context.cookies() if c["name"] == "ringdfs_session"), None)
    check(cookie is not None, "the session cookie ringdfs_session is set")
    check(cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict",
          f"the session cookie is HttpOnly, Secure and SameSite=Strict ({cookie})")

    # 3. Upload 20 MiB of random bytes through the file input.
    big_path = os.path.join(WORK, BIG)
    with open(big_path, "wb") as f:
        f.write(os.urandom(20 << 20))
    item = upload(page, big_path, BIG)
    bar = item.locator("progress")
    check(bar.get_attribute("value") == bar.get_attribute("max"), "the upload's progress bar completes")
    expect(row(page, BIG)).to_be_visible()
    expect(row(page, BIG).locator("td.col-size")).to_have_text("20 MiB")
    check(True, f"{BIG} is listed with its size, 20 MiB")

    # A second file and a folder, for the screenshots.
    small_path = os.path.join(WORK, SMALL)
    with open(small_path, "w") as f:
        f.write("a few words for the list\n")
    upload(page, small_path, SMALL)
    page.click("#mkdir")
    page.fill("#mkdir-name", "photos")
    page.click("#mkdir-dialog button[type=submit]")
    expect(row(page, "photos")).to_be_visible()
    check(row(page, SMALL).is_visible(), "a small file and a new folder are listed too")
    drop_file(page, DROPPED)
    expect(page.locator(f'#uploads li[data-name="{DROPPED}"]')).to_have_attribute("data-state", "done")
    expect(row(page, DROPPED)).to_be_visible()
    check(True, f"{DROPPED}, dropped on the file list, is uploaded and listed")

    # 4. Download it and compare bytes.
    with page.expect_download() as info:
        row(page, BIG).locator("a.download").click()
    download_path = os.path.join(WORK, "downloaded.bin")
    info.value.save_as(download_path)
    with open(big_path, "rb") as a, open(download_path, "rb") as b:
        check(a.read() == b.read(), "the downloaded file is byte for byte the uploaded one")

    # 9. Screenshots, before any server is stopped.
    take_screenshots(page)

    # 5. Rename through the dialog (which Escape closes).
    row(page, BIG).locator("button.rename").click()
    expect(page.locator("#rename-dialog")).to_be_visible()
    check(page.evaluate("document.activeElement.id") == "rename-to", "the rename dialog takes the focus")
    page.keyboard.press("Escape")
    expect(page.locator("#rename-dialog")).to_be_hidden()
    check(True, "Escape closes the dialog")
    row(page, BIG).locator("button.rename").click()
    check(page.input_value("#rename-to") == BIG, "the rename dialog's field holds the old name")
    page.fill("#rename-to", RENAMED)
    page.click("#rename-dialog button[type=submit]")
    expect(row(page, RENAMED)).to_be_visible()
    expect(row(page, BIG)).to_have_count(0)
    check(True, f"renamed: {RENAMED} is listed, {BIG} is gone")

    # 6. Share it with bob (read); bob sees it under shared/alice.
    row(page, RENAMED).locator("button.share").click()
    page.fill("#share-user", "bob")
    page.select_option("#share-access", "read")
    page.click("#share-dialog button[type=submit]")
    expect(page.locator("#status")).to_contain_text("shared")
    check(True, "alice shares it with bob through the dialog")
    bob_context, bob = new_page(browser, log)
    login(bob, "bob", BOB_PASSWORD)
    expect(bob.locator("#user-name")).to_have_text("bob")
    open_folder(bob, "shared")
    open_folder(bob, "shared/alice")
    expect(row(bob, f"shared/alice/{RENAMED}")).to_be_visible()
    check(True, f"bob, in his own context, sees shared/alice/{RENAMED}")

    # 11. Bob cannot reach alice's files by editing URLs.
    code = status_of(bob, f"/files/{RENAMED}")
    check(code == 404, f"bob's GET /files/{RENAMED} is 404 (got {code})")
    code = status_of(bob, f"/files/shared/alice/{SMALL}")
    check(code in (403, 404), f"bob's GET of alice's unshared {SMALL} is refused (got {code})")
    bob_context.close()

    # 7. Alice deletes it through the confirmation dialog.
    row(page, RENAMED).locator("button.delete").click()
    expect(page.locator("#delete-question")).to_contain_text(RENAMED)
    page.click("#delete-dialog button[type=submit]")
    expect(row(page, RENAMED)).to_have_count(0)
    check(True, f"deleted: {RENAMED} is gone from the list")

    # 10. CSRF: a change without the header is refused, with it allowed.
    code = status_of(page, "/files/x.txt", "PUT", body="x")
    check(code == 403, f"a PUT from the page without X-CSRF-Token is 403 (got {code})")
    csrf = page.evaluate("fetch('/web/session').then(r => r.json()).then(s => s.csrf)")
    code = status_of(page, "/files/x.txt", "PUT", {"X-CSRF-Token": csrf}, "x")
    check(code == 201, f"the same PUT with X-CSRF-Token is 201 (got {code})")

    # 8. The ring: four servers up, then dfs4 stopped shows "down".
    page.goto(WEB_URL + "#/ring")
    servers = page.locator("#ring-svg g.server")
    expect(servers).to_have_count(4)
    expect(page.locator('#ring-svg g.server[data-state="up"]')).to_have_count(4)
    check(True, "the ring view shows 4 servers up")
    with open(os.path.join(WORK, "stop-server"), "w") as f:
        f.write("4")
    check(wait_for_file(os.path.join(WORK, "server-stopped"), 60), "dfs4 was stopped")
    dfs4 = page.locator('#ring-svg g.server[data-name="dfs4"]')
    expect(dfs4).to_have_attribute("data-state", "down", timeout=30_000)
    expect(dfs4.locator(".state-label")).to_contain_text("down")
    check(True, "within 30 s dfs4's dot is labelled down")

    # No request left the page's origin; nothing went wrong in its console.
    strays = [u for u in log["urls"] if not u.startswith(ORIGIN + "/") and not u.startswith("data:")]
    check(log["urls"] and not strays,
          f"every one of {len(log['urls'])} requests went to {ORIGIN} (strays: {strays[:5]})")
    errors = [e for e in log["errors"] if not expected_error(e)]
    check(not errors, f"no console errors (got: {errors[:5]})")
    alice_context.close()


def expected_error(text):
    """Chromium logs every 4xx answer; the checks above ask for some."""
    return text.startswith("Failed to load resource: the server responded with a status of 4")


def take_screenshots(page):
    """Files and ring, desktop and phone; at 375 px nothing scrolls sideways."""
    os.makedirs(SHOTS, exist_ok=True)
    for size, suffix in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page.set_viewport_size(size)
        page.goto(WEB_URL + "#/files/")
        expect(row(page, BIG)).to_be_visible()
        shoot(page, f"files-{suffix}.png", size)
        row(page, BIG).locator("button.where").click()
        expect(page.locator("#ring-svg g.chunk").first).to_be_visible()
        expect(page.locator("#where-info h2")).to_contain_text(BIG)
        shoot(page, f"ring-{suffix}.png", size)
    page.set_viewport_size(DESKTOP)
    page.goto(WEB_URL + "#/files/")
    expect(row(page, BIG)).to_be_visible()


def shoot(page, name, size):
    page.screenshot(path=os.path.join(SHOTS, name), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    check(width <= size["width"], f"{name}: saved, the page is {width} px wide (at most {size['width']})")


def main():
    os.makedirs(WORK, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            run(browser)
        except CheckFailed as e:
            print(f"FAILED check {passed + 1}: {e}", flush=True)
            return 1
        except Exception as e:  # a timeout of an expect, a missing element…
            print(f"FAILED after {passed} checks: {type(e).__name__}: {e}", flush=True)
            return 1
        finally:
            browser.close()
    print(f"{passed} checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
