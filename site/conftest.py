"""pytest options for site/test_site.py: where the built site is (site/build.py's --out)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--site", default=str(ROOT / "outputs" / "site"),
                     help="site/build.py's --out folder: html/, book/ and notebooks/ (default outputs/site)")
    parser.addoption("--chromium", default="/usr/bin/chromium", help="the browser (Debian's chromium)")
    parser.addoption("--chromedriver", default="/usr/bin/chromedriver", help="its driver (Debian's chromium-driver)")
