"""The dashboard in a real browser: headless Chromium from Debian's packages, driven by Playwright, opens TensorBoard
on a short run's logs and checks a trajectory with its gold answer, a filter that changes the list, one question
side by side before and after training, and the Text tab's link from a validation to its rollouts. Screenshots go
to ``SWIRL_SCREENSHOTS`` (a folder; default: the test's temporary folder).

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``make setup`` installs it when it can) and the
``playwright`` package (the plugin's ``test`` extra). Without them the test is skipped, except under CI, where it
fails: CI's set-up must have installed them."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from swirl_lightning.core.trajectory import read_trajectories

pytestmark = pytest.mark.integration  # starts processes or runs whole stages: not in make test-fast

CHROMIUM = os.environ.get("SWIRL_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


def _missing() -> str | None:
    if not shutil.which(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e 'plugins/swirl-tensorboard[test]')"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="swirl-chromium-")
    with sync_playwright() as playwright:
        # A fresh profile; Playwright starts and ends this Chromium process itself.
        context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS,
                                                                headless=True, viewport={"width": 1500, "height": 1000})
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("SWIRL_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def last_validation(logdir: Path, stage: str) -> tuple[str, Path]:
    (folder,) = [p for p in logdir.rglob("version_*") if p.parent.name == stage]
    return folder.relative_to(logdir).as_posix(), sorted((folder / "rollouts").glob("val-step*.jsonl"))[-1]


def test_the_dashboard_shows_filters_and_compares_trajectories(browser, tensorboard, logdir, screenshots):
    from playwright.sync_api import expect

    fit_run, fit_file = last_validation(logdir, "fit")
    validate_run, validate_file = last_validation(logdir, "validate")
    trajectories = read_trajectories(fit_file)
    page = browser.new_page()
    outside = []
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith((tensorboard, "data:", "blob:")) else None)
    page.goto(f"{tensorboard}/#trajectories")
    dashboard = page.frame_locator("iframe")

    # 1. A trajectory, step by step, with its gold answer: the run's latest validation, its first trajectory.
    expect(dashboard.locator("#run")).to_have_value(re.compile(".+"), timeout=60_000)
    dashboard.locator("#run").select_option(fit_run)
    rows = dashboard.locator("#list li")
    expect(rows).to_have_count(len(trajectories), timeout=30_000)
    rows.first.click()
    detail = dashboard.locator("#detail .trajectory")
    expect(detail.locator("h2")).to_have_text(f"{trajectories[0].example_id} #{trajectories[0].sample_index}")
    expect(detail.locator(".field.gold .value")).to_have_text(trajectories[0].gold_answer)
    expect(detail.locator(".field.question .value")).to_contain_text(trajectories[0].prompt[-1]["content"][:40])
    expect(detail.locator("li.step")).to_have_count(len(trajectories[0].steps))
    page.screenshot(path=str(screenshots / "trajectory.png"), full_page=True)

    # 2. A filter that changes the list: the outcome value that fewer trajectories have than all.
    results = Counter("correct" if t.outcome else "wrong" for t in trajectories)
    value = "correct" if results["correct"] < len(trajectories) else "wrong"
    dashboard.locator("select[name=result]").select_option(value)
    expect(dashboard.locator("#count")).to_have_text(f"showing {results[value]} of {len(trajectories)} trajectories")
    expect(rows).to_have_count(results[value])
    page.screenshot(path=str(screenshots / "filtered.png"), full_page=True)
    dashboard.locator("select[name=result]").select_option("")
    expect(rows).to_have_count(len(trajectories))

    # 3. The same question side by side: the validation before training against the one after it.
    other = f"{validate_run}\n{validate_file.parent.name}/{validate_file.name}"
    dashboard.locator("#other").select_option(other)
    expect(dashboard.locator("#count")).to_contain_text("questions on both sides")
    rows.first.click()
    sides = dashboard.locator(".sides .side")
    expect(sides).to_have_count(2)
    before, after = read_trajectories(validate_file)[0], trajectories[0]
    for side, trajectory in zip((sides.nth(0), sides.nth(1)), (before, after)):  # the earlier step on the left
        expect(side.locator("h2")).to_have_text(f"{trajectory.example_id} #{trajectory.sample_index}")
        expect(side.locator(".field.gold .value")).to_have_text(trajectory.gold_answer)
    expect(sides.nth(0).locator(".caption")).to_contain_text(f"{validate_run} · val at step 0")
    expect(sides.nth(1).locator(".caption")).to_contain_text(f"{fit_run} · val at step 2")
    expect(dashboard.locator(".pair-head .badge")).to_have_text(re.compile("gained|lost|changed|same"))
    page.screenshot(path=str(screenshots / "side-by-side.png"), full_page=True)

    # 4. From the Text tab's entry at the validation's step, the link opens the rollouts behind that scalar point.
    page.goto(f"{tensorboard}/#text")
    link = page.locator(f"a[href*='{fit_run}/rollouts/{fit_file.name}']")
    expect(link).to_have_count(1, timeout=60_000)
    page.goto(f"{tensorboard}/{link.get_attribute('href')}")
    expect(page.locator("#source")).to_have_value(f"{fit_run}\nrollouts/{fit_file.name}", timeout=30_000)
    expect(page.locator("#list li")).to_have_count(len(trajectories))
    assert not outside, f"the dashboard fetched from outside: {outside[:5]}"
