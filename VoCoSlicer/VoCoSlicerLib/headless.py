"""An MRML scene without the Slicer application (slicer-core wheel), wired the way Slicer wires its logics.

Used by the demo to write a ``.mrb`` scene and by the tests; inside Slicer, use ``slicer.mrmlScene`` instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import types
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


def headless_scene(cache_dir: str | os.PathLike) -> types.SimpleNamespace:
    """A new scene with colour, markups, volumes and segmentations logics attached, plus the cache/IO managers
    that ``ReadFromMRB`` needs. Returns ``scene``, ``app``, ``volumes``, ``segs``, ``markups``."""
    import slicer

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    # The colour logic looks for default colour files under <home>/<share>/ColorFiles and logs a red ERR line when
    # no home is set; the slicer-core wheel ships none, so point it at an empty private folder (not the cache).
    home = tempfile.TemporaryDirectory(prefix="vococore-slicer-home-")
    os.makedirs(os.path.join(home.name, "share", "ColorFiles"))
    app.SetHomeDirectory(home.name)
    app.SetShareDirectory("share")
    app.SetMRMLScene(scene)
    logics: dict[str, Any] = {}
    for name, cls in (("Colors", slicer.vtkSlicerColorLogic), ("Markups", slicer.vtkSlicerMarkupsLogic),
                      ("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)  # before SetMRMLScene: the logic registers its nodes with the app
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
        logics[name] = logic
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(cache_dir))
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    scene.SetCacheManager(cache)
    scene.SetDataIOManager(io_manager)
    return types.SimpleNamespace(scene=scene, app=app, volumes=logics["Volumes"], segs=logics["Segmentations"],
                                 markups=logics["Markups"], _keep=(cache, io_manager, home))


def install_as_slicer_globals(ctx: types.SimpleNamespace) -> None:
    """Set ``slicer.mrmlScene`` and a minimal ``slicer.modules`` so ``slicer.util`` helpers work headless."""
    import slicer

    slicer.mrmlScene = ctx.scene
    slicer.modules = types.SimpleNamespace(
        volumes=types.SimpleNamespace(logic=lambda: ctx.volumes),
        segmentations=types.SimpleNamespace(logic=lambda: ctx.segs),
        markups=types.SimpleNamespace(logic=lambda: ctx.markups))


@contextlib.contextmanager
def vtk_messages_to_log() -> Iterator[None]:
    """Route VTK's output window into Python logging while the block runs: "Info:" messages (slicer-core 5.11's
    vtkArchive prints one per file it zips into a .mrb) go to DEBUG, anything else (warnings, errors) to WARNING,
    so nothing is lost and a newcomer's terminal shows only what may need attention."""
    import vtk

    previous = vtk.vtkOutputWindow.GetInstance()
    captured = vtk.vtkStringOutputWindow()
    vtk.vtkOutputWindow.SetInstance(captured)
    try:
        yield
    finally:
        vtk.vtkOutputWindow.SetInstance(previous)
        for message in captured.GetOutput().split("\n\n"):
            message = message.strip()
            if message:
                (log.debug if message.startswith("Info:") else log.warning)("VTK: %s", message)
