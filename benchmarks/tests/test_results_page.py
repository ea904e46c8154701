"""docs/results.md is written by benchmarks/scripts/results_page.py from committed data only.

The generator runs into a tmp file (seconds, no training): the page has its sections, stays
short, is byte-identical on a second run and equal to the committed page, every README link into
it lands on a heading, and spot-checked cells equal the data they come from, read here
independently of the generator (imbalance table, calibration.json, runs.csv, the committed archive
extract docs/results/archive-2026-11-29.json). No test needs git history, so shallow clones run
them all.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
from pathlib import Path
from statistics import mean

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "scripts" / "results_page.py"
SECTIONS = [
    "## The current result", "## How it was measured", "## Headline: the current defaults",
    "### Frozen tier, Qwen2.5-1.5B teacher", "### Fine-tuned tier, Qwen2.5-1.5B teacher, 1 epoch",
    "### Every baseline, old defaults: fine-tuned, pool 2,000, 1 epoch, 5 seeds",
    "## Skewed class priors (2026-12-01): calibration and class balance that estimate the prior",
    "## Students that learn on a CPU budget", "## Budgeted distillation: ask the teacher less (frozen tier)",
    "### 10,000-text pools (SST-2, emotion)", "## Reading: where LLKD wins, where it does not, and why",
    "## What we tried and dropped", "## Plots and the first full run", "## Reproduce", "## Earlier passes",
]


def _module():
    spec = importlib.util.spec_from_file_location("results_page", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ARCHIVE = ROOT / "docs" / "results" / "archive-2026-11-29.json"


@pytest.fixture(scope="module")
def rp():
    return _module()


@pytest.fixture(scope="module")
def page(rp, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("page") / "results.md"
    assert rp.main(["--out", str(out)]) == 0
    return out.read_text()


def _table_after(page: str, heading: str) -> list[dict[str, str]]:
    """Rows (as {column: cell}) of the first table under ``heading``."""
    lines = page.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("|"))
    block = []
    for x in lines[start:]:
        if not x.startswith("|"):
            break
        block.append([c.strip() for c in x.strip()[1:-1].split("|")])
    return [dict(zip(block[0], r)) for r in block[2:]]


def _anchor(heading: str) -> str:
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_budget_rows_come_from_the_budget_json(page: str) -> None:
    b = json.loads((ROOT / "docs" / "results" / "budget.json").read_text())
    d = b["datasets"]["agnews"]
    row = d["strategies"][b["chosen_on_dev"]]
    cells = " | ".join(f"{x:.3f}" for x in row["test"])
    assert f"| AG News | {b['chosen_on_dev']} | {cells} | {d['full_test']:.3f} |" in page


def test_sections_length_and_slots(page: str) -> None:
    for s in SECTIONS:
        assert f"\n{s}\n" in page, s
    assert len(page.splitlines()) < 450  # a few hundred lines: one page, not a notebook
    assert "{{" not in page and "}}" not in page
    assert "<!--" not in page  # the template's own comment is not copied


def test_second_run_is_byte_identical_and_committed_page_is_fresh(rp, page: str, tmp_path: Path) -> None:
    out = tmp_path / "again.md"
    assert rp.main(["--out", str(out)]) == 0
    assert out.read_bytes() == page.encode()
    assert (ROOT / "docs" / "results.md").read_text() == page, "docs/results.md is stale: run python benchmarks/scripts/results_page.py"


def test_links_into_the_page_land_on_headings(page: str) -> None:
    anchors = {_anchor(x) for x in page.splitlines() if x.startswith("#")}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"results\.md#([\w\-]+)", doc.read_text()):
            if doc.name != "results.md":
                assert target in anchors, f"{doc.name} links to results.md#{target}"
    for target in re.findall(r"\]\(#([\w\-]+)\)", page):
        assert target in anchors, target
    for png in re.findall(r"\((results/[\w\-.]+\.png)\)", page):
        assert (ROOT / "docs" / png).exists(), png


def test_headline_cells_equal_the_imbalance_tables(page: str) -> None:
    frozen = {r["method"]: r for r in _table_after(page, "### Frozen tier, Qwen2.5-1.5B teacher")}
    text = (ROOT / "docs" / "results" / "imbalance-frozen.md").read_text()
    for dataset, column in (("agnews", "AG News"), ("csabstruct", "CSAbstruct")):
        section = text.split(f"### {dataset}\n", 1)[1]
        want = re.search(r"^\| autodev \| llkd \| 5 \| ([\d.]+)", section, re.M).group(1)
        assert frozen["**llkd** (default)"][column] == f"**{want}**"
        teacher = re.search(r"^\| autodev \| teacher \| 1 \| ([\d.]+)", section, re.M).group(1)
        assert frozen["teacher"][column] == teacher
    ft = {r["method"]: r for r in _table_after(page, "### Fine-tuned tier, Qwen2.5-1.5B teacher, 1 epoch")}
    section = (ROOT / "docs" / "results" / "imbalance-finetune.md").read_text().split("### emotion\n", 1)[1]
    want = re.search(r"^\| autodev \| all \| 2 \| ([\d.]+ ±[\d.]+)", section, re.M).group(1)
    assert ft["all"]["emotion"] == want


def test_calibrator_cells_equal_calibration_json(page: str) -> None:
    rows = json.loads((ROOT / "docs" / "results" / "calibration.json").read_text())
    table = {r["calibrator"]: r for r in _table_after(page, "### Teacher: calibrators on natural and long-tailed pools")}
    qwen = [r for r in rows if r["teacher"] == "qwen2.5-1.5b"]
    want = mean(r["scores"]["auto@dev"]["test@pool" if r["ratio"] else "test"] for r in qwen)
    assert table["**`auto` with dev (default)**"][f"Qwen2.5-1.5B ({len(qwen)} cases)"] == f"**{want:.3f}**"
    pool = mean(r["scores"]["mean"]["pool"] for r in rows)
    assert table["`mean` (default without dev)"]["pool-side macro-F1 (all cases)"] == f"{pool:.3f}"


def test_first_run_cells_equal_runs_csv(page: str) -> None:
    with open(ROOT / "docs" / "results" / "runs.csv", newline="") as f:
        recs = list(csv.DictReader(f))
    summary = {r["dataset"]: r for r in _table_after(page, "## Plots and the first full run")}
    for dataset in ("agnews", "sst2"):
        f1 = [float(r["macro_f1"]) for r in recs if r["dataset"] == dataset and r["method"] == "llkd"]
        assert summary[dataset]["LLKD F1"].startswith(f"{mean(f1):.3f} ± ")
        teacher = next(float(r["macro_f1"]) for r in recs if r["dataset"] == dataset and r["method"] == "teacher")
        assert summary[dataset]["teacher F1"] == f"{teacher:.3f}"


def _archived(name: str, section: str, index: int) -> dict:
    table = json.loads(ARCHIVE.read_text(encoding="utf-8"))["tables"][name]
    assert (table["section"], table["index"]) == (section, index)
    return table


def test_archive_file_is_small_and_says_where_it_came_from() -> None:
    assert ARCHIVE.stat().st_size < 40_000
    data = json.loads(ARCHIVE.read_text(encoding="utf-8"))
    assert data["source"] == "git show b065f13a876d35234bd5ece6170523cd23a424b0:docs/results.md"
    assert "--calibration balanced" in data["measured_under"] and "class_balance_target uniform" in data["measured_under"]
    for t in data["tables"].values():
        assert t["section"] and len(t["align"]) == len(t["head"]) and all(len(r) == len(t["head"]) for r in t["rows"])


def test_archived_rows_are_copied_cell_for_cell(page: str) -> None:
    section = "Five seeds: the acceptance table with seeds 0-4"
    claim, every = _archived("ft2k_claim", section, 0), _archived("ft2k_every", section, 1)
    for table, first in ((claim, ["emotion", "0.451"]), (every, ["teacher_adaptive"])):
        row = next(r for r in table["rows"] if r[:len(first)] == first)
        assert "\n| " + " | ".join(row) + " |\n" in page
    assert f"\n{claim['note']}\n" in page and claim["note"].startswith("Seeds [0, 1, 2, 3, 4]")
    bound = _archived("bound", "Students that learn on a CPU budget", 1)
    row = next(r for r in bound["rows"] if r[0] == "mag")
    assert "\n| " + " | ".join(row) + " |\n" in page


def test_the_page_is_built_without_git(rp, monkeypatch: pytest.MonkeyPatch) -> None:
    real = subprocess.run

    def no_git(args, *a, **k):
        assert "git" not in str(args[0]), f"the page build called {args}"
        return real(args, *a, **k)

    monkeypatch.setattr(rp.subprocess, "run", no_git)
    assert rp.build() == (ROOT / "docs" / "results.md").read_text()


def test_a_slot_the_script_does_not_compute_is_an_error(rp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "text.md"
    text.write_text("# t\n\n{{no.such.number}}\n")
    monkeypatch.setattr(rp, "TEXT", text)
    with pytest.raises(KeyError, match="no.such.number"):
        rp.build()
