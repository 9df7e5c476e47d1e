"""The ablation driver: which runs it makes, and the whole --ci command end to end."""
from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch

from ringnet_lib import ablation


def test_the_ablations_cover_the_issue():
    runs = ablation.ABLATIONS.values()
    assert {r["ring_size"] for r in runs if r["consistency"] == "ring" and r["w_consistency"] == 1} == {2, 4, 6}
    assert {r["w_consistency"] for r in runs} == {0.0, 1.0}
    assert {r["consistency"] for r in runs if r["w_consistency"] == 1} == {"ring", "swap", "mean"}


@pytest.mark.parametrize("mode", sorted(ablation.MODES))
def test_runs_differ_only_in_the_ablated_fields(mode, tmp_path):
    configs = {name: ablation.run_config(name, mode, tmp_path) for name in ablation.ABLATIONS}
    reference = dataclasses.asdict(configs["ring R=4"])
    ablated = {"ring_size", "consistency", "w_consistency", "out_dir"}
    for name, config in configs.items():
        different = {k for k, v in dataclasses.asdict(config).items() if reference[k] != v}
        assert different <= ablated, (name, different)
        assert config.max_steps == reference["max_steps"] > 0  # equal steps
    assert len({c.out_dir for c in configs.values()}) == len(configs)
    assert all(c.overwrite for c in configs.values())  # running an ablation again replaces its runs


def test_papermill_command_names_the_changed_fields(tmp_path):
    config = ablation.run_config("ring R=6", "quick", tmp_path)
    command = ablation.papermill_command(config)
    assert command.startswith("papermill -k python3 notebooks/06_training.ipynb")
    assert "-p ring_size 6" in command and "-p max_steps 400" in command
    assert "-p lr" not in command  # unchanged fields stay out


def test_unknown_run_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown ablation runs"):
        ablation.run_ablation("ci", tmp_path, only=["ring R=3"])
    with pytest.raises(ValueError, match="mode must be"):
        ablation.run_ablation("huge", tmp_path)


def test_ci_command_writes_table_and_plot(tmp_path, capsys):
    assert ablation.main(["--ci", "--out", str(tmp_path), "--only", "ring R=4,no consistency", "--seeds", "0,1"]) == 0
    printed = capsys.readouterr().out
    assert "| ring R=4 | " in printed and "| no consistency | " in printed and "±" in printed
    rows = list(csv.DictReader((tmp_path / "ablation.csv").open()))
    assert [(r["run"], r["seed"]) for r in rows] == [(ablation.BASELINE, ""), ("ring R=4", "0"), ("ring R=4", "1"),
                                                      ("no consistency", "0"), ("no consistency", "1")]
    baseline = float(rows[0]["median_mm"])
    assert baseline > 0.1  # the mean shape is millimetres away from held-out identities
    for row in rows[1:]:
        assert int(row["steps"]) == ablation.MODES["ci"].train["max_steps"]
        assert 0 < float(row["median_mm"]) < 10 * baseline
        assert abs(float(row["vs_mean_shape"]) - float(row["median_mm"]) / baseline) < 1e-9
        assert float(row["spread_ratio"]) > 0
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert set(saved["landmark_loss"]) == {"ring R=4", "no consistency"}
    assert all(len(curves) == 2 for curves in saved["landmark_loss"].values())  # one curve per seed
    for entry in saved["summary"][1:]:  # mean and std over the two seeds, recomputed here
        values = [float(r["vs_mean_shape"]) for r in rows if r["run"] == entry["run"]]
        assert entry["vs_mean_shape"] == pytest.approx(sum(values) / 2)
        assert entry["vs_mean_shape_std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
    assert (tmp_path / "ablation.md").read_text().count("\n|") == 3 + 2  # header, separator, baseline + 2 runs
    for name in ("ring R=4", "no consistency"):
        for seed in (0, 1):
            checkpoint = tmp_path / "runs" / f"{ablation.slug(name)}_seed{seed}" / "checkpoint.pt"
            assert checkpoint.is_file()
            checkpoint.unlink()  # 140 MB each (weights + Adam state): do not leave them in pytest's tmp


def test_shape_spread_ratio_on_known_cases():
    identity = torch.tensor([0, 0, 1, 1])
    perfect = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    assert ablation.shape_spread_ratio(perfect, identity) == 0.0
    # Means at +-1 (between = 1); each image 0.5 from its mean along y (within = 0.25).
    noisy = torch.tensor([[1.0, 0.5], [1.0, -0.5], [-1.0, 0.5], [-1.0, -0.5]])
    assert ablation.shape_spread_ratio(noisy, identity) == pytest.approx(0.25)
    assert ablation.shape_spread_ratio(torch.zeros(4, 2), identity) == float("inf")


def test_heldout_set_is_apart_from_training(tmp_path):
    from ringnet_lib.decoder import Decoder
    from ringnet_lib.training.data import make_rings

    decoder = Decoder()
    mode = ablation.MODES["ci"]
    config = ablation.run_config("ring R=4", "ci", tmp_path)
    images, betas = ablation.heldout_set(decoder, mode, config)
    assert images.shape == (mode.heldout_identities * mode.heldout_images, 3, 32, 32)
    assert betas.shape == (len(images), 100)
    training = make_rings(config)
    assert training.n_images == config.n_identities * config.images_per_identity
    # No held-out identity is one of the training identities.
    distances = (betas[:, None] - training.pool["true_shape"][None]).norm(dim=-1)
    assert float(distances.min()) > 1.0
