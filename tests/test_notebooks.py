"""The course's rules (docs/course.md), checked on every notebook: structure, public imports, exercises,
and the student versions: each exercise's check fails on its stub, every other cell runs."""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

import ringnet_lib
from ringnet_lib import course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_there_are_eight_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 9)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_title_cell_says_what_you_learn_need_and_wait(path):
    first = source(load(path)["cells"][0])
    assert first.startswith(f"# {path.name[:2]} ·"), "title: '# NN · Title'"
    for heading in ("In this notebook you will learn", "You need", "Run time"):
        assert heading in first, f"the title cell names '{heading}'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_summary_and_next_name_the_right_notebook(path):
    text = "\n".join(source(c) for c in load(path)["cells"] if c["cell_type"] == "markdown")
    assert "## Summary" in text
    index = NOTEBOOKS.index(path)
    if index + 1 < len(NOTEBOOKS):
        following = re.search(r"## Next.*", text, re.S)
        assert following and NOTEBOOKS[index + 1].name in following.group(0), \
            f"'## Next' points to {NOTEBOOKS[index + 1].name}"
    referenced = set(re.findall(r"\b\d\d_\w+\.ipynb", text))
    assert referenced <= {p.name for p in NOTEBOOKS}, f"links to notebooks that do not exist: {referenced}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_imports_come_from_the_public_api(path):
    public = set(ringnet_lib.__all__)
    for cell in load(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = "\n".join(line for line in source(cell).splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ringnet_lib"):
                if node.module == "ringnet_lib.notebook":
                    continue
                assert node.module == "ringnet_lib", f"{node.module}: import from the public API (ringnet_lib)"
                assert {a.name for a in node.names} <= public, {a.name for a in node.names} - public
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("ringnet_lib.") or alias.name == "ringnet_lib.notebook", \
                        f"import {alias.name}: use `import ringnet_lib as rn`"
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "rn":
                assert node.attr in public, f"rn.{node.attr} is not in the public API"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_at_least_three_exercises_each_with_a_check(path):
    notebook = load(path)
    found = course.exercises(notebook, path.name)
    assert len(found) >= 3, f"{len(found)} exercises"
    ids = [e.grade_id for e in found]
    assert len(set(ids)) == len(ids) and all(i.startswith(path.name[:2] + "_ex") for i in ids), ids
    for exercise in found:
        assert exercise.check_cells, f"{exercise.grade_id} has no check cell"
        solution = source(notebook["cells"][exercise.solution_cell])
        defined = [n.name for n in ast.parse(solution).body if isinstance(n, ast.FunctionDef)]
        assert defined, f"{exercise.grade_id}: the solution cell defines the learner's function"
        for check in exercise.check_cells:
            assert any(name in source(notebook["cells"][check]) for name in defined), \
                f"{exercise.grade_id}: its check cell calls {defined}"
        heading = source(notebook["cells"][exercise.solution_cell - 1])
        assert notebook["cells"][exercise.solution_cell - 1]["cell_type"] == "markdown" and "Exercise" in heading \
            and "hint" in heading.lower(), f"{exercise.grade_id}: a markdown cell with the task and a hint before it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_later_cell_uses_an_exercise_answer(path):
    notebook = load(path)
    found = course.exercises(notebook, path.name)
    owned = {e.solution_cell for e in found} | {c for e in found for c in e.check_cells}
    answers = {n.name for e in found for n in ast.parse(source(notebook["cells"][e.solution_cell])).body
               if isinstance(n, ast.FunctionDef)}
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code" and index not in owned:
            used = {n.id for n in ast.walk(ast.parse(source(cell))) if isinstance(n, ast.Name)} & answers
            assert not used, f"cell {index} uses the exercise answer(s) {used}"


STUDENT_ERRORS = {"NotImplementedError", "AssertionError"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_version_fails_exactly_at_the_checks(path, tmp_path, monkeypatch):
    """The student version, run in CI mode: every check cell fails on its stub, every other cell runs."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # no figures to keep here: the run is only for errors
    student = course.student_version(load(path), path.name)
    notebook = nbformat.reads(json.dumps(student), as_version=4)
    checks = {c for e in course.exercises(load(path), path.name) for c in e.check_cells}  # same cells in both
    NotebookClient(notebook, timeout=900, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if index in checks:
            assert errors and errors[0].ename in STUDENT_ERRORS, \
                f"cell {index} (a check) should fail on the stub, got {[e.ename for e in errors] or 'no error'}"
        else:
            assert not errors, f"cell {index} failed in the student version: {errors[0].ename}: {errors[0].evalue}"
    assert os.environ["CI"] == "true"
