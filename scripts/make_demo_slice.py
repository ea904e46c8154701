"""Write the bundled AG News demo slice (reproducible: fixed seed) from ../shared/data/agnews.

Pool texts come from the training side (alps_dev.tsv, drawn from AG News train) with the gold
label dropped; test texts come from the original test set with gold labels for evaluation.
"""

import csv
import json
import random
import sys
from pathlib import Path

src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/agnews")
out = Path(__file__).resolve().parents[1] / "src/llkd/resources/demo"


def rows(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return [(r[0].replace("\\", " ").strip(), r[1]) for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(r) == 2]


rng = random.Random(13)
pool = rng.sample(rows(src / "alps_dev.tsv"), 400)
test = rng.sample(rows(src / "alps_test.tsv"), 300)
out.mkdir(parents=True, exist_ok=True)
with open(out / "agnews_pool.jsonl", "w", encoding="utf-8") as f:
    for i, (text, _) in enumerate(pool):
        f.write(json.dumps({"id": f"pool-{i}", "text": text}) + "\n")
with open(out / "agnews_test.jsonl", "w", encoding="utf-8") as f:
    for i, (text, label) in enumerate(test):
        f.write(json.dumps({"id": f"test-{i}", "text": text, "label": label}) + "\n")
# A small labelled dev split from the pool side (texts not in the pool), drawn after the pool and
# test so those stay as they were: calibration auto chooses the teacher's calibrator on it.
taken = {t for t, _ in pool}
dev = random.Random(14).sample([r for r in rows(src / "alps_dev.tsv") if r[0] not in taken], 100)
with open(out / "agnews_dev.jsonl", "w", encoding="utf-8") as f:
    for i, (text, label) in enumerate(dev):
        f.write(json.dumps({"id": f"dev-{i}", "text": text, "label": label}) + "\n")
print(f"wrote {len(pool)} pool, {len(test)} test and {len(dev)} dev texts to {out}")
