"""README.md's counts and figures are the ones the code and the committed results give.

``experiments/readme_figures.py`` computes every generated block (``<!-- figures:NAME -->``) of
README.md and experiments/results/RESULTS.md from the test tables and the committed files under
``experiments/results/``; here its ``--check`` must find nothing stale. No training, no timing,
no torch run: the tables are imported, the results read.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import readme_figures as F  # noqa: E402


def test_readme_figures_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    code = F.main(["--check"])
    out = capsys.readouterr()
    assert code == 0, f"{out.out}\n{out.err}"


def test_a_stale_figure_is_reported_and_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = [tmp_path / doc.name for doc in F.DOCS]
    for doc, copy in zip(F.DOCS, docs, strict=True):
        shutil.copy(doc, copy)
    readme = docs[0]
    fresh = readme.read_text()
    stale = fresh.replace(
        f"<!-- figures:cnn-params -->{F.BLOCKS['cnn-params']()}<!-- /figures:cnn-params -->",
        "<!-- figures:cnn-params -->145,000<!-- /figures:cnn-params -->",
    )
    assert stale != fresh
    readme.write_text(stale)
    monkeypatch.setattr(F, "DOCS", docs)
    assert F.main(["--check"]) == 1
    diff = capsys.readouterr().out.splitlines()
    assert any(line.startswith("-") and "145,000" in line for line in diff), diff
    assert readme.read_text() == stale  # --check writes nothing
    assert F.main([]) == 0
    assert readme.read_text() == fresh


def test_unknown_and_unused_markers_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    doc = tmp_path / "README.md"
    doc.write_text("<!-- figures:no-such-block -->1<!-- /figures:no-such-block -->\n")
    monkeypatch.setattr(F, "DOCS", [doc])
    assert F.main(["--check"]) == 2


def test_invalid_input_count_covers_the_tables() -> None:
    """The scan of tests/ finds at least every row of the invalid-input tables it names."""
    import cases
    import loss_cases
    import schedule_cases

    counts = F.invalid_inputs()
    assert counts[F.OPTIMIZERS_AREA] >= len(cases.INVALID)
    assert counts[F.AREAS["test_losses"]] == len(loss_cases.INVALID)
    assert counts[F.AREAS["test_schedules"]] == len(schedule_cases.BAD)
