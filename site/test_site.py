"""The course site in a real headless browser (Debian's chromium, through selenium and the system chromedriver).

    python -m pytest -q -p no:cacheprovider site/test_site.py --site outputs/site     (make site-test)

For the intro page and every notebook page: the page loads (HTTP 200 for it and everything it asks for) and
logs no console error, with every host but 127.0.0.1 unreachable (the site must work offline); it shows at
least as many images as its notebook has image/png outputs, all loaded; every formula is typeset by MathJax
(mjx-container, no MathJax error, no raw $$ or \\( left in the prose); the exercise solutions are collapsed;
plotly figures are drawn and answer a mouse drag. A full-page screenshot of each page goes to <site>/shots/NN.png
(intro: 00.png; pages taller than 16,000 px are scaled down to that height).
"""
from __future__ import annotations

import base64
import functools
import http.server
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--enable-unsafe-swiftshader",  # WebGL (plotly's 3D meshes) on the CPU, without a GPU
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no CDN: anything fetched from outside fails
    "--window-size=1280,1000",
]
MAX_SHOT_HEIGHT = 16000  # px: Chromium captures at most 16384 px in one go
WAIT_S = 60


@dataclass(frozen=True)
class Page:
    number: str  # "00" for the intro, else the notebook's "NN"
    html: str  # path in html/
    notebook: Path | None  # the book's notebook (as prepared by build.py), None for the intro


def site_pages(site: Path) -> list[Page]:
    toc_path = site / "book" / "_toc.yml"
    if not toc_path.is_file():
        return []
    toc = yaml.safe_load(toc_path.read_text())
    pages = [Page("00", f"{toc['root']}.html", None)]
    for chapter in toc.get("chapters", []):
        stem = chapter["file"]
        pages.append(Page(stem[:2], f"{stem}.html", site / "book" / f"{stem}.ipynb"))
    return pages


def pytest_generate_tests(metafunc):
    if "page" in metafunc.fixturenames:
        pages = site_pages(Path(metafunc.config.getoption("--site")))
        metafunc.parametrize("page", pages, ids=[p.html for p in pages])


# ---------------------------------------------------------------------------------------------- what a page must show

def shown_cells(notebook: Path):
    for cell in nbformat.read(notebook, as_version=4).cells:
        tags = set(cell.metadata.get("tags", []))
        if not tags & {"remove-cell", "remove_cell"}:
            yield cell, tags


def expected(page: Page) -> SimpleNamespace:
    """What the page's notebook holds: image/png outputs, plotly figures, solution cells, maths in markdown."""
    images = plotly = solutions = 0
    maths = False
    if page.notebook is not None:
        for cell, tags in shown_cells(page.notebook):
            if cell.cell_type == "markdown":
                maths = maths or "$" in cell.source or "\\begin{" in cell.source
                continue
            if cell.cell_type != "code":
                continue
            solutions += bool(cell.metadata.get("nbgrader", {}).get("solution"))
            if tags & {"remove-output", "remove_output"}:
                continue
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                images += "image/png" in data
                html = data.get("text/html", "")
                plotly += "plotly-graph-div" in ("".join(html) if isinstance(html, list) else html)
    return SimpleNamespace(images=images, plotly=plotly, solutions=solutions, maths=maths)


# What the browser sees, once everything has settled.
FACTS_JS = r"""
const article = document.querySelector('article') || document.querySelector('main') || document.body;
const visible = e => e.checkVisibility ? e.checkVisibility() : e.offsetParent !== null;
const images = [...article.querySelectorAll('img')];
const outputImages = [...article.querySelectorAll('.cell_output img')];
const maths = [...article.querySelectorAll('.math')];
// the prose as a reader sees it: no code, no outputs, no typeset formulas
const prose = article.cloneNode(true);
prose.querySelectorAll('div.cell, pre, code, script, style, mjx-container, .math').forEach(e => e.remove());
const text = prose.textContent.replace(/\s+/g, ' ');
const rawTex = [];
for (const pattern of [/\$\$/g, /\\\(/g, /\\\[/g, /\\begin\{/g, /\$[^$\n]{1,120}\$/g]) {
  for (const m of text.matchAll(pattern)) rawTex.push(text.slice(Math.max(0, m.index - 30), m.index + 50));
}
return {
  title: document.title,
  h1: !!article.querySelector('h1'),
  images: images.length,
  imagesShown: images.filter(i => i.complete && i.naturalWidth > 0 && visible(i)).length,
  outputImagesShown: outputImages.filter(i => i.complete && i.naturalWidth > 0 && visible(i)).length,
  brokenImages: images.filter(i => i.complete && i.naturalWidth === 0).map(i => i.getAttribute('src')),
  maths: maths.length,
  mathsTypeset: maths.filter(m => m.querySelector('mjx-container')).length,
  mjxContainers: article.querySelectorAll('mjx-container').length,
  mathErrors: [...article.querySelectorAll('mjx-merror, [data-mjx-error]')].map(
    e => e.getAttribute('data-mjx-error') || e.textContent),
  rawTex: rawTex,
  solutions: [...article.querySelectorAll('.cell.tag_solution')].map(cell => {
    const details = cell.querySelector('details');
    const input = cell.querySelector('.cell_input');
    const summary = details && details.querySelector('summary');
    return {details: !!details, open: !!(details && details.open), inputShown: !!(input && visible(input)),
            summary: summary ? summary.innerText.trim() : ''};
  }),
  plotly: [...article.querySelectorAll('.plotly-graph-div')].map(div => ({
    drawn: div.classList.contains('js-plotly-plot') && !!div.querySelector('.main-svg'),
    noWebGL: div.textContent.includes('WebGL is not supported'),
    canvases: div.querySelectorAll('canvas').length,
    height: div.getBoundingClientRect().height,
  })),
  links: [...article.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
};
"""

SETTLED_JS = r"""
const images = [...document.images].every(i => i.complete);
const plots = [...document.querySelectorAll('.plotly-graph-div')].every(
  d => d.classList.contains('js-plotly-plot') || d.textContent.includes('WebGL'));
return images && plots;
"""

MATHJAX_JS = r"""
const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(() => done('typeset'), e => done('MathJax failed: ' + e));
} else { done(window.MathJax ? 'MathJax not started' : 'no MathJax'); }
"""


# ---------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def site(request) -> Path:
    site = Path(request.config.getoption("--site"))
    if not (site / "html" / "index.html").is_file():
        pytest.fail(f"no site in {site}/html: build it first (make site, or python site/build.py --out {site})")
    return site


@pytest.fixture(scope="session")
def server(site):
    """The site on http://127.0.0.1:<free port>/, recording every request's status."""
    statuses: list[tuple[str, int]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code="-", size="-"):
            statuses.append((self.path, int(code)))

        def log_message(self, format, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site / "html")))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}/", statuses=statuses)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser(request, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = request.config.getoption("--chromium"), request.config.getoption("--chromedriver")
    for path in (chromium, chromedriver):
        if not Path(path).is_file():
            pytest.fail(f"{path} is missing: apt-get install chromium chromium-driver (Debian's packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def shots(site) -> Path:
    folder = site / "shots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def full_page_screenshot(driver, path: Path) -> None:
    """The whole page, scaled down to MAX_SHOT_HEIGHT pixels when it is taller: the window is made as tall as the
    page for the capture (Page.captureScreenshot's own beyond-the-viewport clip shifts some pages sideways)."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    width = metrics["cssLayoutViewport"]["clientWidth"]
    height = int((metrics.get("cssContentSize") or metrics["contentSize"])["height"])
    try:
        for _ in range(2):  # a taller window can lay the page out a little taller: measure once more
            scale = min(1.0, MAX_SHOT_HEIGHT / height)
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": scale, "mobile": False})
            time.sleep(0.5)
            laid_out = driver.execute_script("return document.documentElement.scrollHeight")
            if laid_out <= height:
                break
            height = laid_out
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.write_bytes(base64.b64decode(shot["data"]))


def drag_each_plot(driver) -> list:
    """Drag the mouse across every plotly figure (rotates a 3D scene, zooms a 2D plot): did plotly answer with a
    plotly_relayout event? That is, is the figure live, not a picture."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    answered = []
    for plot in driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); window.__relayout = null;"
                              "arguments[0].on('plotly_relayout', e => { window.__relayout = e; });", plot)
        ActionChains(driver).move_to_element(plot).click_and_hold().move_by_offset(60, 25).move_by_offset(40, 10) \
            .release().perform()
        time.sleep(0.5)
        answered.append(driver.execute_script("return window.__relayout !== null"))
    return answered


def open_page(driver, server, page: Page) -> tuple[dict, list[dict], list[tuple[str, int]], str]:
    """Load ``page``, wait for MathJax, images and plots; returns (facts, console entries, failed requests, MathJax)."""
    driver.get_log("browser")  # drop what earlier pages logged
    first_request = len(server.statuses)
    driver.get(server.url + page.html)
    deadline = time.monotonic() + WAIT_S
    while driver.execute_script("return document.readyState") != "complete" and time.monotonic() < deadline:
        time.sleep(0.2)
    mathjax = driver.execute_async_script(MATHJAX_JS)
    while not driver.execute_script(SETTLED_JS) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # plotly's and MathJax's last layout passes
    facts = driver.execute_script(FACTS_JS)
    console = driver.get_log("browser")
    failed = [(path, code) for path, code in server.statuses[first_request:] if code >= 400]
    return facts, console, failed, mathjax


# ---------------------------------------------------------------------------------------------------- tests

def test_every_course_notebook_is_a_page(site):
    pages = site_pages(site)
    assert pages, f"no {site}/book/_toc.yml: build the site first"
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [Path(p.html).stem for p in pages[1:]] == notebooks
    for page in pages:
        assert (site / "html" / page.html).is_file(), f"{page.html} was not built"


def test_page(page: Page, browser, server, shots):
    facts, console, failed, mathjax = open_page(browser, server, page)
    full_page_screenshot(browser, shots / f"{page.number}.png")
    interactive = drag_each_plot(browser)
    want = expected(page)
    problems = []  # every one of them, so that one run tells all that is wrong with a page

    def check(ok, problem: str) -> None:
        if not ok:
            problems.append(problem)

    # it loads, with everything it asks for, and the console stays clean
    check(facts["h1"] and facts["title"], "no title")
    check(not failed, f"requests failed: {failed}")
    errors = [entry["message"] for entry in console if entry["level"] == "SEVERE"]
    check(not errors, f"console errors: {errors}")

    # the figures
    check(not facts["brokenImages"], f"images that did not load: {facts['brokenImages']}")
    check(facts["outputImagesShown"] >= want.images,
          f"{facts['outputImagesShown']} output images shown, its notebook has {want.images} image/png outputs")

    # the maths
    if want.maths:
        check(mathjax == "typeset", f"MathJax: {mathjax}")
        check(facts["maths"] > 0, "its notebook has maths but the page has no math element")
    check(facts["mathsTypeset"] == facts["maths"] and facts["mjxContainers"] >= facts["maths"],
          f"{facts['maths'] - facts['mathsTypeset']} of {facts['maths']} formulas not typeset (MathJax: {mathjax})")
    check(not facts["mathErrors"], f"MathJax errors: {facts['mathErrors']}")
    check(not facts["rawTex"], f"raw TeX in the prose: {facts['rawTex']}")

    # the solutions, collapsed
    check(len(facts["solutions"]) == want.solutions,
          f"{len(facts['solutions'])} solution cells on the page, {want.solutions} in the notebook")
    for number, solution in enumerate(facts["solutions"], 1):
        check(solution["details"] and not solution["open"] and not solution["inputShown"]
              and solution["summary"] == "Show solution", f"solution {number} is not collapsed: {solution}")

    # the plotly figures, drawn (and interactive: plotly.js runs in the page)
    check(len(facts["plotly"]) >= want.plotly, f"{len(facts['plotly'])} plotly figures, expected {want.plotly}")
    for number, plot in enumerate(facts["plotly"], 1):
        check(plot["drawn"] and not plot["noWebGL"] and plot["height"] > 100,
              f"plotly figure {number} not drawn: {plot}")
    check(all(interactive), f"plotly figures that did not answer a mouse drag: {interactive}")

    if page.notebook is None:  # the intro links every notebook page
        for other in site_pages(shots.parent)[1:]:
            check(other.html in facts["links"], f"no link to {other.html}")

    assert not problems, f"{page.html} (screenshot {shots / (page.number + '.png')}):\n  " + "\n  ".join(problems)
