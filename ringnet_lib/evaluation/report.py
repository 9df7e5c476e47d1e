"""Writing a result: a markdown table, a CSV, a JSON and a figure side by side (the evaluation and the ablation)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.pyplot as plt

from ..cli import ConfigError
from ..training.loop import check_out_dir


def check_writable(out_dir: str | Path, name: str = "--out") -> Path:
    """``out_dir`` is a folder that exists or can be made, and can be written, checked by writing there before any
    work (training's own check, :func:`ringnet_lib.training.loop.check_out_dir`), and leaving nothing behind: the
    folders made for the check are removed again (they are made for good when there is something to write).

    Raises:
        ValueError: one line naming ``name`` (the flag) and the folder.
    """
    out = Path(out_dir)
    made = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    try:
        check_out_dir(out)
    except ConfigError as error:
        raise ValueError(f"{name}{str(error).removeprefix('out_dir')}") from None
    finally:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not made after all, or something else wrote into it meanwhile: keep it
                continue
    return out


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
