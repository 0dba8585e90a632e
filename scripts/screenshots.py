"""Remake the dashboard screenshots in docs/screenshots/.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Runs ``aicli serve`` as a subprocess with the real Claude CLI pointed at the fake
Anthropic API (as the browser tests do), makes a few sessions and tasks through the
Python client, then drives the dashboard with Playwright and headless Chromium (Debian's
``chromium``) and writes one PNG per view: desktop at 1280x800, phone at 390x844.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aicli.actors.claude_bin import find_claude  # noqa: E402
from aicli.client import Client  # noqa: E402
from aicli.contract import Approval  # noqa: E402
from aicli.testing.fake_anthropic import FakeAnthropic  # noqa: E402
from aicli.testing.waiting import wait_for  # noqa: E402
from tests.serve_process import ServeProcess  # noqa: E402

TOKEN = "aicli_screenshots-0123456789abcdef0123456789abcdef"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WRITE = '[[tool: Write {{"file_path": "{name}", "content": "hello"}}]]'


def make_data(client: Client, root: Path) -> dict[str, str]:
    """A few sessions in different states; returns the ids the screenshots show."""
    project = root / "demo-project"
    project.mkdir()
    for name in ("docs-site", "old-experiment"):
        (root / name).mkdir()
    old = client.open_session(workdir=str(root / "old-experiment"))
    client.submit(old.id, "[[say: Done.]]", wait=30)
    client.close_session(old.id)
    docs = client.open_session(workdir=str(root / "docs-site"))
    client.submit(docs.id, "[[error: 500]]", wait=30)

    main = client.open_session(workdir=str(project), approvals="ask", metadata={"team": "demo"})
    client.submit(main.id, "[[say: The project has 3 modules and 42 tests.]]", wait=30)
    wrote = client.submit(main.id, WRITE.format(name="NOTES.md"))
    client.decide(pending_approval(client, wrote.id).id, "allow")
    client.wait(wrote.id, 30)
    slow = client.submit(main.id, "[[slow: 60]] Refactor the parser.")
    wait_for(lambda: client.get_task(slow.id).status == "running", 30, "the slow task to run")
    client.cancel(slow.id)
    pending = client.submit(main.id, WRITE.format(name="CHANGELOG.md"))
    pending_approval(client, pending.id)
    return {"session": main.id, "task": wrote.id, "pending": pending.id}


def pending_approval(client: Client, task_id: str) -> Approval:
    return wait_for(
        lambda: next(iter(client.approvals(task_id=task_id, status=["pending"]).data), None),
        30,
        f"an approval for task {task_id}",
        interval=0.1,
    )


def shoot(url: str, ids: dict[str, str], out: Path) -> list[Path]:
    written: list[Path] = []

    def save(page, name: str) -> None:
        page.wait_for_timeout(300)  # let the last paint settle (a screenshot, not a test)
        path = out / f"{name}.png"
        page.screenshot(path=str(path))
        written.append(path)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True
        )
        desktop = browser.new_context(viewport=DESKTOP, color_scheme="light")
        page = desktop.new_page()
        page.goto(f"{url}/ui")
        expect(page.locator("#signin-form")).to_be_visible()
        save(page, "sign-in")

        page.locator("#token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("tr.session-row")).to_have_count(3)
        save(page, "sessions")

        page.goto(f"{url}/ui#/sessions/{ids['session']}")
        expect(page.locator("tr.task-row")).to_have_count(4)
        save(page, "session")

        page.goto(f"{url}/ui#/tasks/{ids['task']}")
        expect(page.locator("#stream-state")).to_contain_text("ended")
        save(page, "task")

        page.goto(f"{url}/ui#/approvals")
        expect(page.locator("article.approval")).to_have_count(1)
        save(page, "approvals")

        phone = browser.new_context(viewport=PHONE, color_scheme="light", is_mobile=True)
        small = phone.new_page()
        small.goto(f"{url}/ui")
        small.locator("#token").fill(TOKEN)
        small.get_by_role("button", name="Sign in").click()
        expect(small.locator("tr.session-row")).to_have_count(3)
        save(small, "phone-sessions")
        small.goto(f"{url}/ui#/tasks/{ids['task']}")
        expect(small.locator("#stream-state")).to_contain_text("ended")
        save(small, "phone-task")
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="aicli-demo-"))
    with FakeAnthropic() as fake:
        home = root / "home"
        home.mkdir()
        env = {
            **fake.env(),
            "HOME": str(home),
            "PATH": os.environ["PATH"],
            "AICLI_CLAUDE_BIN": find_claude(),
            "AICLI_API_TOKEN": TOKEN,
        }
        server = ServeProcess(f"sqlite:///{root}/aicli.db", env, root / "serve.log")
        try:
            with Client(server.url, token=TOKEN) as client:
                ids = make_data(client, root)
            for path in shoot(server.url, ids, out):
                shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                print(f"{shown}: {path.stat().st_size // 1024} KB")
        finally:
            server.stop()
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
