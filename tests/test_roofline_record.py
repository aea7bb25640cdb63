"""The evaluation chapter's table of evaluation speed against the CPU's throughput says what its
record (`benchmarks/results/roofline-cpu-2core.json`, written by `benchmarks/roofline.py`) holds."""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_evaluation_chapters_roofline_table_is_its_record():
    record = json.loads((ROOT / "benchmarks" / "results" / "roofline-cpu-2core.json").read_text())
    chapter = (ROOT / "book" / "evaluate.md").read_text()
    peak = record["throughput"]
    assert f"{peak['matmul_gflops']:.0f} GFLOP/s on a float32 matrix product" in chapter
    assert f"{peak['conv3x3_gflops']:.0f} on the NCA's own 3x3 convolution" in chapter
    rows = {m.group(1): m.group(2, 3, 4, 5, 6) for m in re.finditer(
        r"^\| (\S+-laptop) \| ([\d.]+) \| ([\d.]+) min \| ([\d.]+) \| (\d+) \| ([\d.]+) min \|$", chapter, re.M)}
    assert sorted(rows) == sorted(r["model"] for r in record["rows"])
    for r in record["rows"]:
        per_s, test_set, gflop, reached, least = rows[r["model"]]
        assert abs(float(per_s) - r["images_per_s"]) <= 0.05 + 0.001 * r["images_per_s"]
        assert abs(float(test_set) - r["test_set_s"] / 60) <= 0.05
        assert abs(float(gflop) - r["gflop_per_image"]) <= 0.05
        assert abs(float(reached) - r["achieved_gflops"]) <= 0.5
        assert abs(float(least) - r["least_test_set_s"] / 60) <= 0.05
