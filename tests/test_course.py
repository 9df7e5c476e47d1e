"""The student-version preprocessor (ringnet_lib.course): nbgrader's markers, stubs, hidden tests, bad marks."""
from __future__ import annotations

import json

import pytest

from ringnet_lib import course


def cell(source: str, solution: bool = False, grade: bool = False, grade_id: str = "x") -> dict:
    meta = {}
    if solution or grade:
        meta["nbgrader"] = {"solution": solution, "grade": grade, "grade_id": grade_id, "schema_version": 3}
    return {"cell_type": "code", "metadata": meta, "source": source, "outputs": [], "execution_count": None}


SOLUTION = """def my_square(x):
    '''x squared.'''
    ### BEGIN SOLUTION
    y = x * x
    return y
    ### END SOLUTION
"""
CHECK = """assert my_square(3) == 9
### BEGIN HIDDEN TESTS
assert my_square(-2) == 4
### END HIDDEN TESTS
"""


def notebook(*cells) -> dict:
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_student_version_stubs_solutions_and_drops_hidden_tests():
    nb = notebook(cell("x = 1"), cell(SOLUTION, solution=True, grade_id="a"), cell(CHECK, grade=True, grade_id="a_c"))
    student = course.student_version(nb, "nb.ipynb")
    text = "".join(student["cells"][1]["source"])
    assert "x * x" not in text and "    # YOUR CODE HERE\n    raise NotImplementedError()" in text
    assert "'''x squared.'''" in text  # the docstring (outside the markers) stays
    check = "".join(student["cells"][2]["source"])
    assert "my_square(3) == 9" in check and "-2" not in check and "HIDDEN" not in check
    assert "".join(nb["cells"][1]["source"]) == SOLUTION  # the solution notebook is untouched
    namespace = {}
    exec(text, namespace)
    with pytest.raises(NotImplementedError):
        exec(check, namespace)
    exec(SOLUTION, namespace)
    exec(CHECK, namespace)  # the full check passes on the solution


def test_exercises_pair_solutions_with_their_checks():
    nb = notebook(cell(SOLUTION, solution=True, grade_id="a"), cell(CHECK, grade=True, grade_id="a_c"),
                  cell("y = 2"), cell(SOLUTION, solution=True, grade_id="b"), cell(CHECK, grade=True, grade_id="b_c"))
    found = course.exercises(nb, "nb")
    assert [(e.grade_id, e.solution_cell, e.check_cells) for e in found] == [("a", 0, (1,)), ("b", 3, (4,))]


@pytest.mark.parametrize("bad, message", [
    (SOLUTION.replace("    ### END SOLUTION\n", ""), "never closed"),
    (SOLUTION.replace("    ### BEGIN SOLUTION\n", ""), "a solution cell without"),
    (SOLUTION.replace("    return y\n", "    ### BEGIN SOLUTION\n"), "again before"),
])
def test_unbalanced_markers_name_the_notebook_and_cell(bad, message):
    nb = notebook(cell("x = 1"), cell(bad, solution=True, grade_id="a"))
    with pytest.raises(course.MarkerError, match=rf"nb.ipynb, cell 1.*{message}|nb.ipynb, cell 1: {message}"):
        course.student_version(nb, "nb.ipynb")


def test_markers_outside_solution_cells_and_orphan_checks_are_errors():
    with pytest.raises(course.MarkerError, match="cell 0: '### BEGIN SOLUTION' in a cell not marked"):
        course.student_version(notebook(cell(SOLUTION)), "nb")
    with pytest.raises(course.MarkerError, match="cell 0: a check cell before any solution"):
        course.exercises(notebook(cell(CHECK, grade=True)), "nb")


def test_command_line_writes_every_notebook_or_nothing(tmp_path, capsys):
    source = tmp_path / "notebooks"
    source.mkdir()
    good = notebook(cell(SOLUTION, solution=True, grade_id="a"), cell(CHECK, grade=True, grade_id="a_c"))
    (source / "01.ipynb").write_text(json.dumps(good))
    assert course.main(["student", str(source), str(tmp_path / "student")]) == 0
    assert "NotImplementedError" in (tmp_path / "student" / "01.ipynb").read_text()
    bad = notebook(cell(SOLUTION.replace("    ### END SOLUTION\n", ""), solution=True, grade_id="a"))
    (source / "02.ipynb").write_text(json.dumps(bad))
    assert course.main(["student", str(source), str(tmp_path / "again")]) == 2
    assert "02.ipynb, cell 0" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_make_student_never_replaces_a_learners_work_unless_forced(tmp_path):
    source = tmp_path / "notebooks"
    source.mkdir()
    good = notebook(cell(SOLUTION, solution=True, grade_id="a"), cell(CHECK, grade=True, grade_id="a_c"))
    (source / "01.ipynb").write_text(json.dumps(good))
    out = tmp_path / "student"
    out.mkdir()
    (out / "01.ipynb").write_text("my answers")
    written, kept = course.write_student_versions(source, out)
    assert written == [] and kept == [out / "01.ipynb"] and (out / "01.ipynb").read_text() == "my answers"
    written, kept = course.write_student_versions(source, out, force=True)
    assert written == [out / "01.ipynb"] and "NotImplementedError" in (out / "01.ipynb").read_text()


def test_quiet_command_line_says_one_line_only_when_it_wrote(tmp_path, capsys):
    # make setup runs it every time: a learner sees a line the first time and nothing after
    source = tmp_path / "notebooks"
    source.mkdir()
    good = notebook(cell(SOLUTION, solution=True, grade_id="a"), cell(CHECK, grade=True, grade_id="a_c"))
    (source / "01.ipynb").write_text(json.dumps(good))
    out = tmp_path / "student"
    assert course.main(["student", str(source), str(out), "--quiet"]) == 0
    first = capsys.readouterr().out
    assert first.count("\n") == 1 and "1 notebook(s)" in first
    (out / "01.ipynb").write_text("my answers")
    assert course.main(["student", str(source), str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert (out / "01.ipynb").read_text() == "my answers"
