"""The comparison and sweep reports computed from rows the test writes itself."""

import json
import math
import re

import pytest
from PIL import Image

from worker.report.analysis import compare_runs
from worker.report.metrics import TIMING_NOISE_BAND, find_measure, measures
from worker.report.render import markdown
from worker.report.stage import build_report
from worker.report.stats import paired_bootstrap_difference, t_interval, t_quantile

LORA = {
    "train_time_s": 100.0, "samples_per_s": 50.0, "peak_gpu_mem_mb": 6000.0, "peak_gpu_reserved_mb": 6500.0,
    "peak_ram_mb": 3000.0, "weight_memory_mb": 800.0, "trainable_params": 1_000_000, "total_params": 200_000_000,
    "best_val_loss": 0.5, "i2t_recall@1": 0.9, "i2t_recall@5": 0.7, "i2t_recall@10": 1,
    "t2i_recall@1": 0.9667, "t2i_recall@5": 0.65, "t2i_recall@10": 0.75,
}  # fmt: skip
QLORA = {**LORA, "train_time_s": 150.0, "samples_per_s": 40.0, "peak_gpu_mem_mb": 4500.0,
         "weight_memory_mb": 250.0, "best_val_loss": 0.55, "i2t_recall@1": 0.30}  # fmt: skip


def row(id_, method, metrics, seed=42, stage="train", **extra):
    return {"id": id_, "job_id": 100 + id_, "stage": stage, "peft_method": method, "status": "SUCCEEDED",
            "metrics": metrics, "cell": {"peft.method": method}, "seed": seed, **extra}  # fmt: skip


def experiments(qlora_metrics=QLORA):
    return [row(1, "lora", LORA), row(2, "qlora", qlora_metrics)]


def metric_rows():
    rows = []
    for exp_id, losses in ((1, [0.9, 0.6, 0.5]), (2, [0.95, 0.7, 0.55])):
        for epoch, loss in enumerate(losses):
            rows.append({"experiment_id": exp_id, "split": "val", "epoch": epoch, "step": None,
                         "name": "val_loss", "value": loss})  # fmt: skip
    return rows


def seeded(lora_values, qlora_values, metric="best_val_loss"):
    """One train row per method and seed, differing from LORA only in `metric`."""
    rows = []
    for seed, (a, b) in enumerate(zip(lora_values, qlora_values, strict=True)):
        rows.append(row(2 * seed + 1, "lora", {**LORA, metric: a}, seed=seed))
        rows.append(row(2 * seed + 2, "qlora", {**LORA, metric: b}, seed=seed))
    return rows


def test_t_quantile_matches_closed_forms():
    # Student t with 1 and 2 degrees of freedom has closed-form quantiles.
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-6)
    p = 0.975
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-6)
    # Large df tends to the normal quantile 1.959964.
    assert t_quantile(0.975, 1_000_000) == pytest.approx(1.959964, abs=1e-4)


def test_t_interval_over_seeds():
    values = [0.5, 0.6, 0.7]
    interval = t_interval(values)
    half = t_quantile(0.975, 2) * 0.1 / math.sqrt(3)
    assert (interval.mean, interval.low, interval.high) == pytest.approx((0.6, 0.6 - half, 0.6 + half))
    single = t_interval([0.5])
    assert single.low is None and single.high is None and single.over == "1 seed"


def test_every_number_and_its_experiment_ids_in_the_json(tmp_path):
    result = build_report(experiments(), metric_rows(), tmp_path, compare_job_id=7, report_job_id=9)
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["compare_job_id"], report["report_job_id"]) == (7, 9)
    table = {r["metric"]: r for r in report["table"]}
    assert set(table) == set(LORA)
    for metric, lora_value in LORA.items():
        lora, qlora = table[metric]["cells"]
        assert (lora["label"], qlora["label"]) == ("LoRA", "QLoRA")
        assert lora["mean"] == pytest.approx(lora_value) and qlora["mean"] == pytest.approx(QLORA[metric])
        assert lora["experiment_ids"] == [1] and qlora["experiment_ids"] == [2]
        assert table[metric]["ratio"] == pytest.approx(QLORA[metric] / lora_value)
        assert table[metric]["difference"] is None  # one seed: no interval
    assert report["cells"][1]["experiments"] == {"42": {"train": {"id": 2, "job_id": 102}}}
    assert report["curves"]["LoRA"]["val_loss"] == [[0, 0.9], [1, 0.6], [2, 0.5]]
    assert report["missing"] == []
    assert result.artifacts["html"].endswith("report.html")
    assert Image.open(result.artifacts["loss_curves"]).size[0] > 300


def test_the_page_follows_the_formatting_rules(tmp_path):
    build_report(experiments(), metric_rows(), tmp_path, compare_job_id=19, report_job_id=27)
    text = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    # Both ids, named for what they are.
    assert "Report job 27 on comparison job 19" in text and "Report job 27 on comparison job 19" in page
    # Human section titles, not file names.
    titles = re.findall(r"^## (.+)$", text, flags=re.M)
    assert titles == ["Bottom line", "Results", "Conclusions", "How to read the intervals"]
    assert all("_" not in t for t in re.findall(r"<h[23]>([^<]+)</h[23]>", page))
    # Every row label has a unit, and every value in a row has exactly the measure's decimals.
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "Measure" not in line]
    assert len(rows) == len(LORA)
    for cells in rows:
        label = cells[0].removeprefix("| ")
        assert re.search(r"\(.+\)$", label), label
        measure = next(m for m in measures() if m.label == label)
        for value in cells[1:3]:
            decimals = value.split(".")[1] if "." in value else ""
            assert len(decimals) == measure.decimals, (label, value)
    recall = next(c for c in rows if c[0].startswith("| Image-to-text recall@10"))
    assert recall[1:3] == ["1.000", "1.000"]  # the recorded integer 1 prints like its column


def test_single_seed_conclusions_state_the_numbers_and_draw_no_conclusion():
    c = compare_runs(experiments(), metric_rows())
    text = " ".join(c.conclusions)
    assert ("Peak GPU memory, allocated (MB): QLoRA 4,500.0 against LoRA 6,000.0, 25% lower; one seed, not a "
            "conclusion.") in text  # fmt: skip
    assert "Throughput (samples/s): QLoRA 40.0 against LoRA 50.0, 20% lower; one seed, not a conclusion." in text
    assert "Best validation loss (nats per pair): QLoRA 0.5500 against LoRA 0.5000, 10% higher; one seed" in text
    # Without an interval no direction is a finding.
    assert not re.search(r"\((better|worse)\)| is (higher|lower) than", text)
    assert "or equal" not in text
    same = compare_runs(experiments({**QLORA, "best_val_loss": 0.50001}), [])
    assert any("QLoRA and LoRA equal to 4 decimals" in line for line in same.conclusions)


@pytest.mark.parametrize(("lora", "qlora", "expected"), [
    # 0.1% apart: inside the timing noise band, so no difference.
    (298.4, 298.1, "Throughput (samples/s): no difference (within the ±5% noise band): QLoRA 298.1 against LoRA "
                   "298.4, 0.1% lower."),
    # 4% apart: still inside the band.
    (50.0, 48.0, "Throughput (samples/s): no difference (within the ±5% noise band): QLoRA 48.0 against LoRA 50.0, "
                 "4.0% lower."),
    # 8% apart: outside the band, but one seed is still not a conclusion.
    (50.0, 46.0, "Throughput (samples/s): QLoRA 46.0 against LoRA 50.0, 8.0% lower; one seed, not a conclusion."),
])  # fmt: skip
def test_one_run_timing_inside_its_noise_band_reads_no_difference(lora, qlora, expected):
    assert find_measure("samples_per_s").noise_band == TIMING_NOISE_BAND == 0.05
    rows = [row(1, "lora", {**LORA, "samples_per_s": lora}), row(2, "qlora", {**QLORA, "samples_per_s": qlora})]
    c = compare_runs(rows, [])
    assert expected in c.conclusions
    assert "±5% noise band" in markdown(c)  # the band is stated where the intervals are explained


def test_a_measure_without_a_noise_band_stays_one_seed_not_a_conclusion():
    # The example: recall@1 0.656 against 0.657 with one seed and no per-image record.
    assert find_measure("i2t_recall@1").noise_band is None
    rows = [row(1, "lora", {**LORA, "i2t_recall@1": 0.657}), row(2, "qlora", {**QLORA, "i2t_recall@1": 0.656})]
    c = compare_runs(rows, [])
    line = next(line for line in c.conclusions if line.startswith("Image-to-text recall@1"))
    assert line.endswith("QLoRA 0.656 against LoRA 0.657, 0.2% lower; one seed, not a conclusion.")
    assert "noise band" not in line and "(worse)" not in line


@pytest.mark.parametrize(
    ("lora", "qlora", "significant"),
    [
        # QLoRA's loss is 0.05 higher in every seed, with small noise: the interval excludes 0.
        ([0.50, 0.52, 0.49], [0.55, 0.57, 0.545], True),
        # The same means, but the difference changes sign between seeds: the interval contains 0.
        ([0.50, 0.60, 0.40], [0.55, 0.45, 0.65], False),
    ],
)
def test_seed_intervals_decide_the_conclusion(lora, qlora, significant):
    c = compare_runs(seeded(lora, qlora), [])
    table = c.row("best_val_loss")
    diffs = [b - a for a, b in zip(lora, qlora, strict=True)]
    expected = t_interval(diffs)
    assert table.versus.difference["mean"] == pytest.approx(expected.mean)
    diff = table.versus.difference
    assert (diff["low"], diff["high"]) == pytest.approx((expected.low, expected.high))
    assert table.versus.difference["significant"] is significant
    assert table.cells[0]["n"] == 3 and table.cells[0]["experiment_ids"] == [1, 3, 5]
    line = next(line for line in c.conclusions if line.startswith("Best validation loss"))
    if significant:
        assert "QLoRA is higher (worse) than LoRA" in line and "over 3 paired seeds (t)" in line
    else:
        assert line.startswith("Best validation loss (nats per pair): no significant difference between QLoRA and LoRA")
    assert ("±" in markdown(c)) and "3 seeds (0, 1, 2)" in markdown(c)


def _studies(seed_values):
    return {f"s{i}": v for i, v in enumerate(seed_values)}


@pytest.mark.parametrize("shift", [0.2, 0.0])
def test_per_study_rows_use_a_paired_bootstrap_over_test_studies(shift):
    base = [0.1, 0.4, 0.3, 0.8, 0.5, 0.2, 0.6, 0.9, 0.35, 0.45]
    noise = [0.02, -0.03, 0.01, -0.01, 0.03, -0.02, 0.0, 0.01, -0.02, 0.02]
    lora_scores = {"bleu4": _studies(base)}
    qlora_scores = {"bleu4": _studies([b + shift + n for b, n in zip(base, noise, strict=True)])}
    rows = [
        row(1, "lora", {"bleu4": 0.4}, stage="evaluate", per_item=lora_scores),
        row(2, "qlora", {"bleu4": 0.4 + shift}, stage="evaluate", per_item=qlora_scores),
    ]
    c = compare_runs(rows, [])
    study = c.row("study_bleu4")
    expected = paired_bootstrap_difference({42: lora_scores["bleu4"]}, {42: qlora_scores["bleu4"]})
    assert study.versus.difference["over"] == "10 test studies (paired bootstrap)"
    assert study.versus.difference["mean"] == pytest.approx(expected.mean)
    assert study.versus.difference["significant"] is (shift > 0)
    assert study.cells[0]["mean"] == pytest.approx(sum(base) / len(base))
    line = next(line for line in c.conclusions if line.startswith(find_measure("study_bleu4").label))
    assert ("QLoRA is higher (better)" in line) is (shift > 0)
    assert ("no significant difference" in line) is (shift == 0)


@pytest.mark.parametrize("gained", [12, 0])
def test_recall_at_1_is_compared_image_by_image_when_hits_were_recorded(gained):
    lora_hits = [1.0] * 15 + [0.0] * 15
    # QLoRA hits `gained` more images; with none gained it swaps six hits for six misses (same recall).
    qlora_hits = [1.0] * (15 + gained) + [0.0] * (15 - gained) if gained else [0.0] * 6 + [1.0] * 15 + [0.0] * 9
    rows = []
    for id_, method, hits in ((1, "lora", lora_hits), (2, "qlora", qlora_hits)):
        images = {f"img{i}.png": hit for i, hit in enumerate(hits)}
        rows.append(row(id_, method, {**LORA, "i2t_recall@1": sum(hits) / 30}, per_item={"i2t_hit@1": images}))
    c = compare_runs(rows, [])
    recall = c.row("i2t_recall@1")
    assert [cell["mean"] for cell in recall.cells] == pytest.approx([0.5, (15 + gained) / 30])
    assert recall.versus.difference["over"] == "30 validation images (paired bootstrap)"
    assert recall.versus.difference["mean"] == pytest.approx(gained / 30)
    assert recall.versus.difference["significant"] is bool(gained)
    # Recall@5 has no per-image record: one seed, so no interval.
    assert c.row("i2t_recall@5").versus.difference is None


def sweep_rows(best=0.40, best_noise=0.01):
    """A 2x2 grid over peft.method and peft.r, two seeds each; qlora r=16 has the lowest loss by default."""
    loss = {("lora", 8): 0.60, ("lora", 16): 0.55, ("qlora", 8): 0.58, ("qlora", 16): best}
    rows, next_id = [], 1
    for (method, r), value in loss.items():
        for seed, noise in ((1, 0.01), (2, -0.01)):
            noise = best_noise * (1 if seed == 1 else -1) if (method, r) == ("qlora", 16) else noise
            metrics = {**LORA, "best_val_loss": value + noise}
            rows.append({**row(next_id, method, metrics, seed=seed), "cell": {"peft.method": method, "peft.r": r}})
            next_id += 1
    return rows


def test_a_sweep_groups_by_its_keys_and_names_the_best_configuration(tmp_path):
    grid = {"peft.method": ["lora", "qlora"], "peft.r": ["8", "16"]}
    build_report(sweep_rows(), [], tmp_path, grid=grid, kind="sweep", compare_job_id=3, report_job_id=12,
                 metric="val_loss", mode="min")  # fmt: skip
    report = json.loads((tmp_path / "report.json").read_text())
    assert [c["values"] for c in report["cells"]] == [
        {"peft.method": m, "peft.r": r} for m in ("lora", "qlora") for r in (8, 16)
    ]
    assert report["best"]["cell"] == "peft.method=qlora, peft.r=16"
    assert report["best"]["mean"] == pytest.approx(0.40) and report["best"]["experiment_ids"] == [7, 8]
    assert report["best"]["difference"]["significant"] is True
    by_r = {g["value"]: g for g in report["groups"]["peft.r"]}
    assert by_r["16"]["mean"] == pytest.approx((0.55 + 0.40) / 2) and by_r["16"]["n"] == 4
    assert by_r["16"]["experiment_ids"] == [3, 4, 7, 8]
    assert set(report["groups"]) == {"peft.method", "peft.r"}
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# Sweep over peft.method × peft.r\n")
    assert "Report job 12 on sweep job 3" in text
    assert "## By peft.method" in text and "## By peft.r" in text
    table = text.split("## Results by configuration")[1].split("##")[0]
    assert "| peft.method | peft.r | Best validation loss (nats per pair) |" in table
    assert "| qlora | 16 | 0.4000 ± " in table
    assert "Best configuration by best validation loss (lowest): peft.method=qlora, peft.r=16" in text
    assert "; better than the next best, peft.method=lora, peft.r=16 with 0.5500 (95% CI" in text
    assert (tmp_path / "metric_bars.png").is_file()


def test_a_best_configuration_within_noise_of_the_next_says_so():
    # qlora r=16 leads lora r=16 by 0.005 on average, but seed 2 reverses the order: the interval contains 0.
    grid = {"peft.method": ["lora", "qlora"], "peft.r": ["8", "16"]}
    c = compare_runs(sweep_rows(best=0.545, best_noise=-0.05), [], grid=grid, kind="sweep")
    assert c.best["cell"] == "peft.method=qlora, peft.r=16" and c.best["difference"]["significant"] is False
    assert "; within noise of the next best, peft.method=lora, peft.r=16 with 0.5500 (no significant difference" in (
        c.conclusions[0]
    )


def test_a_failed_child_is_reported_missing_and_the_rest_still_renders(tmp_path):
    failures = [{"label": "QLoRA seed 42 train", "reason": "job 11 FAILED: out of memory"}]
    result = build_report(experiments()[:1], metric_rows(), tmp_path, failures=failures)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["missing"] == ["QLoRA seed 42 train: job 11 FAILED: out of memory"]
    assert [c["label"] for c in report["cells"]] == ["LoRA"]
    assert "out of memory" in (tmp_path / "report.html").read_text()
    assert "## Missing steps" in (tmp_path / "report.md").read_text()
    assert result.metrics["missing"] == 1


@pytest.mark.parametrize("identical", [True, False])
def test_identical_hits_read_identical_on_every_item_not_a_zero_width_interval(identical):
    lora_hits = [1.0] * 20 + [0.0] * 10
    qlora_hits = list(lora_hits) if identical else [0.0] * 6 + [1.0] * 20 + [0.0] * 4  # same recall, other images
    rows = []
    for id_, method, hits in ((1, "lora", lora_hits), (2, "qlora", qlora_hits)):
        images = {f"img{i}.png": hit for i, hit in enumerate(hits)}
        rows.append(row(id_, method, {**LORA, "i2t_recall@1": sum(hits) / 30}, per_item={"i2t_hit@1": images}))
    c = compare_runs(rows, [])
    diff = c.row("i2t_recall@1").versus.difference
    assert diff["identical_on"] == ("item" if identical else None)
    page = markdown(c)
    assert ("identical on every item" in page) is identical
    assert ("0.000 [+0.000, +0.000]" not in page) and ("[0.000, 0.000]" not in page)
    line = next(line for line in c.conclusions if line.startswith(find_measure("i2t_recall@1").label))
    assert ("identical on every item of 30 validation images" in line) is identical


def test_identical_seed_values_read_identical_on_every_seed():
    c = compare_runs(seeded([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]), [])
    assert c.row("best_val_loss").versus.difference["identical_on"] == "seed"
    assert "identical on every seed" in markdown(c)


@pytest.mark.parametrize(("seeds", "bars_with_interval"), [(1, 0), (3, 2)])
def test_bars_draw_error_bars_only_where_there_is_an_interval(seeds, bars_with_interval):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.container import ErrorbarContainer

    from worker.report.plots import _bars

    values = [0.5, 0.6, 0.7][:seeds]
    c = compare_runs(seeded(values, [v + 0.1 for v in values]), [])
    fig, ax = plt.subplots()
    _bars(ax, c, c.row("best_val_loss"))
    errorbars = [k for k in ax.containers if isinstance(k, ErrorbarContainer)]
    # An ErrorbarContainer's lines: (data line, caps, bar segments); one segment per bar that has an interval.
    assert sum(len(k.lines[2][0].get_segments()) for k in errorbars) == bars_with_interval
    assert bool(errorbars) is bool(bars_with_interval)  # no caps at all for a single seed
    plt.close(fig)
