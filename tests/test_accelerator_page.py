"""The page for readers with an accelerator: its time estimates follow from the committed FLOP counts,
and the commands it gives are ones that `vnca` accepts."""

import json
import re
import shlex
from pathlib import Path

import pytest

from vnca.recipes import FULL_RUN_COST

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "book" / "accelerator.md").read_text()
FLOPS = {r["model"]: r for r in json.loads((ROOT / "benchmarks/results/models-cpu-2core.json").read_text())["results"]}
PEAKS = {"T4": 8.1, "T4 x2": 16.2, "L4": 30.3, "A100": 19.5, "H100 SXM": 66.9}  # float32 TFLOP/s, the header
SHARE = 0.4  # of a GPU's float32 peak, the page's guess
# bfloat16 TFLOP/s, the header: a v5e chip 197, a v3 chip 123 (the v3-8 has four). A TPU estimate is the
# v3-8's measured time with the v5e reaching the v3-8's share of its peak: FLOPs / (share x peak).
TPU_PEAKS = {"TPU v5e-1": 197, "TPU v5e-8": 8 * 197}
V3_8 = 4 * 123
TRAIN_T, COUNTED_T = 48, 36  # the non-doubling model's mean training T; its FLOPs were counted at 36
NAMES = {"baseline": "baseline", "doubling": "doubling", "nondoubling": "non-doubling"}
# the cost notice's machines, as the page's columns
NOTICE_COLUMNS = {"Colab T4": "T4", "Kaggle T4 x2": "T4 x2", "Colab TPU v5e-1": "TPU v5e-1",
                  "Kaggle TPU v5e-8": "TPU v5e-8", "TPU v3-8": "TPU v3-8"}


def seconds(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"s": 1, "min": 60, "h": 3600, "days": 86400}[unit]


def duration(seconds: float) -> str:
    """The page's rounding: two significant figures, in the largest unit that keeps a number above 1."""
    for unit, size, limit in (("s", 1, 60), ("min", 60, 90 * 60), ("h", 3600, 48 * 3600), ("days", 86400, None)):
        if limit is None or seconds < limit:
            value = seconds / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


def step_gflop(model: str) -> float:
    r = FLOPS[model]
    scale = TRAIN_T / COUNTED_T if model == "nondoubling" else 1
    return r["forward_backward_gflop_per_sample"] * r["batch"] * scale  # GFLOP per training step


def v3_share(model: str) -> float:
    """The share of the v3-8's bfloat16 peak that the reproduction's measured run reached."""
    return 1e5 * step_gflop(model) / (seconds(FULL_RUN_COST[model]["TPU v3-8"]) * V3_8 * 1e3)


def expected_rows() -> dict[str, list[str]]:
    rows = {}
    for model, name in NAMES.items():
        step = step_gflop(model)
        image = 128 * FLOPS[model]["forward_gflop_per_sample"]  # GFLOP per image of the K = 128 bound
        tpu = [duration(1e5 * step / (v3_share(model) * 1e3 * p)) for p in TPU_PEAKS.values()]
        rows[f"{name}, 100,000 training steps"] = [
            f"{step:,.0f} per step", *(duration(1e5 * step / (SHARE * 1e3 * p)) for p in PEAKS.values()),
            *tpu, f"{FULL_RUN_COST[model]['TPU v3-8']}, measured"]
        rows[f"{name}, test bound of 10,000 images"] = [
            f"{image:,.0f} per image", *(duration(1e4 * image / (SHARE * 1e3 * p)) for p in PEAKS.values()),
            *["not estimated"] * 3]
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
    assert header[2:] == [f"{name} ({peak} TFLOP/s)" if name == "T4" else f"{name} ({peak})"
                          for name, peak in PEAKS.items()] + [
        "TPU v5e-1 (197, bfloat16)", "TPU v5e-8 (1,576)", "TPU v3-8 (492)"]
    assert rows == expected_rows()


def test_the_pages_tpu_method_is_the_one_it_describes():
    """The shares of the v3-8's peak that the page quotes, and the ratios of the peaks it applies."""
    shares = [f"{100 * v3_share(m):.1f}%" if v3_share(m) < 0.01 else f"{100 * v3_share(m):.0f}%" for m in NAMES]
    assert shares == ["0.9%", "21%", "14%"]
    text = " ".join(PAGE.split())
    assert (f"are {shares[0]} of its peak for the baseline" in text and f"{shares[1]} for the doubling model"
            in text and f"{shares[2]} for the non-doubling one" in text)
    assert f"a v5e-8 ({V3_8 / TPU_PEAKS['TPU v5e-8']:.2f})" in text
    assert f"on a v5e-1 ({V3_8 / TPU_PEAKS['TPU v5e-1']:.1f})" in text


def test_the_estimates_announced_by_a_full_run_are_the_pages():
    header, rows = page_table()
    for model, name in NAMES.items():
        cost = FULL_RUN_COST[model]
        assert list(cost) == ["TPU v3-8", "Kaggle TPU v5e-8", "Colab TPU v5e-1", "Kaggle T4 x2", "Colab T4"]
        row = dict(zip(header[1:], rows[f"{name}, 100,000 training steps"]))
        for machine, column in NOTICE_COLUMNS.items():
            (page,) = [value for head, value in row.items() if head.split(" (")[0] == column]
            assert page.removesuffix(", measured") == cost[machine], (model, machine)


def test_the_machines_table_gives_each_machines_devices_batch_and_times():
    """Kaggle's and Colab's machines: devices, the batch each device takes, and the times of the
    time table below it (which the tests above check against the FLOP counts)."""
    lines = [line for line in PAGE.splitlines() if re.match(r"\| (Kaggle|Colab) (TPU|T4)", line)]
    machines = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        machines[cells[0]] = cells[1:]
    assert list(machines) == ["Kaggle TPU v5e-8", "Kaggle T4 x2", "Colab TPU v5e-1", "Colab T4"]
    from vnca.recipes import train_config

    for machine, (devices, batch, _, remat, times) in machines.items():
        count = int(devices.split()[0])
        assert count == {"Kaggle TPU v5e-8": 8, "Kaggle T4 x2": 2}.get(machine, 1)
        expected_batch = [train_config(m, "full").batch_size // count for m in ("doubling", "nondoubling")]
        assert batch == ", ".join(map(str, expected_batch)), machine
        assert times == ", ".join(FULL_RUN_COST[m][machine] for m in NAMES), machine
        assert remat == ("off" if count > 1 else "on, for the non-doubling model"), machine
    assert "16 GiB" in machines["Colab TPU v5e-1"][0] and "8 chips, 16 GiB each" in machines["Kaggle TPU v5e-8"][0]


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


def test_the_introductions_machine_table_gives_the_same_times():
    intro = (ROOT / "book" / "intro.md").read_text()
    header = next(line for line in intro.splitlines() if line.startswith("| | a 2-core laptop CPU"))
    row = next(line for line in intro.splitlines() if line.startswith("| the paper's 100,000 steps"))
    columns = [c.strip() for c in header.strip().strip("|").split("|")][1:]
    cells = dict(zip(columns, [c.strip() for c in row.strip().strip("|").split("|")][1:]))
    for column, machine in (("a Colab GPU (T4)", "Colab T4"), ("a Colab TPU v5e-1", "Colab TPU v5e-1"),
                            ("a Kaggle TPU v5e-8", "Kaggle TPU v5e-8")):
        expected = ", ".join(f"{name} {FULL_RUN_COST[model][machine]}" for model, name in NAMES.items())
        assert cells[column].startswith(f"estimate: {expected}"), column
    measured = ", ".join(FULL_RUN_COST[model]["TPU v3-8"] for model in NAMES)
    assert f"(the v3-8, measured: {measured})" in cells["a Kaggle TPU v5e-8"]
