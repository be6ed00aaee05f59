"""VoCoSlicerLib.position on real MRML: the table node holds exactly the overlaps it is given (and those of
vococore's position prediction), the chart plots both columns, and a second prediction re-uses our nodes only."""

from __future__ import annotations

import numpy as np
import pytest

from vococore.utils.errors import VoCoError
from vococore.io import read_volume
from mrml_readers import table_values
from VoCoSlicerLib import nodes, position


def test_table_holds_the_true_overlaps_of_vococore(mrml, sample):
    from vococore.pretraining.pretext import get_recipe, position_labels

    recipe = get_recipe("v2")
    # the worked example of the spec: centre (70, 100) overlaps bases 1, 2, 4 and 5
    true = position_labels(np.array([[70, 100]]), recipe)[0]
    rng = np.random.default_rng(3)
    predicted = rng.dirichlet(np.ones(9))
    volume = read_volume(sample("TotalSegCTSmall"))
    node = nodes.node_from_volume(volume, mrml.scene, "CT")
    table, chart = position.show_positions(mrml.scene, node, predicted, true, recipe.grid)
    got_predicted, got_true = table_values(table)
    np.testing.assert_array_equal(got_predicted, predicted)
    np.testing.assert_array_equal(got_true, true)
    np.testing.assert_allclose(got_true[[1, 2, 4, 5]], [26 * 60 / 4096, 26 * 4 / 4096, 38 * 60 / 4096,
                                                        38 * 4 / 4096])
    assert table.GetNumberOfRows() == 9
    assert [table.GetColumnName(c) for c in range(5)] == list(position.COLUMNS)
    assert [table.GetCellText(k, 1) + table.GetCellText(k, 2) for k in (0, 5, 8)] == ["00", "12", "22"]
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = [chart.GetNthPlotSeriesNode(i) for i in range(2)]
    assert [s.GetYColumnName() for s in series] == ["predicted overlap", "true overlap"]
    assert all(s.GetTableNode() is table for s in series)

    # a second prediction refills the same nodes; a user's table is never touched
    users = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "my table")
    again, chart2 = position.show_positions(mrml.scene, node, true, predicted, recipe.grid)
    assert again is table and chart2 is chart and users.GetNumberOfColumns() == 0
    np.testing.assert_array_equal(table_values(table)[0], true)
    assert mrml.scene.GetNodesByClass("vtkMRMLPlotSeriesNode").GetNumberOfItems() == 2


def test_wrong_length_is_refused(mrml):
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode")
    with pytest.raises(VoCoError, match="expected 9 overlaps per base for a 3x3 grid"):
        position.fill_table(table, np.ones(16) / 16, np.ones(16) / 16, 3)


def test_logic_shows_exactly_what_vococore_predicts(mrml, sample, tmp_path):
    """A point in the CT -> vococore.pretraining.position.predict_positions -> the table holds its numbers, unrounded."""
    import torch

    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.position import predict_positions
    from vococore.pretraining.pretext import default_backbone
    from vococore.training.checkpoint import build_checkpoint, save_checkpoint
    from VoCoSlicerLib.logic import VoCoLogic

    torch.manual_seed(0)
    model = VoCoModel(default_backbone("small"), "small")
    checkpoint = save_checkpoint(tmp_path / "last.pt", build_checkpoint(
        7, model, backbone=default_backbone("small"), recipe=model.recipe))
    volume = read_volume(sample("TotalSegCT"))
    node = nodes.node_from_volume(volume, mrml.scene, "CT")
    logic = VoCoLogic(mrml.scene, work_dir=tmp_path)
    loaded = logic.load_position_model(checkpoint, "small")
    assert not loaded.training
    point = volume.voxel_to_world(np.array(volume.shape) / 2)  # the middle of the CT, inside the region
    table, chart, sub = logic.predict_positions(node, point, loaded)

    with torch.no_grad():
        direct = predict_positions(model.eval(), volume, points_ras=point[None]).subvolumes[0]
    got_predicted, got_true = table_values(table)
    np.testing.assert_array_equal(got_predicted, sub.predicted)
    np.testing.assert_array_equal(got_true, sub.true)
    np.testing.assert_allclose(sub.predicted, direct.predicted, atol=1e-6)  # same weights through the file
    np.testing.assert_array_equal(sub.true, direct.true)
    assert got_true.sum() == pytest.approx(1.0) and np.all((got_predicted >= 0) & (got_predicted <= 1))
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    with pytest.raises(VoCoError, match="outside the VoCo region"):
        logic.predict_positions(node, point + [5000.0, 0, 0], loaded)
