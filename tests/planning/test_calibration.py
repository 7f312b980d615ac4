"""The plan in hours and days: MFU calibrated from GPU checks, wall-clock time on the GPUs a user has."""

import json
import math

import pytest

from barbarossa import cli
from barbarossa.engine.runtime import HEADROOM
from barbarossa.planning import calibration, plan, scheduling


def write_check(folder, rows, cuda=True):
    folder.mkdir(exist_ok=True)
    (folder / "gpu-check-test.json").write_text(json.dumps({"cuda": cuda, "device": "Test GPU", "training": rows}))
    return folder


def test_mfu_is_interpolated_in_log_params_between_measured_sizes_and_clamped_outside(tmp_path):
    folder = write_check(
        tmp_path / "results",
        [
            {"case": "small LoRA", "params": 1e8, "mfu": 0.02, "runtime": {"quantization": "none"}},
            {"case": "big LoRA", "params": 1e10, "mfu": 0.40, "runtime": {"quantization": "none"}},
            {
                "case": "big LoRA, shared-prefix layout",
                "params": 1e10,
                "mfu": 0.05,
                "runtime": {"quantization": "none"},
            },
            {"case": "big QLoRA", "params": 1e10, "mfu": 0.30, "runtime": {"quantization": "nf4"}},
        ],
    )
    calibrated = calibration.measured(folder)
    assert calibrated.lora == ((1e8, 0.02), (1e10, 0.40))  # the layout variant is not the profile's shape
    assert calibration.mfu_at(calibrated, 1e9) == pytest.approx(0.21)  # halfway in log(params)
    assert calibration.mfu_at(calibrated, 1e6) == 0.02 and calibration.mfu_at(calibrated, 1e12) == 0.40
    assert calibration.mfu_at(calibrated, 1e9, "nf4") == 0.30 and calibrated.ceiling == 0.40
    assert calibration.measured(write_check(tmp_path / "cpu", [], cuda=False)) is None


def test_the_shipped_h200_check_calibrates_the_plan_and_says_so():
    calibrated = calibration.measured()
    assert calibrated and "gpu-check-h200.json" in calibrated.source
    from barbarossa import config
    from barbarossa.models import roster

    result = plan.build(roster.select("az-gpt2-alpaca,az-tulu"), config.load_profile("gpu"), "A100-80GB", calibrated)
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["az-gpt2-alpaca"]["mfu"] < rows["az-tulu"]["mfu"]  # small models run at a small share of the peak
    tulu = rows["az-tulu"]
    flops = (6 if tulu["runtime"]["gradient_checkpointing"] else 4) * tulu["params"] * tulu["tokens"]
    assert tulu["gpu_hours"] == pytest.approx(flops / (312e12 * tulu["mfu"]) / 3600, rel=1e-2)
    assert "measured by make gpu-check" in result["assumptions"]


def row(name, hours, planned_gb, mfu):
    return {"name": name, "gpu_hours": hours, "planned_gb": planned_gb, "mfu": mfu, "fits": "LoRA"}


def test_items_share_a_gpu_while_their_leases_fit_its_memory():
    rows = [row(f"r{i}", 1.0, 30 * HEADROOM, 0.05) for i in range(4)]  # 30 GB leases: two fit 80 GB
    box = calibration.wall_clock(rows, 1, 80, ceiling=0.35)
    assert box["wall_hours"] == pytest.approx(2.0) and box["work_gpu_hours"] == pytest.approx(4.0)
    assert calibration.wall_clock(rows, 2, 80, ceiling=0.35)["wall_hours"] == pytest.approx(1.0)


def test_items_sharing_a_gpu_slow_down_together_once_their_mfu_passes_the_ceiling():
    rows = [row("a", 1.0, 10, 0.30), row("b", 1.0, 10, 0.30)]
    box = calibration.wall_clock(rows, 1, 80, ceiling=0.35)
    assert box["wall_hours"] == pytest.approx(0.6 / 0.35, rel=1e-3)  # together at 0.35/0.60 of solo speed each
    assert box["wall_hours"] < 2.0


def test_rows_arrive_in_plan_order_at_most_max_workers_at_once_and_lease_by_the_lease_rule():
    rows = [
        row("small", 1.0, 30 * HEADROOM, 0.05),
        row("big", 2.0, 70 * HEADROOM, 0.05),
        row("late", 1.0, 30 * HEADROOM, 0.05),
    ]
    runs = {r["name"]: r for r in calibration.schedule(rows, [scheduling.Gpu(0, 80)], ceiling=0.35)}
    assert runs["big"]["start"] == pytest.approx(1.0)  # it waits for the small one, reserving the GPU...
    assert runs["late"]["start"] == pytest.approx(3.0)  # ...so the late one, which would fit beside it, may not start
    assert calibration.wall_clock(rows, 1, 80, ceiling=0.35)["wall_hours"] == pytest.approx(4.0)
    two = [row(f"r{i}", 1.0, 10, 0.05) for i in range(4)]
    assert calibration.wall_clock(two, 1, 80, ceiling=0.35, workers=2)["wall_hours"] == pytest.approx(2.0)
    assert calibration.wall_clock(two, 1, 80, ceiling=0.35)["wall_hours"] == pytest.approx(1.0)


def test_an_item_no_gpu_can_hold_is_named_and_a_bad_inventory_is_refused():
    with pytest.raises(ValueError, match="big: a lease of .* does not fit a 24 GB GPU"):
        calibration.wall_clock([row("big", 1.0, 40, 0.3)], 2, 24, ceiling=0.35)
    assert calibration.parse_gpus("4xA100-80GB", plan.GPUS) == (4, "A100-80GB")
    with pytest.raises(ValueError, match="not <count>x<GPU>"):
        calibration.parse_gpus("4xB9000", plan.GPUS)


@pytest.mark.parametrize("gpus", ["1xA100-80GB", "8xH100-80GB"])
def test_plan_prints_gpu_hours_and_wall_clock_for_an_inventory(gpus, capsys):
    assert cli.main(["plan", "--models", "seed", "--gpus", gpus, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    count, gpu = gpus.split("x")
    box = result["inventory"]
    assert result["gpu"] == gpu and box["gpus"] == int(count)
    assert box["wall_hours"] > 0 and math.isclose(box["work_gpu_hours"], result["total_gpu_hours"], rel_tol=1e-3)
    if int(count) == 1:
        assert box["wall_hours"] <= box["work_gpu_hours"]  # small models share the one GPU
    assert cli.main(["plan", "--models", "seed", "--gpus", gpus]) == 0
    assert "h wall-clock" in capsys.readouterr().out


def test_early_stopping_s_saving_is_a_range_from_nothing_to_the_earliest_stop_the_rules_allow():
    from barbarossa.config import EarlyStopping

    early = EarlyStopping(dev_rows=64, eval_every=250, patience=4, fail_fast_steps=0)
    assert plan.early_stopping_saving(early, 5000) == [0.0, 0.75]  # patience: best at 250, four more evaluations → 1250
    fail_fast = early.replace(fail_fast_steps=900)
    assert plan.early_stopping_saving(fail_fast, 5000) == [0.0, 0.8]  # fail-fast's first evaluation: 1000
    assert plan.early_stopping_saving(early.replace(dev_rows=0), 5000) is None
