"""Position prediction on the real TotalSegmentator CT with a small randomly initialised CNN VoCo model saved as a
pretraining checkpoint: the API, the ``vococore position`` command (a real process, see cli_zygote.py), its JSON
and PNG, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli_zygote import warm_cli
from vococore.utils.config import to_dict
from vococore.utils.errors import VoCoError
from vococore.pretraining.model import VoCoModel, load_voco_model
from vococore.pretraining.pretext import RECIPES, base_boxes_world, default_backbone, place_region
from vococore.io.volume import Volume

RECIPE = RECIPES["small"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    spec = default_backbone(RECIPE)
    path = tmp_path_factory.mktemp("model") / "pretrain.pt"
    torch.save({"model": VoCoModel(spec, RECIPE).state_dict(), "backbone": to_dict(spec), "recipe": RECIPE.name},
               path)
    return path


@pytest.fixture(scope="module")
def ct(sample):
    from vococore.io import read_volume

    return read_volume(sample("TotalSegCT"))


@pytest.fixture(scope="module")
def grid(ct):
    """World boxes of the bases, computed directly from the pretext functions (not through position.py)."""
    from vococore.preprocessing.preprocessor import Preprocessor

    pre = Preprocessor(RECIPE.preprocess_config())(ct)
    return base_boxes_world(pre.affine, place_region(pre.shape, RECIPE, rng=None), RECIPE)


def test_subvolume_inside_one_base(checkpoint, ct, grid):
    """A sub-volume centred on base 4 is that base: true overlap 1.0 there, 0 elsewhere; predictions in [0, 1]."""
    from vococore.pretraining.position import predict_positions

    model = load_voco_model(checkpoint)
    center4 = grid[4][0]
    result = predict_positions(model, ct, points_ras=[center4], n_random=3, seed=1)
    assert len(result.subvolumes) == 4
    first = result.subvolumes[0]
    np.testing.assert_array_equal(first.true, np.eye(9)[4])
    np.testing.assert_allclose(first.center_ras, center4, atol=1e-6)
    np.testing.assert_array_equal(first.box_region, [[32, 32, 0], [64, 64, 32]])
    for sub in result.subvolumes:
        assert sub.predicted.shape == (9,) and np.all(sub.predicted >= 0) and np.all(sub.predicted <= 1)
        assert abs(sub.true.sum() - 1) < 1e-12 and np.count_nonzero(sub.true) <= 4
    for (c, s), (gc, gs) in zip(result.base_boxes_world, grid):
        np.testing.assert_allclose(c, gc)
        np.testing.assert_allclose(s, gs)
    # Each sub-volume is predicted on its own: the same point alone gives the same numbers.
    alone = predict_positions(model, ct, points_ras=[center4])
    np.testing.assert_allclose(alone.subvolumes[0].predicted, first.predicted, rtol=1e-5, atol=1e-6)
    assert result.as_dict()["subvolumes"][0]["true"][4] == 1.0


def test_points_that_cannot_centre_a_subvolume(checkpoint, ct, grid):
    from vococore.pretraining.position import predict_positions

    model = load_voco_model(checkpoint)
    far = grid[4][0] + np.array([0.0, 0.0, 500.0])
    with pytest.raises(VoCoError, match="outside the VoCo region"):
        predict_positions(model, ct, points_ras=[far])
    near_edge = grid[0][0] - grid[0][1] / 2 + 3.0  # inside base 0, 1 voxel from the region corner
    with pytest.raises(VoCoError, match="would leave the region"):
        predict_positions(model, ct, points_ras=[near_edge])
    with pytest.raises(VoCoError, match="nothing to predict"):
        predict_positions(model, ct)


def test_volume_smaller_than_region_is_padded(checkpoint, ct):
    """A 40 x 40 x 12 voxel piece of the CT (3 mm) is smaller than the 96 x 96 x 32 region: it is padded with
    air, as the spec's SpatialPad does, and prediction still works."""
    from vococore.pretraining.position import predict_positions

    piece = Volume(array=ct.array[40:80, 30:70, 50:62], affine=ct.affine.copy(), source="piece")
    result = predict_positions(load_voco_model(checkpoint), piece, n_random=2, seed=0)
    assert result.region_image.shape == (96, 96, 32)
    assert result.region_image[:20].max() == 0 and result.region_image[:, :, -8:].max() == 0
    assert all(abs(s.true.sum() - 1) < 1e-12 for s in result.subvolumes)


def _cli(*args):
    return warm_cli().run(["position", *args], timeout=300)


def test_cli_writes_json_and_png(checkpoint, sample, grid, tmp_path):
    from matplotlib.image import imread

    ct_path = sample("TotalSegCT")
    point = [f"{v:.4f}" for v in grid[4][0]]
    out = tmp_path / "positions"
    run = _cli("--model", checkpoint, "--input", ct_path, "--point", *point, "--random", 1, "--seed", 3,
               "--output", out)
    assert run.returncode == 0, run.stderr
    data = json.loads((out / "positions.json").read_text())
    assert data["recipe"] == "small" and data["run"]["seed"] == 3 and len(data["subvolumes"]) == 2
    assert data["subvolumes"][0]["true"] == np.eye(9)[4].tolist()
    assert all(0 <= p <= 1 for s in data["subvolumes"] for p in s["predicted"])
    assert len(data["base_boxes_world"]) == 9
    for k in range(2):
        image = imread(out / f"position_{k:03d}.png")
        assert image.shape[:2] == (500, 1000) and image.std() > 0.05  # a real picture, not a blank canvas
    again = _cli("--model", checkpoint, "--input", ct_path, "--random", 2, "--output", out)
    assert again.returncode == 2
    assert "already exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_cli_rejects_bad_checkpoint(sample, tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}}, bad)
    run = _cli("--model", bad, "--input", sample("TotalSegCT"), "--random", 1, "--output", tmp_path / "out")
    assert run.returncode == 2
    assert str(bad) in run.stderr and "needs keys" in run.stderr and len(run.stderr.strip().splitlines()) == 1
