"""Write docs/results.md, the benchmark's one results page, from the committed result data.

    python benchmarks/scripts/results_page.py              # writes docs/results.md
    python benchmarks/scripts/results_page.py --out X.md   # somewhere else (the test does this)
    python benchmarks/scripts/results_page.py --check      # exit 1 if docs/results.md is stale
    python benchmarks/scripts/results_page.py --extract-archive [--check]
                                 # one-off: (re)write docs/results/archive-2026-11-29.json from git history

The page has two parts, kept apart:

- **numbers** (this file): every table, and every number the prose quotes, is computed here
  from committed files; none is typed by hand:
    docs/results/calibration.json        teacher calibrators on natural and long-tailed pools
                                         (calibration_table.py; its criterion() counts the bar)
    docs/results/imbalance-frozen.md     old and new defaults side by side, frozen tier
    docs/results/imbalance-finetune.md   the same, fine-tuned tier (both written by
                                         imbalance_table.py over runs/imbalance-*)
    docs/results/runs*.csv               records of the first full run and its suites
                                         (llkd_bench.report's aggregate / compare / summary_table)
    docs/results/archive-2026-11-29.json the tables of the dated passes that ran under the old
                                         defaults and whose run folders are not kept: the output
                                         of tier_tables.py as it was pasted then into
                                         docs/results.md, extracted once from ARCHIVE_REV
                                         (`--extract-archive`, the only git call) and copied cell
                                         for cell (never retyped)
    docs/results/*.png                   the plots, linked
- **prose** (results_page_text.md next to this file): the reading, what was tried and dropped,
  the commands. Its {{name}} slots are filled from the values below; a slot this file does not
  know is an error, so the prose cannot quote a number the data do not give.

runs/ is not committed and is never read for the page, nor is git history, so the page is the
same on every checkout, shallow clones included. Where runs/imbalance-frozen or
runs/imbalance-finetune exist, the committed table is compared with imbalance_table.py's output
over them: a warning on stderr if they differ (the committed table is stale), an error under
--check.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import calibration_table  # noqa: E402  (sibling script)
from tier_tables import DATASETS  # noqa: E402  (sibling script)

from llkd_bench.report import aggregate, compare, summary_table  # noqa: E402

RESULTS = ROOT / "docs" / "results"
PAGE = ROOT / "docs" / "results.md"
TEXT = HERE / "results_page_text.md"
# The last commit of the lab-notebook page (dated passes of 2026-11-29 to 2026-12-01), and the
# committed extract of the tables this script reads from it.
ARCHIVE_REV = "b065f13a876d35234bd5ece6170523cd23a424b0"
ARCHIVE = RESULTS / "archive-2026-11-29.json"

NAMES = {"csabstruct": "CSAbstruct", "agnews": "AG News", "mag": "MAG", "emotion": "emotion", "sst2": "SST-2"}
TEACHERS = {"qwen2.5-1.5b": "Qwen2.5-1.5B", "smollm2-135m": "SmolLM2-135M", "gemma3-270m": "Gemma-3-270m"}
PLAIN = str.maketrans({"−": "-", "*": ""})  # Unicode minus and bold marks out, for reading numbers


# -- markdown tables ----------------------------------------------------------------------------
class Table:
    """One markdown table as written: header, alignment row, body rows (lists of cell text)."""

    def __init__(self, head: list[str], align: list[str], rows: list[list[str]], note: str = "") -> None:
        self.head, self.align, self.rows, self.note = head, align, rows, note

    def row(self, key: str) -> dict[str, str]:
        hits = [r for r in self.rows if r[0] == key]
        if len(hits) != 1:
            raise KeyError(f"{len(hits)} rows named {key!r} in table {self.head}")
        return dict(zip(self.head, hits[0]))

    def cell(self, key: str, column: str) -> str:
        return self.row(key)[column]

    def md(self, keys: list[str] | None = None) -> str:
        rows = self.rows if keys is None else [next(r for r in self.rows if r[0] == k) for k in keys]
        return "\n".join([_line(self.head), _align(self.align), *(_line(x) for x in rows)])


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _align(cells: list[str]) -> str:
    return "|" + "|".join(cells) + "|"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip()[1:-1].split("|")]


def parse_sections(text: str) -> dict[str, list[list[Table]]]:
    """Tables of a markdown text by the heading they stand under (a heading may repeat, so each
    heading maps to one list of tables per occurrence). The line after a table, when it starts
    with `Seeds [` (tier_tables.py's footnote), is kept as the table's note."""
    lines = text.splitlines()
    out: dict[str, list[list[Table]]] = defaultdict(list)
    heading, i = "", 0
    out[heading].append([])
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            out[heading].append([])
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(_cells(lines[i]))
                i += 1
            j = i
            while j < len(lines) and not lines[j].strip():
                j += 1
            note = lines[j] if j < len(lines) and lines[j].startswith("Seeds [") else ""
            out[heading][-1].append(Table(block[0], block[1], block[2:], note))
            continue
        i += 1
    return out


def tables(sections: dict[str, list[list[Table]]], heading: str) -> list[Table]:
    found = sections.get(heading, [])
    if len(found) != 1:
        raise KeyError(f"heading {heading!r} occurs {len(found)} times")
    return found[0]


def num(cell: str) -> float:
    """The first number of a cell: `0.836 ±0.001` -> 0.836, `**0.652**` -> 0.652, `39%` -> 39.0."""
    m = re.search(r"[-+]?\d+(?:\.\d+)?", cell.translate(PLAIN).replace(",", ""))
    if not m:
        raise ValueError(f"no number in {cell!r}")
    return float(m.group())


def pair(cell: str) -> tuple[float, float]:
    """`0.398 / 0.558` -> (0.398, 0.558)."""
    a, b = cell.split(" / ")
    return num(a), num(b)


def signed(x: float) -> str:
    x = round(x, 3)
    return f"{x + 0.0:+.3f}"


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


# -- sources ------------------------------------------------------------------------------------
def read_archive(path: Path = ARCHIVE) -> tuple[str, dict[str, Table]]:
    """The committed archive extract: (source commit, {table name: Table})."""
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = sorted(set(ARCHIVE_TABLES) - set(data["tables"]))
    if missing:
        raise KeyError(f"{path.name} lacks the tables {missing}: rerun results_page.py --extract-archive")
    found = {name: Table(t["head"], t["align"], t["rows"], t["note"]) for name, t in data["tables"].items()}
    return data["rev"], found


def read_imbalance(tier: str) -> dict[str, dict[tuple[str, str], dict[str, str]]]:
    """docs/results/imbalance-<tier>.md as {case: {(setting, method): row}}, plus the means table
    under the case name `means`."""
    sections = parse_sections((RESULTS / f"imbalance-{tier}.md").read_text())
    out: dict[str, dict[tuple[str, str], dict[str, str]]] = {}
    for heading, found in sections.items():
        for tabs in found:
            for t in tabs:
                if t.head[0] == "setting":
                    out[heading] = {(r[0], r[1]): dict(zip(t.head, r)) for r in t.rows}
                elif t.head[0] == "setting / method":
                    out["means"] = {tuple(r[0].split("/", 1)): dict(zip(t.head, r)) for r in t.rows}
    return out


def read_records(name: str) -> list[dict]:
    text_cols = {"dataset", "suite", "method", "selector", "kind", "teacher", "noise", "student_mode", "calibration",
                 "pool_digest", "test_digest", "run_dir"}
    out = []
    with open(RESULTS / name, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            rec: dict = {}
            for k, v in r.items():
                if k in text_cols or v == "":
                    rec[k] = v if v != "" else None
                else:
                    rec[k] = int(v) if re.fullmatch(r"-?\d+", v) else float(v)
            rec["suite"] = rec["suite"] or "baselines"
            out.append(rec)
    return out


def check_runs(strict: bool) -> list[str]:
    """Committed imbalance tables against imbalance_table.py's output over runs/, where present."""
    problems = []
    for tier in ("frozen", "finetune"):
        root = Path("runs") / f"imbalance-{tier}"
        if not (ROOT / root).is_dir():
            continue
        fresh = subprocess.run([sys.executable, str(HERE / "imbalance_table.py"), str(root)], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout
        if fresh.rstrip() != (RESULTS / f"imbalance-{tier}.md").read_text().rstrip():
            problems.append(f"docs/results/imbalance-{tier}.md differs from imbalance_table.py over {root}: regenerate it "
                            f"(python benchmarks/scripts/imbalance_table.py {root} --md docs/results/imbalance-{tier}.md)")
    for p in problems:
        print(f"results_page: {'error' if strict else 'warning'}: {p}", file=sys.stderr)
    return problems


# -- the current defaults: imbalance study ------------------------------------------------------
def case_label(case: str) -> str:
    m = re.fullmatch(r"(\w+)-ir(\d+)-h(\d+)", case)
    return NAMES.get(case, case) if not m else f"{NAMES[m.group(1)]} IR {m.group(2)} (head class {m.group(3)})"


def score(imb: dict, case: str, setting: str, method: str) -> float:
    """Test macro-F1 for natural pools, test weighted to the pool's mix (`@pool`) for long-tailed ones."""
    row = imb[case][(setting, method)]
    return num(row["@pool"] if "@pool" in row else row["test macro-F1"])


def natural_prior(dataset: str, cal: list[dict]) -> float:
    r = next(r for r in cal if r["teacher"] == "qwen2.5-1.5b" and r["dataset"] == dataset and not r["ratio"])
    return min(r["pool_prior"])


def headline_frozen(imb: dict) -> str:
    methods = ["teacher", "all", "soft", "llkd"]
    seeds = {m: imb["agnews"][("autodev", m)]["seeds"] for m in methods}
    head = ["method", "seeds", *(NAMES[d] for d in DATASETS), "mean", "data used"]
    lines = [_line(head), _align(["---", *["---:"] * (len(head) - 1)])]
    for m in methods:
        vals = [score(imb, d, "autodev", m) for d in DATASETS]
        use = [imb[d][("autodev", m)]["data used"] for d in DATASETS]
        used = "-" if "-" in use else pct(mean(num(u) for u in use))
        name = f"**{m}** (default)" if m == "llkd" else m
        cells = [f"**{x:.3f}**" if m == "llkd" else f"{x:.3f}" for x in vals]
        lines.append(_line([name, seeds[m], *cells, f"{mean(vals):.3f}", used]))
    diffs = []
    for d in DATASETS:
        best = max(("all", "soft"), key=lambda m: score(imb, d, "autodev", m))
        diffs.append(f"{signed(score(imb, d, 'autodev', 'llkd') - score(imb, d, 'autodev', best))} vs {best}")
    lines.append(_line(["llkd − best baseline", "", *diffs, "", ""]))
    lines.append(_line(["llkd − teacher", "", *(signed(score(imb, d, "autodev", "llkd") - score(imb, d, "autodev", "teacher")) for d in DATASETS), "", ""]))
    return "\n".join(lines)


def headline_finetune(imb: dict) -> str:
    cases = list(dict.fromkeys(c for c in [*DATASETS, *sorted(imb)] if c in imb and c != "means"))
    methods = ["teacher", "all", "llkd"]
    head = ["method", "seeds", *(case_label(c) + (" `@pool`" if "-ir" in c else "") for c in cases), "data used"]
    lines = [_line(head), _align(["---", *["---:"] * (len(head) - 1)])]
    for m in methods:
        cells = []
        for c in cases:
            row = imb[c][("autodev", m)]
            cell = row["@pool"] if "@pool" in row else row["test macro-F1"]
            cells.append(f"**{cell}**" if m == "llkd" else cell)
        use = [imb[c][("autodev", m)]["data used"] for c in cases]
        used = "-" if "-" in use else pct(mean(num(u) for u in use))
        lines.append(_line([f"**{m}** (default)" if m == "llkd" else m, imb[cases[0]][("autodev", m)]["seeds"], *cells, used]))
    lines.append(_line(["llkd − all", "", *(signed(score(imb, c, "autodev", "llkd") - score(imb, c, "autodev", "all")) for c in cases), ""]))
    return "\n".join(lines)


def side_by_side(imb: dict, cal: list[dict]) -> str:
    head = ["case", "pool prior", "old defaults", "new, no dev (`mean`)", "**new, with dev (`auto`)**", "`auto` + uniform guard",
            "best of all/soft under `auto`", "teacher under `auto`"]
    lines = [_line(head), _align(["---", "---", *["---:"] * 6])]
    cases = sorted((c for c in imb if c != "means"), key=lambda c: ("-ir" in c, c not in ("agnews", "mag", "sst2"), c))
    for c in cases:
        prior = (f"long-tailed, IR {c.split('-ir')[1].split('-')[0]}" if "-ir" in c
                 else f"natural, rarest {pct(natural_prior(c, cal))}")
        best = max(score(imb, c, "autodev", m) for m in ("all", "soft"))
        cells = [score(imb, c, "old", "llkd"), score(imb, c, "mean", "llkd"), score(imb, c, "autodev", "llkd"),
                 score(imb, c, "autodev", "llkd+guni"), best, score(imb, c, "autodev", "teacher")]
        lines.append(_line([case_label(c), prior, *(f"{x:.3f}" for x in cells)]))
    return "\n".join(lines)


def finetune_check(imb: dict) -> str:
    head = ["case", "old defaults `llkd`", "new with dev `llkd`", "old `all`", "new `all`", "teacher old / new"]
    lines = [_line(head), _align(["---", *["---:"] * 5])]
    for c in (c for c in imb if c != "means"):
        s = lambda cfg, m: f"{score(imb, c, cfg, m):.3f}"  # noqa: E731
        lines.append(_line([case_label(c) + (", `@pool`" if "-ir" in c else ""), s("old", "llkd"), s("autodev", "llkd"),
                            s("old", "all"), s("autodev", "all"), f"{s('old', 'teacher')} / {s('autodev', 'teacher')}"]))
    return "\n".join(lines)


def imbalance_values(fz: dict, ft: dict, cal: list[dict], v: dict) -> None:
    natural = [d for d in DATASETS if d in fz]
    above_best, below_best, above_t, below_t = [], [], [], []
    for d in natural:
        llkd = score(fz, d, "autodev", "llkd")
        best = max(("all", "soft"), key=lambda m: score(fz, d, "autodev", m))
        gap = round(llkd - score(fz, d, "autodev", best), 3)
        (above_best if gap >= 0 else below_best).append(f"{NAMES[d]} {signed(gap)} vs `{best}`")
        t = round(llkd - score(fz, d, "autodev", "teacher"), 3)
        (above_t if t > 0 else below_t).append(f"{NAMES[d]} ({signed(t)})")
        v[f"fz.{d}.llkd"] = f"{llkd:.3f}"
        v[f"fz.{d}.teacher"] = f"{score(fz, d, 'autodev', 'teacher'):.3f}"
        v[f"fz.{d}.teacher_old"] = f"{score(fz, d, 'old', 'teacher'):.3f}"
    v["fz.at_best"], v["fz.at_best_list"], v["fz.below_best_list"] = str(len(above_best)), ", ".join(above_best), ", ".join(below_best) or "none"
    v["fz.above_teacher_list"], v["fz.below_teacher_list"] = ", ".join(above_t) or "none", ", ".join(below_t) or "none"
    v["fz.seeds"] = fz["agnews"][("autodev", "llkd")]["seeds"]
    v["fz.seed_sd_max"] = f"{max(num(r['test macro-F1'].split('±')[1]) for c in fz if c != 'means' for r in fz[c].values() if '±' in r['test macro-F1']):.3f}"

    ft_cases = [c for c in ft if c != "means"]
    at_all = [c for c in ft_cases if round(score(ft, c, "autodev", "llkd") - score(ft, c, "autodev", "all"), 3) >= 0]
    v["ft.at_all"], v["ft.cases"] = str(len(at_all)), str(len(ft_cases))
    v["ft.seeds"] = ft["agnews"][("autodev", "llkd")]["seeds"]
    sds = [num(r[k].split("±")[1]) for c in ft_cases for (cfg, m), r in ft[c].items() if cfg == "autodev" and m in ("all", "llkd")
           for k in ("test macro-F1", "@pool") if k in r and "±" in r[k]]
    v["ft.sd_range"] = f"{min(sds):.3f}-{max(sds):.3f}"
    gaps = [score(ft, c, "autodev", "llkd") - score(ft, c, "autodev", "all") for c in ft_cases]
    v["ft.gap_range"] = f"{signed(min(gaps))} to {signed(max(gaps))}"
    gains = {c: round(score(ft, c, "autodev", "llkd") - score(ft, c, "old", "llkd"), 3) for c in ft_cases}
    v["ft.gain_list"] = ", ".join(f"{case_label(c)} {signed(g)}" for c, g in gains.items())
    v["ft.emotion.llkd"], v["ft.emotion.all"] = f"{score(ft, 'emotion', 'autodev', 'llkd'):.3f}", f"{score(ft, 'emotion', 'autodev', 'all'):.3f}"

    # old vs new, frozen: balanced pools, naturally skewed pools, long-tailed pools
    balanced = [d for d in natural if natural_prior(d, cal) > 0.1]  # rarest class above 10 % of the pool
    skewed = [d for d in natural if d not in balanced]
    tails = [c for c in fz if "-ir" in c]
    v["balanced_list"] = ", ".join(NAMES[d] for d in balanced)
    v["skewed_list"] = ", ".join(NAMES[d] for d in skewed)
    for cfg in ("autodev", "mean"):
        v[f"bal.{cfg}.diffs"] = ", ".join(signed(score(fz, d, cfg, "llkd") - score(fz, d, "old", "llkd")) for d in balanced)
        v[f"bal.{cfg}.mean"] = f"{mean(score(fz, d, cfg, 'llkd') for d in balanced):.3f}"
        v[f"skew.{cfg}.diffs"] = " / ".join(signed(score(fz, d, cfg, "llkd") - score(fz, d, "old", "llkd")) for d in skewed)
        tail = [score(fz, c, cfg, "llkd") - score(fz, c, "old", "llkd") for c in tails]
        v[f"tail.{cfg}.range"] = f"{signed(min(tail))} to {signed(max(tail))}"
    ahead = [c for c in [*skewed, *tails] if all(score(fz, c, cfg, "llkd") > score(fz, c, "old", "llkd") for cfg in ("autodev", "mean"))]
    v["skew.ahead"] = f"{len(ahead)} of {len(skewed) + len(tails)}"
    v["bal.old.mean"] = f"{mean(score(fz, d, 'old', 'llkd') for d in balanced):.3f}"
    v["agnews.mean_cost"] = signed(score(fz, "agnews", "mean", "llkd") - score(fz, "agnews", "old", "llkd"))
    v["agnews.mean_teacher_cost"] = signed(score(fz, "agnews", "mean", "teacher") - score(fz, "agnews", "old", "teacher"))
    v["tails.n"] = str(len(tails))
    # the guard's target, prior vs uniform, both under auto
    means = fz["means"]
    v["guard.dev.prior"], v["guard.dev.uniform"] = means[("autodev", "llkd")]["dev"], means[("autodev", "llkd+guni")]["dev"]
    v["cases.n"] = str(len([c for c in fz if c != "means"]))
    wins = {c: round(score(fz, c, "autodev", "llkd+guni") - score(fz, c, "autodev", "llkd"), 3) for c in fz if c != "means"}
    uni = sorted((c for c in wins if wins[c] > 0), key=lambda c: -wins[c])
    pri = sorted((c for c in wins if wins[c] < 0), key=lambda c: wins[c])
    v["guard.uniform_wins"] = ", ".join(f"{case_label(c)} by {wins[c]:.3f}" for c in uni[:2])
    v["guard.prior_wins"] = ", ".join(f"{case_label(c)} by {-wins[c]:.3f}" for c in pri[:2])
    v["guard.counts"] = f"{len(uni)} / {len(pri)} / {len(wins) - len(uni) - len(pri)}"


# -- teacher calibrators ------------------------------------------------------------------------
CALIBRATORS = [("none", "`none`"), ("balanced", "`balanced` (old default)"), ("mean", "`mean` (default without dev)"),
               ("prior", "`prior` from votes (no labels)"), ("prior@dev", "`prior` from dev (calibrated EM)"),
               ("em", "`em` (reference)"), ("auto@dev", "**`auto` with dev (default)**")]


def _cal_score(r: dict, name: str, metric: str | None = None) -> float:
    return r["scores"][name][metric or ("test@pool" if r["ratio"] else "test")]


def calibration(cal: list[dict], v: dict) -> str:
    teachers = list(dict.fromkeys(r["teacher"] for r in cal))
    per = {t: [r for r in cal if r["teacher"] == t] for t in teachers}
    head = ["calibrator", *(f"{TEACHERS.get(t, t)} ({len(per[t])} cases)" for t in teachers), f"cases at the bar (of {len(cal)})",
            "pool-side macro-F1 (all cases)"]
    lines = [_line(head), _align(["---", *["---:"] * (len(head) - 1)])]
    for name, label in CALIBRATORS:
        at_bar = len(cal) - len(calibration_table.criterion(cal, name))
        cells = [f"{mean(_cal_score(r, name) for r in per[t]):.3f}" for t in teachers]
        cells += [str(at_bar), f"{mean(_cal_score(r, name, 'pool') for r in cal):.3f}"]
        if name == "auto@dev":
            cells = [f"**{c}**" for c in cells]
        lines.append(_line([label, *cells]))
        v[f"cal.bar.{name}"] = str(at_bar)
        v[f"cal.pool.{name}"] = f"{mean(_cal_score(r, name, 'pool') for r in cal):.3f}"
    v["cal.cases"] = str(len(cal))
    v["cal.pools"] = ", ".join(f"{TEACHERS[t]} {n:,} ({k})" for t, (n, k) in calibration_table.POOL.items())
    v["cal.misses"] = str(len(calibration_table.criterion(cal, "auto@dev")))
    miss = calibration_table.criterion(cal, "auto@dev")
    v["cal.misses_ir50"] = str(sum(" IR50 " in m for m in miss))
    v["cal.misses_ir10"] = str(sum(" IR10 " in m for m in miss))
    qwen_tails = [r for r in per["qwen2.5-1.5b"] if r["ratio"]]
    cem = [r["estimator_tv"]["calibrated_em@dev"] for r in qwen_tails if r["dataset"] in ("agnews", "sst2")]
    cem_mag = [r["estimator_tv"]["calibrated_em@dev"] for r in qwen_tails if r["dataset"] == "mag"]
    v["cal.cem_range"] = f"{min(cem):.3f}-{max(cem):.3f}"
    v["cal.cem_mag_range"] = f"{min(cem_mag):.3f}-{max(cem_mag):.3f}"
    v["cal.votes_tv"] = ", ".join(f"{TEACHERS[t]} {mean(r['estimator_tv']['votes'] for r in per[t]):.2f}" for t in teachers)
    for t in teachers:
        for name in ("mean", "prior", "balanced", "auto@dev"):
            v[f"cal.{t}.{name}"] = f"{mean(_cal_score(r, name) for r in per[t]):.3f}"
    return "\n".join(lines)


# -- the archive: tables measured under the old defaults ---------------------------------------
H_VAR5 = "The variants tried, and why each was not adopted"
H_SEEDS5 = "Five seeds: the acceptance table with seeds 0-4"
H_STRESS5 = "Fine-tuned stress suite on the other four datasets"
H_PROBE = "A probe of the SST-2 explanation: three epochs"
H_FT2K3 = "Fine-tuned tier, Qwen2.5-1.5B, pool 2,000, 1 epoch, 3 seeds: the issue's acceptance table"
H_GEMMA = "Frozen tier, the third teacher (Gemma-3-270M, pool 300, test 500, 5 seeds)"
H_BAL = "The default changes to `llkd+bal`: chosen on dev"
H_FZ5 = "Frozen tier at 5 seeds (SmolLM2-135M; pool 2,000, 20 epochs) with `all@matched`"
H_STRESS3 = "Stress suite, both tiers (test macro-F1; the dev versions gave the choice above)"
H_STUDENTS = "Students that learn on a CPU budget"
H_VAR2 = "LLKD variants, frozen tier (SmolLM2-135M teacher, balanced calibration)"
# The archived tables the page reads: name -> (heading in the old page, which table under it:
# its position, or the first cells of its header).
ARCHIVE_TABLES: dict[str, tuple[str, int | list[str]]] = {
    "ft2k_claim": (H_SEEDS5, 0), "ft2k_every": (H_SEEDS5, 1),
    "fz5": (H_FZ5, 0),
    "stress_ft5": (H_STRESS5, 0),
    "stress_fz_smol": (H_STRESS3, 0), "stress_fz_qwen": (H_STRESS3, 1), "stress_ft_mag": (H_STRESS3, 2),
    "probe_sst2": (H_PROBE, 0),
    "emotion_per_class": (H_FT2K3, ["dataset", "pseudo-label"]),
    "head_lr": (H_STUDENTS, 0), "bound": (H_STUDENTS, 1),
    "var_ft": (H_VAR5, 1), "var_tglobal": (H_VAR5, 2),
    "var_gemma": (H_GEMMA, 0),
    "var_frozen": (H_VAR2, 0),
    "var_bal": (H_BAL, 0),
}
ARCHIVE_ABOUT = ("The tables results_page.py reads from the last lab-notebook page, copied cell for cell "
                 "(header, alignment row, body rows and the `Seeds [...]` footnote line as written): "
                 "git show {rev}:docs/results.md, the section (heading) and position named with each table. "
                 "Written once by `python benchmarks/scripts/results_page.py --extract-archive`.")
ARCHIVE_MEASURED = ("Dated passes of 2026-11-29 to 2026-12-01, under the defaults of then: teacher answers "
                    "calibrated with --calibration balanced, class balance toward uniform (class_balance_target "
                    "uniform, 1/C); run folders not kept. bound is gold-label `supervised` runs only; head_lr is "
                    "`supervised` rows plus `all` rows on teacher answers.")
FZ5_ROWS = ["llkd+bal", "llkd-paper", "all", "all@matched", "soft", "random", "fixed", "freematch", "teacher_adaptive", "student_adaptive"]


def stress_cells(t: Table, selector: str) -> list[tuple[str, str, float]]:
    """(noise, dataset, selector − all) for every cell of a tier_tables.py stress table, from
    its rounded cells."""
    out = []
    for col in (c for c in t.head if ": " in c):
        dataset, sels = col.split(": ", 1)
        order = sels.split(" / ")
        for r in t.rows:
            vals = dict(zip(order, (num(x) for x in dict(zip(t.head, r))[col].split(" / "))))
            out.append((r[0], dataset, round(vals[selector] - vals["all"], 3)))
    return out


def stress_worst(t: Table, selector: str) -> float:
    """The table's own `worst (selector − all)` column (computed by tier_tables.py before rounding)."""
    worst = []
    for r in t.rows:
        for part in r[-1].split(", "):
            name, _, value = part.rpartition(" ")
            if name == selector:
                worst.append(num(value))
    return min(worst)


def extract_archive(text: str, rev: str = ARCHIVE_REV) -> dict:
    """The ARCHIVE_TABLES of the old page's text, as the archive file's content."""
    sections = parse_sections(text)
    out: dict = {"about": ARCHIVE_ABOUT.format(rev=rev[:7]), "source": f"git show {rev}:docs/results.md", "rev": rev,
                 "measured_under": ARCHIVE_MEASURED, "tables": {}}
    for name, (heading, pick) in ARCHIVE_TABLES.items():
        found = tables(sections, heading)
        index = pick if isinstance(pick, int) else next(i for i, t in enumerate(found) if t.head[:len(pick)] == pick)
        t = found[index]
        out["tables"][name] = {"section": heading, "index": index, "head": t.head, "align": t.align, "rows": t.rows,
                               "note": t.note}
    return out


def dump_archive(data: dict) -> str:
    """JSON with one line per table row (small diffs, readable)."""
    def enc(x, pad: str) -> str:
        if isinstance(x, dict):
            inner = pad + " "
            return "{\n" + ",\n".join(f"{inner}{json.dumps(k)}: {enc(v, inner)}" for k, v in x.items()) + "\n" + pad + "}"
        if isinstance(x, list) and x and isinstance(x[0], list):
            return "[\n" + ",\n".join(pad + "  " + json.dumps(r, ensure_ascii=False) for r in x) + "\n" + pad + "]"
        return json.dumps(x, ensure_ascii=False)
    return enc(data, "") + "\n"


def extract_main(path: Path, check: bool) -> int:
    """--extract-archive: the only git call. Writes the archive file, or under --check compares."""
    try:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{ARCHIVE_REV}:docs/results.md"], check=True,
                              capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"results_page: cannot read docs/results.md at {ARCHIVE_REV[:7]} from git history "
                         f"(a shallow clone? `git fetch --unshallow`): {e}") from e
    out = dump_archive(extract_archive(text))
    if check:
        if not path.exists() or path.read_text(encoding="utf-8") != out:
            print(f"results_page: error: {path} is not what {ARCHIVE_REV[:7]}:docs/results.md gives", file=sys.stderr)
            return 1
        print(f"{path} matches {ARCHIVE_REV[:7]}:docs/results.md")
        return 0
    path.write_text(out, encoding="utf-8")
    print(f"wrote {path} ({len(out.encode())} bytes, {len(ARCHIVE_TABLES)} tables)")
    return 0


def archive_values(a: dict[str, Table], v: dict, blocks: dict) -> None:
    claim, every = a["ft2k_claim"], a["ft2k_every"]
    blocks["table.ft2k_claim"] = claim.md() + "\n\n" + claim.note
    blocks["table.ft2k_every"] = every.md()
    v["ft2k.bar"] = re.search(r"≥ all − 0\.02 on (\d+/\d+)", claim.note).group(1)
    v["ft2k.claim"] = re.search(r"gradient samples on (\d+/\d+)", claim.note).group(1)
    gaps = {}
    for r in claim.rows:
        row = dict(zip(claim.head, r))
        d = row["dataset"]
        gaps[d] = round(num(row["llkd"]) - num(row["its F1"]), 3)
        v[f"ft2k.{d}.gap"], v[f"ft2k.{d}.best"], v[f"ft2k.{d}.share"] = signed(gaps[d]), row["best baseline"], row["grad share of all"]
        v[f"ft2k.{d}.teacher"] = row["teacher"]
    v["ft2k.at_best_list"] = ", ".join(f"{NAMES[d]} {signed(g)} vs `{v[f'ft2k.{d}.best']}`" for d, g in gaps.items() if g >= 0)
    v["ft2k.below_list"] = ", ".join(f"{NAMES[d]} {signed(g)} vs `{v[f'ft2k.{d}.best']}`" for d, g in gaps.items() if g < 0)
    shares = [num(dict(zip(claim.head, r))["grad share of all"]) for r in claim.rows]
    v["ft2k.share_range"] = f"{min(shares):.0f}-{max(shares):.0f} %"
    matched = [num(dict(zip(claim.head, r))["llkd"]) - num(dict(zip(claim.head, r))["all@matched"]) for r in claim.rows]
    v["ft2k.matched_range"] = f"{signed(min(matched))} to {signed(max(matched))}"
    tests = {r[0]: num(dict(zip(every.head, r))["mean test"]) for r in every.rows}
    devs = {r[0]: num(dict(zip(every.head, r))["mean dev"]) for r in every.rows}
    rnd = [pair(every.cell("llkd", f"{d} dev / test"))[1] - pair(every.cell("random", f"{d} dev / test"))[1] for d in DATASETS]
    v["ft2k.random_range"] = f"{signed(min(rnd))} to {signed(max(rnd))}"
    v["ft2k.n_methods"] = str(len(every.rows))
    v["ft2k.llkd.test"], v["ft2k.llkd.dev"] = f"{tests['llkd']:.3f}", f"{devs['llkd']:.3f}"
    v["ft2k.best_test"] = max(tests, key=tests.get)
    v["ft2k.best_dev"] = max(devs, key=devs.get)
    runner_up = max((m for m in tests if m != "llkd"), key=tests.get)
    v["ft2k.runner_up"] = f"`{runner_up}` {devs[runner_up]:.3f} / {tests[runner_up]:.3f}"
    v["ft2k.all"] = f"{devs['all']:.3f} / {tests['all']:.3f}"
    v["ft2k.paper"] = f"{devs['llkd-paper']:.3f} / {tests['llkd-paper']:.3f}"
    v["ft2k.paper.csabstruct"] = f"{pair(every.cell('llkd-paper', 'csabstruct dev / test'))[1]:.3f}"
    ta = [d for d in DATASETS if pair(every.cell("llkd", f"{d} dev / test"))[1] > pair(every.cell("teacher_adaptive", f"{d} dev / test"))[1]]
    v["ft2k.above_ta"] = f"{len(ta)} of {len(DATASETS)}"
    v["ft2k.ta_used"] = every.cell("teacher_adaptive", "data used")
    v["ft2k.llkd_used"] = every.cell("llkd", "data used")

    fz5 = a["fz5"]
    blocks["table.fz5"] = fz5.md(FZ5_ROWS)
    fz = {r[0]: dict(zip(fz5.head, r)) for r in fz5.rows}
    v["fz5.matched"] = f"{num(fz['all@matched']['mean dev']):.3f} / {num(fz['all@matched']['mean test']):.3f}"
    v["fz5.bal"] = f"{num(fz['llkd+bal']['mean dev']):.3f} / {num(fz['llkd+bal']['mean test']):.3f}"
    v["fz5.all"] = f"{num(fz['all']['mean dev']):.3f} / {num(fz['all']['mean test']):.3f}"
    v["fz5.best_dev"] = max(fz, key=lambda m: num(fz[m]["mean dev"]))
    v["fz5.best_test"] = max(fz, key=lambda m: num(fz[m]["mean test"]))

    # stress: fine-tuned (fifth pass, four datasets; MAG from the third pass), frozen (third pass)
    st5 = a["stress_ft5"]
    ft_cells = [c for c in stress_cells(st5, "llkd") if c[0] != "none (clean)"]
    frozen_smol, frozen_qwen, ft_mag = a["stress_fz_smol"], a["stress_fz_qwen"], a["stress_ft_mag"]
    ft_cells += [c for c in stress_cells(ft_mag, "llkd+bal") if c[0] != "none (clean)"]
    v["stress.ft.n"] = str(len(ft_cells))
    v["stress.ft.ok"] = str(sum(c[2] >= -0.02 for c in ft_cells))
    v["stress.ft.range"] = f"{signed(min(c[2] for c in ft_cells))} to {signed(max(c[2] for c in ft_cells))}"
    biased = [c[2] for c in ft_cells if c[0].startswith("biased")]
    v["stress.ft.biased_range"] = f"{signed(min(biased))} to {signed(max(biased))}"
    for key, t in (("smol", frozen_smol), ("qwen", frozen_qwen)):
        cells = stress_cells(t, "llkd+bal")
        v[f"stress.fz.{key}.n"], v[f"stress.fz.{key}.ok"] = str(len(cells)), str(sum(c[2] >= -0.02 for c in cells))
        v[f"stress.fz.{key}.worst"] = signed(stress_worst(t, "llkd+bal"))
        v[f"stress.fz.{key}.paper_worst"] = signed(stress_worst(t, "llkd-paper"))

    probe = a["probe_sst2"]
    for m in ("llkd", "all", "soft"):
        v[f"probe.{m}"] = f"{num(probe.cell(m, 'mean')):.3f}"
    v["probe.ft2k_gap_all"] = signed(pair(every.cell("llkd", "sst2 dev / test"))[1] - pair(every.cell("all", "sst2 dev / test"))[1])

    per_class = a["emotion_per_class"]
    s = {r[1]: dict(zip(per_class.head, r)) for r in per_class.rows}["surprise"]
    v["emotion.surprise"] = (f"{num(s['gold share']) * 100:.0f} % of the pool, {num(s['predicted share']) * 100:.0f} % of its answers, "
                             f"{num(s['accuracy']) * 100:.0f} % of those right")
    v["emotion.surprise_keeps"] = f"{s['class-mean keeps (acc)']} where `fixed` keeps {s['fixed 0.7 keeps (acc)']}"

    lr, bound = a["head_lr"], a["bound"]
    blocks["table.bound"] = bound.md()
    col = next(c for c in bound.head if c.startswith("frozen head, pool 2,000"))
    for d in DATASETS:
        v[f"bound.fz2000.{d}"] = f"{num(bound.cell(d, col)):.3f}"
    lrs = lr.head[3:]
    tier_of = ["finetune" if r[0].startswith("finetune") else "frozen" for r in lr.rows]
    for tier in ("finetune", "frozen"):
        rows = [r for r, t in zip(lr.rows, tier_of) if t == tier]
        means = [mean(num(r[3 + k]) for r in rows) for k in range(len(lrs))]
        best = max(range(len(lrs)), key=lambda k: means[k])
        v[f"lr.{tier}.means"] = " / ".join(f"**{x:.3f}**" if k == best else f"{x:.3f}" for k, x in enumerate(means))
        v[f"lr.{tier}.best"] = lrs[best].replace("head lr ", "")
    v["lr.grid"] = " / ".join(x.replace("head lr ", "") for x in lrs)

    # variants (for the table of what was tried and dropped)
    ftv, tg = a["var_ft"], a["var_tglobal"]
    for m in ("llkd", "llkd+tglobal", "llkd+soft"):
        v[f"var.ft.{m}.dev"] = ftv.cell(m, "mean dev")
    v["var.ft.emotion.tglobal"] = ftv.cell("llkd+tglobal", "emotion dev / test")
    v["var.ft.emotion.llkd"] = ftv.cell("llkd", "emotion dev / test")
    v["var.ft.soft_below"] = str(sum(pair(ftv.cell("llkd+soft", f"{d} dev / test"))[1] < pair(ftv.cell("llkd", f"{d} dev / test"))[1] for d in DATASETS))
    tgr = {r[0]: dict(zip(tg.head, r)) for r in tg.rows}
    lost = [t for t, r in tgr.items() if pair(r["llkd+tglobal dev / test"])[0] < pair(r["llkd dev / test"])[0]]
    v["var.fz.tglobal_lost"] = f"{len(lost)} of {len(tgr)}"
    g = tgr["Gemma-3-270M"]
    v["var.fz.gemma"] = f"{pair(g['llkd+tglobal dev / test'])[0]:.3f} vs {pair(g['llkd dev / test'])[0]:.3f}"
    gemma = a["var_gemma"]
    v["var.floor4"] = f"{gemma.cell('llkd+floor4', 'mean dev')} vs {gemma.cell('llkd', 'mean dev')}"
    var2 = a["var_frozen"]
    v["var.lu"] = f"{var2.cell('llkd+lu', 'mean dev')} vs {var2.cell('llkd', 'mean dev')}"
    v["var.lu_worse"] = str(sum(pair(var2.cell("llkd+lu", f"{d} dev / test"))[0] < pair(var2.cell("llkd", f"{d} dev / test"))[0] for d in DATASETS))
    v["var.batch"] = f"{var2.cell('llkd+batch', 'mean dev')} vs {var2.cell('llkd', 'mean dev')}"
    bal = a["var_bal"]
    smol = {r[0]: r[1].replace("**", "").split(" / ") for r in bal.rows}
    qwen = {r[0]: r[2].replace("**", "").split(" / ") for r in bal.rows}
    v["var.nobal.clean"] = f"{smol['clean'][0]} / {smol['clean'][1]}"
    v["var.nobal.biased"] = f"{smol['biased0-0.4'][0]} / {smol['biased0-0.4'][1]} (SmolLM2), {qwen['biased0-0.4'][0]} / {qwen['biased0-0.4'][1]} (Qwen)"


# -- the first full run (old student recipe): records CSVs ---------------------------------------
def first_run(v: dict) -> str:
    recs = read_records("runs.csv")
    rows = aggregate(recs)
    teacher = recs[0]["teacher"]
    comps = [c for d in DATASETS if (c := compare(recs, d, teacher, None, 0, bootstrap=0))]
    v["first.runs"] = str(len(recs))
    v["first.seeds"] = str(len({r["seed"] for r in recs}))
    v["first.pool"] = str(recs[0]["pool_size"])
    v["first.test"] = str(recs[0]["test_size"])
    v["first.below"] = str(sum(c["losses"] == len(c["seeds"]) for c in comps))
    sens = aggregate(read_records("runs-sensitivity.csv"))
    f1 = {r["method"]: r["macro_f1"] for r in sens}
    v["first.momentum"] = f"{f1['llkd']:.3f} vs {f1['llkd/momentum=0.5']:.3f} (0.5) and {f1['llkd/momentum=0.99']:.3f} (0.99)"
    v["first.unweighted"] = f"{f1['llkd/unweighted']:.3f} vs {f1['llkd']:.3f}"
    for name in ("runs-sensitivity.csv", "runs-noise.csv", "runs-teacher-size.csv"):
        v[f"rows.{name}"] = str(len(read_records(name)))
    return summary_table(rows, comps)


# -- plots --------------------------------------------------------------------------------------
CAPTIONS = {"f1_vs_data": "macro-F1 against data used, every method, per dataset",
            "teacher_confidence_vs_accuracy": "the teacher's confidence against its accuracy, binned (paper Figure 2 analogue)",
            "student_uncertainty_vs_accuracy": "the LLKD student's uncertainty against its accuracy, binned (paper Figure 2 analogue)",
            "budget_curves": "budget curves: test macro-F1 against the share of the pool asked, every acquisition strategy, the full-pool student dotted",
            "budget_curves_10k": "the same on the 10,000-text pools (SST-2, emotion)"}


def plots() -> str:
    """One line per plot; the per-dataset threshold plots share a line."""
    out, thresholds = [], []
    for p in sorted(RESULTS.glob("*.png")):
        if p.stem.startswith("thresholds_"):
            thresholds.append(f"[{NAMES.get(p.stem[11:], p.stem[11:])}](results/{p.name})")
        else:
            out.append(f"- [{p.name}](results/{p.name}): {CAPTIONS.get(p.stem, p.stem)}")
    if thresholds:
        out.append("- LLKD's class-wise thresholds and selection rate over steps (seed 0): " + ", ".join(thresholds))
    return "\n".join(out)


# -- budget curves (docs/results/budget*.json, benchmarks/scripts/budget_table.py) ---------------
def budget(path: Path, v: dict, prefix: str, default: str | None = None) -> str:
    """The budgeted-distillation table: per dataset, the full-pool student, the strategy chosen
    on dev and ``random`` at each budget, their areas under the curve and where each reaches the
    full-pool student. Fills ``<prefix>.*`` slots. ``default``: show this strategy (the
    product default, chosen on another grid) instead of the one best on this grid's dev."""
    b = json.loads(path.read_text())
    v[f"{prefix}.best"] = b["chosen_on_dev"]
    v[f"{prefix}.n"] = str(len(b["mean_dev_auc"]))
    chosen = default or b["chosen_on_dev"]
    v[f"{prefix}.chosen"] = chosen
    ranking = sorted(b["mean_dev_auc"].items(), key=lambda kv: -kv[1])
    v[f"{prefix}.ranking"] = ", ".join(f"`{k}` {x:.4f}" for k, x in ranking)
    first = next(iter(b["datasets"].values()))["strategies"][chosen]
    heads = [f"{s:.1%}".replace(".0%", "%") for s in first["shares"]]
    lines = ["| dataset | strategy | " + " | ".join(heads) + " | full pool | test AUC | reaches full − 0.005 at |",
             "|---|---|" + "---:|" * (len(heads) + 3)]
    wins, reach = [], []
    for name, d in b["datasets"].items():
        for strategy in (chosen, "random"):
            r = d["strategies"].get(strategy)
            if r is None:
                continue
            at = f"not within {heads[-1]}" if r["reach_share"] is None else f"{r['reach_share']:.1%}"
            lines.append(f"| {NAMES.get(name, name)} | {strategy} | " + " | ".join(f"{x:.3f}" for x in r["test"]) +
                         f" | {d['full_test']:.3f} | {r['test_auc']:.4f} | {at} |")
        c, rnd = d["strategies"][chosen], d["strategies"].get("random")
        if rnd is not None and c["test_auc"] > rnd["test_auc"]:
            wins.append(NAMES.get(name, name))
        if c["reach_share"] is not None:
            reach.append(f"{NAMES.get(name, name)} at {c['reach_share']:.1%}")
        v[f"{prefix}.{name}.gap_last"] = signed(c["test"][-1] - d["full_test"])
    v[f"{prefix}.auc_wins"] = f"{len(wins)} of {len(b['datasets'])}" + (f" ({', '.join(wins)})" if wins else "")
    v[f"{prefix}.reach"] = "; ".join(reach) if reach else "none"
    v[f"{prefix}.seeds"] = str(len(first["seeds"]))
    v[f"{prefix}.gaps_last"] = ", ".join(f"{NAMES.get(n, n)} {v[f'{prefix}.{n}.gap_last']}" for n in b["datasets"])
    v[f"{prefix}.last"] = heads[-1]
    return "\n".join(lines)


# -- the page -----------------------------------------------------------------------------------
def build() -> str:
    cal = json.loads((RESULTS / "calibration.json").read_text())
    fz, ft = read_imbalance("frozen"), read_imbalance("finetune")
    rev, archive = read_archive()
    v: dict[str, str] = {"archive": rev[:7]}
    blocks: dict[str, str] = {
        "table.headline_frozen": headline_frozen(fz),
        "table.headline_finetune": headline_finetune(ft),
        "table.calibrators": calibration(cal, v),
        "table.side_by_side": side_by_side(fz, cal),
        "table.finetune_check": finetune_check(ft),
        "table.first_run": first_run(v),
        "plots": plots(),
    }
    if (RESULTS / "budget.json").exists():
        blocks["table.budget"] = budget(RESULTS / "budget.json", v, "budget")
        if (RESULTS / "budget-10k.json").exists():  # the default chosen on the pool-2,000 grid, at 10,000
            blocks["table.budget10k"] = budget(RESULTS / "budget-10k.json", v, "budget10k", default=v["budget.chosen"])
    imbalance_values(fz, ft, cal, v)
    archive_values(archive, v, blocks)
    fill = {**v, **blocks}
    text = TEXT.read_text()
    text = re.sub(r"\A<!--.*?-->\n+", "", text, flags=re.S)  # the template's own header comment

    def slot(m: re.Match) -> str:
        key = m.group(1).strip()
        if key not in fill:
            raise KeyError(f"results_page_text.md asks for {{{{{key}}}}}, which results_page.py does not compute")
        return fill[key]

    return re.sub(r"\{\{([^{}]+)\}\}", slot, text).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=PAGE)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page or a committed imbalance table is stale")
    ap.add_argument("--extract-archive", nargs="?", type=Path, const=ARCHIVE, metavar="PATH",
                    help=f"one-off, needs git history: write the tables read from {ARCHIVE_REV[:7]}:docs/results.md to PATH "
                         f"(default {ARCHIVE.relative_to(ROOT)}); with --check, compare instead")
    args = ap.parse_args(argv)
    if args.extract_archive:
        return extract_main(args.extract_archive, args.check)
    problems = check_runs(strict=args.check)
    page = build()
    if args.check:
        if not args.out.exists() or args.out.read_text() != page:
            print(f"results_page: error: {args.out} is not what the data give; run python benchmarks/scripts/results_page.py", file=sys.stderr)
            return 1
        return 1 if problems else 0
    args.out.write_text(page)
    print(f"wrote {args.out} ({page.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
