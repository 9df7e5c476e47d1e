#!/usr/bin/env python3
"""Build the course site: execute the notebooks, turn them into a Jupyter Book, build its HTML.

    python site/build.py --out outputs/site                    # execute all 8 notebooks with their defaults
    python site/build.py --out outputs/site --smoke            # CI=true: every notebook's quick CI version
    python site/build.py --out outputs/site --executed outputs # reuse `make demo`'s executed notebooks

Writes, under --out:
    notebooks/  the executed notebooks (papermill, kernel python3, cwd notebooks/)
    book/       the Jupyter Book source: intro.md, _config.yml, _toc.yml, the notebooks prepared for the site
    html/       the site (open html/index.html; everything is local, it works offline)
    quick/, demo/  what notebooks 06 and 08 write (06's checkpoint, which 07 and 08 use), as in `make demo`

Preparing a notebook for the site: exercise solution cells (metadata.nbgrader.solution) are collapsed
behind a "Show solution" toggle (myst-nb's `hide-input` tag), papermill's injected-parameters cell is
removed, plotly figures get an HTML view that uses a local plotly.js, and widget outputs (they need a
live kernel) are dropped. MathJax is served from the site itself (the sphinx-mathjax-offline package).
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
SOLUTION_TAGS = ("hide-input", "solution")  # hide-input: collapsed by myst-nb; solution: the class tag_solution
SOLUTION_PROMPTS = {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}
PLOTLY_JS = "plotly.min.js"  # in the site's root (html_extra_path), beside every page: loaded by pages that need it
DROPPED_EXTENSIONS = ["sphinx_thebe"]  # live code needs Binder, and it declares THEBE_JS_URL twice (console error)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "site",
                        help="output folder (default %(default)s)")
    parser.add_argument("--smoke", action="store_true", help="execute with CI=true: each notebook's quick CI version")
    parser.add_argument("--executed", type=Path, default=None, metavar="DIR",
                        help="reuse executed notebooks from DIR (same file names, e.g. make demo's outputs/); "
                             "only the missing ones are executed")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks",
                        help="source notebooks (default %(default)s)")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help="the intro page's source")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------- execution

def why_not_reusable(path: Path) -> str | None:
    """None when ``path`` is an executed notebook the site can show as it is; otherwise the reason."""
    if not path.is_file():
        return "missing"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if code and not any(c.get("execution_count") or c.get("outputs") for c in code):
        return "not executed"
    outputs = [o for c in code for o in c.get("outputs", [])]
    if any(o.get("output_type") == "error" for o in outputs):
        return "it stopped on an error"
    if any(WIDGET_MIME in o.get("data", {}) for o in outputs):
        return "it holds widgets, which need a live kernel (re-executed with interactive=False)"
    return None


def parameters_for(path: Path, out: Path, checkpoint: Path | None) -> dict:
    """papermill parameters: those `make demo` passes (06 trains into out/quick, 07 and 08 use its checkpoint,
    08 writes into out/demo), and interactive=False (a site has no kernel to drive widgets); each only where the
    notebook's parameters cell declares it."""
    import papermill

    declared = papermill.inspect_notebook(str(path))
    wanted: dict = {"interactive": False}
    if path.name.startswith("06_"):
        wanted["out_dir"] = str(out / "quick")
    if path.name.startswith(("07_", "08_")) and checkpoint is not None:
        wanted["checkpoint"] = str(checkpoint)
    if path.name.startswith("08_"):
        wanted["out_dir"] = str(out / "demo")
    return {name: value for name, value in wanted.items() if name in declared}


def execute(sources: list[Path], out: Path, executed_dir: Path | None) -> tuple[list[Path], list[str], float]:
    """Executed copies of ``sources`` in out/notebooks (reused from ``executed_dir`` where possible)."""
    import papermill

    target = out / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    # papermill starts the kernel "python3": the one of this interpreter (jupyter_client swaps in sys.executable)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.pop("MPLBACKEND", None)  # Agg in the kernel would leave the executed notebooks without figures
    results, executed_names, seconds = [], [], 0.0
    # 07 and 08 evaluate the checkpoint of the 06 the site shows: trained here (out/quick), or make demo's
    # (DIR/quick) when 06 is reused; else their own default (../outputs/quick; a short fallback run when that is
    # missing too). In CI mode 06 trains into a temporary folder: no out/quick.
    checkpoints = [] if executed_dir is None else [executed_dir / "quick" / "checkpoint.pt"]
    for source in sources:
        destination = target / source.name
        reason = "no --executed folder"
        if executed_dir is not None:
            candidate = executed_dir / source.name
            reason = why_not_reusable(candidate)
            if reason is None:
                if candidate.resolve() != destination.resolve():
                    shutil.copyfile(candidate, destination)
                print(f"  {source.name}: reused {candidate}", flush=True)
                if source.name.startswith("06_"):
                    checkpoints = [executed_dir / "quick" / "checkpoint.pt"]
                results.append(destination)
                continue
        if source.name.startswith("06_"):  # a fresh training run, not a resumed one
            shutil.rmtree(out / "quick", ignore_errors=True)
            checkpoints = [out / "quick" / "checkpoint.pt"]
        if source.name.startswith("08_"):
            shutil.rmtree(out / "demo", ignore_errors=True)
        checkpoint = next((path.resolve() for path in checkpoints if path.is_file()), None)
        parameters = parameters_for(source, out.resolve(), checkpoint)
        print(f"  {source.name}: executing ({reason}){' with ' + str(parameters) if parameters else ''}", flush=True)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(source), str(destination), parameters=parameters, kernel_name="python3",
                                       cwd=str(source.parent), progress_bar=False)
        except papermill.PapermillExecutionError as error:
            sys.exit(f"{source.name} failed (see {destination}): {error.ename}: {error.evalue}")
        took = time.perf_counter() - start
        seconds += took
        executed_names.append(source.name)
        print(f"  {source.name}: executed in {took:.0f} s", flush=True)
        results.append(destination)
    return results, executed_names, seconds


# ---------------------------------------------------------------------------------------------------- the book

def plotly_html(figure: dict, load_plotly_js: bool) -> str:
    """A figure's HTML view without require.js: a div and a Plotly.newPlot call (plotly.js from the site)."""
    import plotly.io as pio

    figure = dict(figure)
    config = figure.pop("config", None) or {}
    html = pio.to_html(figure, include_plotlyjs=False, full_html=False, validate=False, default_height="525px",
                       config={"responsive": True, **config})  # 525 px: what plotly's notebook renderer uses
    if load_plotly_js:  # classic scripts run in order: plotly.js is there before the figure's script runs
        html = f'<script src="{PLOTLY_JS}" charset="utf-8"></script>\n' + html
    return html


def is_plotly_loader(output) -> bool:
    """The output plotly's 'notebook' renderers display once to load plotly.js through require.js."""
    html = output.get("data", {}).get("text/html", "")
    html = "".join(html) if isinstance(html, list) else html
    loads_plotly = "define('plotly'" in html or 'require.undef("plotly")' in html
    return PLOTLY_MIME not in output.get("data", {}) and loads_plotly


def add_tags(cell, *tags: str) -> None:
    existing = cell.metadata.setdefault("tags", [])
    existing.extend(tag for tag in tags if tag not in existing)


def prepare(nb) -> dict:
    """Make an executed notebook ready for the site, in place; returns counts of what it changed."""
    counts = {"solutions": 0, "plotly": 0, "widgets dropped": 0}
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags:
            add_tags(cell, "remove-cell")
        if cell.metadata.get("nbgrader", {}).get("solution"):
            counts["solutions"] += 1
            if cell.cell_type == "code":
                add_tags(cell, *SOLUTION_TAGS)
                cell.metadata["mystnb"] = {**cell.metadata.get("mystnb", {}), **SOLUTION_PROMPTS}
            else:  # a written answer: folded into a dropdown
                cell.source = f"````{{dropdown}} Show solution\n:class-container: solution\n\n{cell.source}\n````"
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data")
            if data is None:
                kept.append(output)
                continue
            if is_plotly_loader(output):
                continue
            if WIDGET_MIME in data:
                counts["widgets dropped"] += 1
                del data[WIDGET_MIME]
                if not set(data) - {"text/plain"}:
                    continue  # only "HBox(children=...)" left: nothing to show
            if PLOTLY_MIME in data:  # myst-nb renders every mime type it is given and knows no plotly one
                data["text/html"] = plotly_html(data.pop(PLOTLY_MIME), load_plotly_js=counts["plotly"] == 0)
                counts["plotly"] += 1
            kept.append(output)
        cell.outputs = kept
    nb.metadata.pop("widgets", None)
    return counts


def readme_sections(readme: Path) -> tuple[str, str, str]:
    """(title, opening paragraphs, 'The course' section) of the README."""
    text = readme.read_text(encoding="utf-8")
    title_match = re.search(r"^# (.+)$", text, re.MULTILINE)
    title = title_match.group(1).strip() if title_match else "The course"
    body = text[title_match.end():] if title_match else text
    opening = re.split(r"^## ", body, maxsplit=1, flags=re.MULTILINE)[0].strip()
    course_match = re.search(r"^## The course\s*$(.*?)(?=^## |\Z)", body, re.MULTILINE | re.DOTALL)
    course = course_match.group(1).strip() if course_match else ""
    return title, opening, course


def intro_page(readme: Path, pages: list[str]) -> str:
    """The intro page: the README's title and opening, then its course table with links to the pages."""
    title, opening, course = readme_sections(readme)

    def link_notebook(match: re.Match) -> str:
        stem = match.group(1)
        return f"[`{stem}.ipynb`]({stem}.ipynb)" if stem in pages else match.group(0)

    def unlink_outside(match: re.Match) -> str:  # the README's links to repository files: not pages of the site
        text, target = match.group(1), match.group(2)
        if re.match(r"[a-z]+:", target) or target.startswith("#") or Path(target).stem in pages:
            return match.group(0)
        return text

    parts = [f"# {title}", opening]
    if course:
        parts += ["## The course", re.sub(r"`(\d\d_\w+)\.ipynb`", link_notebook, course)]
    parts.append("Each page is a notebook executed when this site was built, its figures and outputs included; "
                 "the exercises' solutions are folded away (**Show solution**).")
    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", unlink_outside, "\n\n".join(parts)) + "\n"


def book_config(title: str) -> dict:
    return {
        "title": title,
        "author": "ringnet-tutorials",
        "copyright": str(datetime.date.today().year),
        "only_build_toc_files": True,
        "exclude_patterns": ["_build", "**.ipynb_checkpoints"],
        "execute": {"execute_notebooks": "off"},  # executed above, by papermill
        "parse": {"myst_enable_extensions": ["amsmath", "colon_fence", "dollarmath", "linkify", "substitution",
                                             "tasklist"]},
        "html": {"home_page_in_navbar": True, "use_multitoc_numbering": False, "favicon": "_static/favicon.png"},
        "launch_buttons": {"binderhub_url": "", "jupyterhub_url": "", "colab_url": "", "thebe": False},
        "sphinx": {
            # MathJax 3.2.2 copied into the site (_static/mathjax/): no CDN at view time
            "extra_extensions": ["sphinx-mathjax-offline"],
            "config": {
                "mathjax_path": "mathjax/tex-chtml.js",
                "nb_merge_streams": True,
                "html_show_sourcelink": False,
                "html_extra_path": ["_extra"],
                # pydata-sphinx-theme logs an error on a first visit when no default colour mode is set
                "html_context": {"default_mode": "light"},
            },
        },
    }


def write_book(executed: list[Path], book: Path, readme: Path) -> dict:
    shutil.rmtree(book, ignore_errors=True)
    (book / "_static").mkdir(parents=True)
    stems, totals = [], {}
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        for key, value in prepare(nb).items():
            totals[key] = totals.get(key, 0) + value
        nbformat.write(nb, book / path.name)
        stems.append(path.stem)
    (book / "_extra").mkdir()
    if totals.get("plotly"):
        import plotly.offline

        (book / "_extra" / PLOTLY_JS).write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
    write_favicon(book / "_static" / "favicon.png")
    title = readme_sections(readme)[0]
    intro = intro_page(readme, stems)
    (book / "intro.md").write_text(intro, encoding="utf-8")
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", intro):  # the README's own images, same relative paths
        if re.match(r"[a-z]+:", target):
            continue
        if (readme.parent / target).is_file():
            (book / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(readme.parent / target, book / target)
        else:
            print(f"WARNING: the README shows {target}, which does not exist: the intro page's image is broken")
    toc = {"format": "jb-book", "root": "intro", "chapters": [{"file": stem} for stem in stems]}
    (book / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False), encoding="utf-8")
    (book / "_config.yml").write_text(yaml.safe_dump(book_config(title), sort_keys=False), encoding="utf-8")
    return totals


def write_favicon(path: Path) -> None:
    """A ring (the browser asks for an icon; without one, a 404 in the console)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((6, 6, 58, 58), outline=(217, 119, 87, 255), width=10)
    image.save(path)


def build_html(book: Path, out: Path) -> None:
    """Sphinx on the book: Jupyter Book's configuration (`jupyter-book config sphinx`), less DROPPED_EXTENSIONS."""
    bin_dir = Path(sys.executable).parent
    jupyter_book = str(bin_dir / "jupyter-book") if (bin_dir / "jupyter-book").exists() else "jupyter-book"
    subprocess.run([jupyter_book, "config", "sphinx", str(book)], check=True, stdout=subprocess.DEVNULL)
    with open(book / "conf.py", "a", encoding="utf-8") as conf:
        conf.write(f"\n# site/build.py\nextensions = [e for e in extensions if e not in {DROPPED_EXTENSIONS!r}]\n")
    html = out / "html"
    shutil.rmtree(html, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(out / "doctrees"), str(book),
                    str(html)], check=True)
    shutil.rmtree(out / "doctrees", ignore_errors=True)
    shutil.rmtree(out / "jupyter_execute", ignore_errors=True)  # myst-nb's copies of the output images


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        os.environ["CI"] = "true"  # ringnet_lib.notebook.SMOKE: each notebook runs its quick CI version
    sources = sorted(args.notebooks.glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        sys.exit(f"no notebooks in {args.notebooks}")
    mode = "CI mode (CI=true)" if "CI" in os.environ else "defaults"
    print(f"{len(sources)} notebooks into {out / 'notebooks'} (those executed here: {mode})", flush=True)
    executed, executed_names, execute_seconds = execute(sources, out, args.executed)
    totals = write_book(executed, out / "book", args.readme)
    print(f"book in {out / 'book'}: {totals.get('solutions', 0)} solutions collapsed, "
          f"{totals.get('plotly', 0)} plotly figures, {totals.get('widgets dropped', 0)} widget outputs dropped",
          flush=True)
    build_start = time.perf_counter()
    build_html(out / "book", out)
    build_seconds = time.perf_counter() - build_start
    total = time.perf_counter() - start
    print(f"site built in {total:.0f} s: executed {len(executed_names)} notebooks in {execute_seconds:.0f} s, "
          f"reused {len(executed) - len(executed_names)}, Jupyter Book {build_seconds:.0f} s. "
          f"Open {out / 'html' / 'index.html'}")


if __name__ == "__main__":
    main()
