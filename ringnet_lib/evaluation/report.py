"""Writing a result: a markdown table, a CSV, a JSON and a figure side by side (the evaluation and the ablation)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.pyplot as plt

from ..checks import check_out_dir, remove_if_empty


def check_writable(out_dir: str | Path, name: str = "--out") -> Path:
    """``out_dir`` is a folder that exists or can be made, and can be written, checked by writing there before any
    work (:func:`ringnet_lib.checks.check_out_dir`, training's own check), leaving nothing behind: the folders made
    for the check are removed again (they are made for good when there is something to write).

    Raises:
        ConfigError: one line naming ``name`` (the flag) and the folder.
    """
    remove_if_empty(check_out_dir(out_dir, name))
    return Path(out_dir)


def write_report(out_dir: str | Path, stem: str, markdown: str, rows: list[dict], data: dict, figure) -> dict:
    """``<stem>.md``, ``<stem>.csv`` (one line per row, the rows' keys as columns), ``<stem>.json`` and
    ``<stem>.png`` (the figure, then closed) in ``out_dir``; returns ``{"md", "csv", "json", "png": Path}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out / f"{stem}.{suffix}" for suffix in ("md", "csv", "json", "png")}
    paths["md"].write_text(markdown)
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps(data, indent=1))
    figure.savefig(paths["png"], dpi=100)
    plt.close(figure)
    return paths
