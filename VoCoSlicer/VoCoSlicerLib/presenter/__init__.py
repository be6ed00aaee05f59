"""The module's presenter: every decision a front end would make (what is enabled and why, every label, what
Apply, Cancel, closing the scene, switching tabs and changing an input do, which node is used or created), without
Qt, so it runs and is tested against real MRML from ``slicer-core``. Slicer's widget and the browser app both
drive it the same way:

    presenter = Presenter(state, logic, on_change=render, on_error=show_error)
    render(presenter.view())          # ViewState: actions {name: Action(enabled, reason, text)}, labels {name: text}
    # user events, then render(presenter.view()) again:
    presenter.state_changed()         # after any field of ``state`` changed (the grid follows volume and recipe)
    presenter.apply(download)         # segment (or cancel the running segmentation: Apply turns into Cancel)
    presenter.cancel()                # stop the current run
    presenter.set_tab(TAB_FINETUNE)   # which training tab is shown (its estimate and checks follow)
    presenter.start_training()        # start (or cancel) the run of the shown training tab
    presenter.target_point_list()     # the point list to place the target in, created on demand
    presenter.predict()               # position prediction at the placed point: (table node, chart node)
    presenter.show_grid(True)         # draw or remove the recipe's base-crop grid
    presenter.export_dicom_seg()      # the result as DICOM SEG into its DICOM input's study (into presenter.dicom_database)
    presenter.import_model(path)      # add a .vocomodel package to the model list
    presenter.scene_about_to_close()  # cancels only runs whose result goes into the scene
    presenter.poll()                  # from a ~200 ms timer: delivers progress, draws a computed grid; True
                                      # while a run goes or a grid is being computed

``state`` is any object with the fields of :class:`ModuleState` (Slicer passes its parameter node wrapper);
``logic`` is a :class:`VoCoSlicerLib.logic.VoCoLogic`. Methods raise :class:`vococore.utils.errors.VoCoError`
with a sentence for the user; ``on_error(title, details)`` reports a background run that failed.
"""

from VoCoSlicerLib.presenter.presenter import TAB_FINETUNE, TAB_PRETRAIN, Presenter
from VoCoSlicerLib.presenter.view import Action, ModuleState, ViewState, path_text

__all__ = ["Action", "ModuleState", "Presenter", "TAB_FINETUNE", "TAB_PRETRAIN", "ViewState", "path_text"]
