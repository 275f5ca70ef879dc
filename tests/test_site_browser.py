"""The site in a real browser: Debian's chromium driven by selenium through Debian's
chromedriver, offline (``file://``). Every page loads without a console error and without a
broken local link; a numeric header sorts the rows both ways; a filter reduces the index; the
numbers on a run page are its record's.

Without chromium, chromedriver or selenium these tests skip and say why; under ``CI=true``
(where ``.ci/run`` installs them) a missing piece is a failure instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from site_helpers import site_inputs

from ardbench.results.leaderboard import collect_records
from ardbench.site import build_site

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"


def _missing() -> str:
    if not Path(CHROMIUM).is_file():
        return f"no {CHROMIUM} (apt-get install chromium chromium-driver fonts-liberation)"
    if not Path(DRIVER).is_file():
        return f"no {DRIVER} (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[test])"
    return ""


@pytest.fixture(scope="module")
def driver():
    reason = _missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager look for a driver online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(DRIVER), options=options)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, Path]:
    """(records folder, site folder): the committed records, two tiny real runs with logs,
    a record whose text is markup."""
    root = tmp_path_factory.mktemp("site-browser")
    runs = site_inputs(root)
    build_site(runs, root / "site")
    return runs, root / "site"


def _open(driver, path: Path) -> list[dict]:
    """Load a page; its console messages of level SEVERE (errors)."""
    driver.get(path.as_uri())
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


LINKS_JS = """
return Array.from(document.querySelectorAll('a[href], img[src], link[href], script[src]'))
  .map(e => e.href || e.src);
"""


def test_every_page_loads_without_errors_or_broken_links(driver, site):
    _, out = site
    pages = sorted(out.rglob("*.html"))
    assert len(pages) > 60
    broken = []
    for page in pages:
        errors = _open(driver, page)
        assert not errors, f"{page.relative_to(out)}: {errors}"
        assert driver.execute_script("return document.querySelector('main h1') !== null")
        for url in driver.execute_script(LINKS_JS):
            parsed = urlparse(url)
            if parsed.scheme == "file":
                target = Path(unquote(parsed.path))
                if not target.is_file():
                    broken.append(f"{page.relative_to(out)} -> {url}")
            else:  # the only other links are to papers and code (https), never data: or js:
                assert parsed.scheme in ("https", "http", "data"), url
        images = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
            ".map(i => i.src)"
        )
        assert not images, f"{page.relative_to(out)}: broken images {images}"
    assert not broken, broken[:10]


def _column(driver, table_id: str, index: int) -> list[str]:
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('#{table_id} tbody tr'))"
        f".map(r => r.children[{index}].getAttribute('data-v'));"
    )


def test_clicking_a_numeric_header_sorts_both_ways(driver, site):
    _, out = site
    page = next((out / "tables").glob("cifar10-exact-linf2-flip--*.html"))
    assert not _open(driver, page)
    headers = driver.find_elements("css selector", "#board thead th")
    titles = [h.text.replace("↕", "").strip() for h in headers]
    for title in ("Clean", "CW∞"):
        i = titles.index(title)
        header = headers[i]
        before = [float(v) for v in _column(driver, "board", i)]
        header.click()
        assert header.get_attribute("aria-sort") == "descending"
        down = [float(v) for v in _column(driver, "board", i)]
        assert down == sorted(before, reverse=True) and down != before
        header.click()
        assert header.get_attribute("aria-sort") == "ascending"
        assert [float(v) for v in _column(driver, "board", i)] == sorted(before)
    # a column with empty cells (not evaluated): the values sort, the dashes stay last
    i = titles.index("AA (paper)")
    headers[i].click()
    values = _column(driver, "board", i)
    filled = [v for v in values if v]
    assert values[: len(filled)] == filled and not any(values[len(filled) :])


def test_a_filter_reduces_the_index(driver, site):
    _, out = site
    assert not _open(driver, out / "index.html")
    rows = driver.find_elements("css selector", "#tables tbody tr")
    visible = [r for r in rows if r.is_displayed()]
    assert len(visible) == len(rows) >= 5
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "filter-method")).select_by_value("igdm")
    shown = [r for r in rows if r.is_displayed()]
    assert 0 < len(shown) < len(rows)
    assert all("igdm" in r.get_attribute("data-method").split("|") for r in shown)
    assert (
        driver.find_element("id", "filter-count").text
        == f"{len(shown)} of {len(rows)} tables shown"
    )
    Select(driver.find_element("id", "filter-teacher")).select_by_value("small_cnn-teacher")
    assert not any(r.is_displayed() for r in rows)  # no table has both
    driver.find_element("id", "filter-reset").click()
    assert all(r.is_displayed() for r in rows)


def test_run_page_numbers_equal_the_record(driver, site):
    runs, out = site
    records = collect_records(runs)  # as the site reads them: later evaluations merged
    assert len(records) > 40
    for record in records:
        assert not _open(driver, out / "runs" / f"{record['run_id']}.html")
        first = driver.find_elements("css selector", "#results tbody tr")[0]
        shown = {
            td.get_attribute("data-col"): td.text
            for td in first.find_elements("css selector", "td[data-col]")
        }
        for col in ("clean", "fgsm", "pgd20", "cw", "aa"):
            acc = record["eval"]["accuracy"].get(col)
            assert shown[col] == (f"{100 * acc:.2f}" if acc is not None else "—"), col
        assert driver.find_element("id", "seed").text == str(record["seed"])
        assert driver.find_element("id", "wall-time").text == f"{record['wall_time_s']:.1f}"
