"""The course's notebooks as an instructor hands them out: student versions, with nbgrader's markers.

The notebooks in ``notebooks/`` are the *solution* versions. Each exercise is two cells, marked
as nbgrader marks them (``metadata.nbgrader``), so an instructor can also run nbgrader on them:

* the **solution cell** (``nbgrader.solution: true``): the learner's function, whose body is
  between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
* the **check cell** (``nbgrader.grade: true``): asserts that compare the learner's function with
  the library; checks an instructor wants hidden go between ``### BEGIN HIDDEN TESTS`` and
  ``### END HIDDEN TESTS``.

:func:`student_version` replaces each solution block by ``raise NotImplementedError()`` (keeping
its indentation) and drops hidden tests, as ``nbgrader generate_assignment`` does; everything
else is kept, so a learner who skips an exercise can still run the rest (no later cell uses an
exercise's answer).

    python -m ringnet_lib.course student notebooks student     # what `make student` runs
    python -m ringnet_lib.course list notebooks                # the exercises of every notebook
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = "raise NotImplementedError()"


class CourseError(ValueError):
    """A notebook or folder the course tools cannot use; the message names it and says what to do."""


class MarkerError(CourseError):
    """A notebook's solution or hidden-test markers are unbalanced; the message names the notebook and cell."""


def read_notebook(path: Path) -> dict:
    """The notebook at ``path`` as a dict (nbformat 4's JSON), or a :class:`CourseError` naming the file."""
    try:
        notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CourseError(f"{path}: not a readable notebook ({type(error).__name__}: {error}); restore it "
                          "(e.g. git checkout -- the file) or remove it from the folder") from None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not (isinstance(cells, list) and all(isinstance(c, dict) and "cell_type" in c
                                            and isinstance(c.get("source"), (str, list)) for c in cells)):
        raise CourseError(f"{path}: JSON, but not a Jupyter notebook (no list of cells with 'cell_type' and "
                          "'source'); restore it or remove it from the folder")
    return notebook


@dataclass(frozen=True)
class Exercise:
    notebook: str
    grade_id: str  # nbgrader's id of the solution cell
    solution_cell: int  # index in the notebook's cells
    check_cells: tuple[int, ...]  # the grade cells that test it (those after it, before the next solution)


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _set_source(cell: dict, text: str) -> None:
    lines = text.split("\n")
    cell["source"] = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def _replace_blocks(text: str, begin: str, end: str, replacement, where: str) -> str:
    """Replace every ``begin`` ... ``end`` block (marker lines included) by ``replacement(indent)`` lines."""
    out, inside, indent = [], False, ""
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise MarkerError(f"{where}, line {number}: '{begin}' again before '{end}'")
            inside, indent = True, line[:len(line) - len(line.lstrip())]
            out += replacement(indent)
        elif stripped == end:
            if not inside:
                raise MarkerError(f"{where}, line {number}: '{end}' without a '{begin}' before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: '{begin}' is never closed by '{end}'")
    return "\n".join(out)


def _nbgrader(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def exercises(notebook: dict, name: str = "notebook") -> list[Exercise]:
    """The exercises of a notebook, in order, each with its check cells (a check without a solution is an error)."""
    found, current = [], None
    for index, cell in enumerate(notebook["cells"]):
        meta = _nbgrader(cell)
        if meta.get("solution") and cell["cell_type"] == "code":
            if BEGIN_SOLUTION not in _source(cell):
                raise MarkerError(f"{name}, cell {index}: a solution cell without '{BEGIN_SOLUTION}'")
            current = [meta.get("grade_id", f"cell{index}"), index, []]
            found.append(current)
        elif meta.get("grade") and cell["cell_type"] == "code":
            if current is None:
                raise MarkerError(f"{name}, cell {index}: a check cell before any solution cell")
            current[2].append(index)
        elif BEGIN_SOLUTION in _source(cell):
            raise MarkerError(f"{name}, cell {index}: '{BEGIN_SOLUTION}' in a cell not marked as a solution "
                              "(metadata.nbgrader.solution)")
    return [Exercise(name, grade_id, solution, tuple(checks)) for grade_id, solution, checks in found]


def student_version(notebook: dict, name: str = "notebook") -> dict:
    """The notebook with every solution replaced by a stub and every hidden test removed."""
    exercises(notebook, name)  # checks the cells' marks
    student = copy.deepcopy(notebook)
    for index, cell in enumerate(student["cells"]):
        where = f"{name}, cell {index}"
        text = _source(cell)
        if cell["cell_type"] == "code" and _nbgrader(cell).get("solution"):
            text = _replace_blocks(text, BEGIN_SOLUTION, END_SOLUTION,
                                   lambda indent: [f"{indent}# YOUR CODE HERE", f"{indent}{STUB}"], where)
        elif BEGIN_SOLUTION in text or END_SOLUTION in text:
            raise MarkerError(f"{where}: solution markers in a cell not marked as a solution")
        if BEGIN_HIDDEN in text or END_HIDDEN in text:
            text = _replace_blocks(text, BEGIN_HIDDEN, END_HIDDEN, lambda indent: [], where)
        _set_source(cell, text)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return student


def write_student_versions(source: Path, out: Path, force: bool = False) -> tuple[list[Path], list[Path]]:
    """A student version of every notebook of ``source`` in ``out`` (created).

    A notebook already in ``out`` is a learner's work: it is kept unless ``force``. Returns the paths
    written and the paths kept.
    """
    out = Path(out)
    notebooks = sorted(Path(source).glob("*.ipynb"))
    if not notebooks:
        raise MarkerError(f"{source}: no notebooks (*.ipynb) there")
    if out.exists() and not out.is_dir():
        raise CourseError(f"{out}: is a file, not a folder; give a folder for the student notebooks (or move "
                          "the file away)")
    versions = {path: student_version(read_notebook(path), path.name) for path in notebooks}
    try:
        out.mkdir(parents=True, exist_ok=True)  # only once every notebook converted: nothing half written
    except OSError as error:  # e.g. a parent is a file, or read-only
        raise CourseError(f"{out}: cannot make this folder ({error.strerror or error}); choose another "
                          "one") from None
    written, kept = [], []
    for path, student in versions.items():
        target = out / path.name
        if target.exists() and not force:
            kept.append(target)
            continue
        target.write_text(json.dumps(student, indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written, kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.course", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student versions")
    student.add_argument("source", type=Path, help="the solution notebooks' folder")
    student.add_argument("out", type=Path, help="where the student versions go")
    student.add_argument("--force", action="store_true", help="replace notebooks already there (a learner's work)")
    student.add_argument("--quiet", action="store_true", help="one line, only when something was written")
    listing = commands.add_parser("list", help="list the exercises")
    listing.add_argument("source", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "student":
            written, kept = write_student_versions(args.source, args.out, args.force)
            if args.quiet:
                if written:
                    print(f"student versions of {len(written)} notebook(s) in {args.out}/ (where you work)")
                return 0
            for path in written:
                print(f"wrote {path}")
            if kept:
                print(f"kept {len(kept)} notebook(s) already in {args.out} (your work; --force replaces them): "
                      + ", ".join(p.name for p in kept))
        else:
            for path in sorted(args.source.glob("*.ipynb")):
                found = exercises(read_notebook(path), path.name)
                print(f"{path.name}: {len(found)} exercises: {', '.join(e.grade_id for e in found)}")
    except CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
