"""Shows VoCo's position prediction in Slicer: a table node with, for each base crop, the overlap VoCo predicts
for the target crop and the true overlap, and a bar plot of the two."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vococore.utils.errors import VoCoError

COLUMNS = ("base", "row i", "column j", "predicted overlap", "true overlap")
RESULT_ATTRIBUTE = "VoCoSlicer.PositionOf"  # on the table and plot nodes: the ID of the volume node


def fill_table(table: Any, predicted: Sequence[float], true: Sequence[float], grid: int) -> Any:
    """Replace ``table``'s contents with one row per base: index, grid row/column, predicted and true overlap."""
    import vtk

    predicted, true = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if predicted.shape != (grid * grid,) or true.shape != (grid * grid,):
        raise VoCoError(f"expected {grid * grid} overlaps per base for a {grid}x{grid} grid, got "
                        f"{predicted.shape} predicted and {true.shape} true")
    table.RemoveAllColumns()
    int_columns = [vtk.vtkIntArray() for _ in range(3)]
    float_columns = [vtk.vtkDoubleArray() for _ in range(2)]
    for column, name in zip([*int_columns, *float_columns], COLUMNS):
        column.SetName(name)
        table.AddColumn(column)
    table.GetTable().SetNumberOfRows(grid * grid)
    for k in range(grid * grid):
        for column, value in zip(int_columns, (k, k // grid, k % grid)):
            column.SetValue(k, value)
        float_columns[0].SetValue(k, float(predicted[k]))
        float_columns[1].SetValue(k, float(true[k]))
    table.GetTable().Modified()
    table.Modified()
    return table


def table_values(table: Any) -> tuple[np.ndarray, np.ndarray]:
    """The predicted and true overlap columns of a table made by :func:`fill_table` (VoCo Studio lists them)."""
    from vtk.util.numpy_support import vtk_to_numpy

    data = table.GetTable()
    columns = {data.GetColumn(c).GetName(): data.GetColumn(c) for c in range(data.GetNumberOfColumns())}
    return (vtk_to_numpy(columns["predicted overlap"]).astype(np.float64),
            vtk_to_numpy(columns["true overlap"]).astype(np.float64))


def show_positions(scene: Any, volume_node: Any, predicted: Sequence[float], true: Sequence[float],
                   grid: int) -> tuple[Any, Any]:
    """Table and bar chart for ``volume_node``'s latest prediction; re-used (never a user's node) on later calls."""
    table = _ours(scene, "vtkMRMLTableNode", volume_node) or \
        scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"VoCo positions {volume_node.GetName()}"))
    table.SetAttribute(RESULT_ATTRIBUTE, volume_node.GetID())
    fill_table(table, predicted, true, grid)
    chart = _ours(scene, "vtkMRMLPlotChartNode", volume_node)
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"VoCo positions chart {volume_node.GetName()}")
        chart.SetAttribute(RESULT_ATTRIBUTE, volume_node.GetID())
        chart.SetTitle("Target crop overlap with each base crop")
        chart.SetXAxisTitle("base crop (k = grid * i + j)")
        chart.SetYAxisTitle("overlap proportion")
        for column, color in (("predicted overlap", (0.85, 0.35, 0.1)), ("true overlap", (0.2, 0.45, 0.8))):
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{column} {volume_node.GetName()}")
            series.SetAttribute(RESULT_ATTRIBUTE, volume_node.GetID())
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("base")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeBar)
            series.SetColor(*color)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return table, chart


def _ours(scene: Any, cls: str, volume_node: Any) -> Any:
    nodes = scene.GetNodesByClass(cls)
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetAttribute(RESULT_ATTRIBUTE) == volume_node.GetID():
            return node
    return None
