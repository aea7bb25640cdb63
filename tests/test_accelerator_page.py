"""The page for readers with an accelerator: its time estimates follow from the committed FLOP counts,
and the commands it gives are ones that `vnca` accepts."""

import json
import re
import shlex
from pathlib import Path

import pytest

from vnca.train import FULL_RUN_COST

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "book" / "accelerator.md").read_text()
FLOPS = {r["model"]: r for r in json.loads((ROOT / "benchmarks/results/models-cpu-2core.json").read_text())["results"]}
PEAKS = {"T4": 8.1, "L4": 30.3, "A100": 19.5, "H100 SXM": 66.9}  # float32 TFLOP/s, the page's header
SHARE = 0.4  # of the peak, the page's guess
TRAIN_T, COUNTED_T = 48, 36  # the non-doubling model's mean training T; its FLOPs were counted at 36


def duration(seconds: float) -> str:
    """The page's rounding: two significant figures, in the largest unit that keeps a number above 1."""
    for unit, size, limit in (("s", 1, 60), ("min", 60, 90 * 60), ("h", 3600, 48 * 3600), ("days", 86400, None)):
        if limit is None or seconds < limit:
            value = seconds / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def expected_rows() -> dict[str, list[str]]:
    names = {"baseline": "baseline", "doubling": "doubling", "nondoubling": "non-doubling"}
    rows = {}
    for model, name in names.items():
        r = FLOPS[model]
        scale = TRAIN_T / COUNTED_T if model == "nondoubling" else 1
        step = r["forward_backward_gflop_per_sample"] * r["batch"] * scale  # GFLOP per training step
        image = 128 * r["forward_gflop_per_sample"]  # GFLOP per image of the K = 128 bound
        tpu = FULL_RUN_COST[model][0]
        rows[f"{name}, 100,000 training steps"] = [
            f"{step:,.0f} per step", *(duration(1e5 * step / (SHARE * 1e3 * p)) for p in PEAKS.values()),
            f"{tpu}, measured"]
        rows[f"{name}, test bound of 10,000 images"] = [
            f"{image:,.0f} per image", *(duration(1e4 * image / (SHARE * 1e3 * p)) for p in PEAKS.values()),
            "not estimated"]
    return rows


def page_table() -> tuple[list[str], dict[str, list[str]]]:
    lines = [line for line in PAGE.splitlines() if line.startswith("| | GFLOP")]
    assert len(lines) == 1
    start = PAGE.splitlines().index(lines[0])
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in PAGE.splitlines()[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return header, rows


def test_the_time_table_follows_from_the_committed_flop_counts_and_the_peaks():
    header, rows = page_table()
    assert header[2:6] == [f"{name} ({peak} TFLOP/s)" if name == "T4" else f"{name} ({peak})"
                           for name, peak in PEAKS.items()]
    assert rows == expected_rows()


def test_the_t4_estimates_announced_by_a_full_run_are_the_pages():
    _, rows = page_table()
    for model, name in (("baseline", "baseline"), ("doubling", "doubling"), ("nondoubling", "non-doubling")):
        assert FULL_RUN_COST[model][1] == rows[f"{name}, 100,000 training steps"][1]


def test_duration_rounding():
    assert [duration(s) for s in (29.4, 110, 825, 4142, 9971, 49703, 185917)] == [
        "29 s", "1.8 min", "14 min", "69 min", "2.8 h", "14 h", "2.2 days"]


@pytest.mark.parametrize("kind", ["train", "evaluate"])
def test_the_pages_commands_parse_and_name_each_models_run(kind, tmp_path):
    from vnca.cli import parser

    lines = [line.split("#")[0].strip() for line in PAGE.splitlines() if line.startswith(f"vnca {kind} ")]
    runs = []
    for line in lines:
        words = shlex.split(line.replace("$RUNS", str(tmp_path)))[1:]
        arguments = parser().parse_args(words)  # argparse exits on anything it does not accept
        assert arguments.command == kind
        runs.append(re.search(r"/(\w+)-full", line).group(1))
        if kind == "train":
            assert arguments.model == runs[-1] and arguments.profile in (None, "full")
        else:
            assert arguments.out == tmp_path / "results" / f"{runs[-1]}.json"
    assert runs == ["baseline", "doubling", "nondoubling"]
