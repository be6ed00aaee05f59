"""The studio's page: a drawer with the module's three sections (Segment, See what VoCo sees, Train) beside the
axial and 3D views. Buttons take their enabled state, tooltip (the reason) and text from the presenter's actions
(``actions.NAME``), texts from its labels (``labels.NAME``). Element ids are what the browser tests click and read."""

from __future__ import annotations

from typing import Any

from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import html
from trame.widgets import vuetify3 as v3

from VoCoSlicerLib.parameters import DEVICES, NETWORKS, RECIPES
from VoCoStudio.app import CLICK_INPUTS, Studio


def build_ui(studio: Studio) -> Any:
    """Lay out the page and bind its controls to ``studio``'s actions (errors become one page line)."""
    server, g = studio.server, studio.guarded
    ctrl = server.controller
    ctrl.load_sample = studio.clicked(studio.load_sample)
    ctrl.load_path = studio.clicked(studio.load_path)
    received: list[dict] = []

    def upload_chunk(files: list[dict]) -> None:
        """trame-slicer's chunked upload: chunks of files, then an empty list at the end."""
        if files:
            received.extend(files)
        elif received:
            g(studio.load_upload)(list(received))
            received.clear()

    chunk_trigger = server.trigger_name(upload_chunk)
    ctrl.import_model = studio.clicked(studio.import_model)
    ctrl.apply = studio.clicked(studio.apply)
    ctrl.save_seg = studio.clicked(studio.save_segmentation)
    ctrl.predict = studio.clicked(studio.predict)
    ctrl.start_training = studio.clicked(studio.presenter.start_training)
    ctrl.cancel = studio.clicked(studio.presenter.cancel)
    server.state.trame__title = "VoCo Studio"

    with SinglePageWithDrawerLayout(server, full_height=True) as layout:
        layout.title.set_text("VoCo Studio")
        with layout.toolbar:
            v3.VSpacer()
            html.Span("{{ volume_name }}", id="volume-name", classes="mx-2")
            html.Span("{{ message }}", id="message", classes="mx-2 text-caption")
        with layout.drawer as drawer:
            drawer.width = 440
            html.Div("{{ error }}", id="error", v_show="error", classes="text-error pa-2")
            with html.Div(classes="d-flex px-4 text-caption"):
                html.Label("Device", classes="mr-2")
                _select("device", "device", [(d, d) for d in DEVICES])
            _run_bar(ctrl)
            with v3.VExpansionPanels(multiple=True, model_value=("open_panels", [0, 1, 2])):
                _segment_panel(ctrl, chunk_trigger)
                _see_panel(ctrl)
                _train_panel(ctrl)
        with layout.content:
            with html.Div(style="height: calc(100vh - 100px); width: 100%;", id="views"):
                studio.layout_manager.initialize_layout_grid(layout)
    return layout


def _button(key: str, default: str, click: Any, element_id: str, **kwargs: Any) -> None:
    """A button showing the presenter's action ``key``: enabled flag, reason as tooltip, text (Apply -> Cancel);
    its click sends the page's inputs along (``Studio.clicked``)."""
    v3.VBtn(f"{{{{ actions.{key}.text || '{default}' }}}}", click=(click, CLICK_INPUTS), id=element_id,
            disabled=(f"!actions.{key}.enabled",), title=(f"actions.{key}.reason",), **kwargs)


def _reason(key: str, element_id: str) -> None:
    """The action's reason as visible text (a disabled button shows no tooltip on touch screens)."""
    html.Div(f"{{{{ actions.{key}.reason }}}}", id=element_id, classes="text-caption text-medium-emphasis")


def _label(key: str) -> None:
    html.Div(f"{{{{ labels.{key} }}}}", id=f"label-{key.replace('_', '-')}", v_show=f"labels.{key}",
             classes="text-caption")


def _select(model: str, element_id: str, options: list[tuple[str, str]] | None = None, items: str = "") -> None:
    """A native select bound to ``model``: fixed ``options`` (value, text) or the state list ``items``."""
    with html.Select(v_model=(model,), id=element_id, style="border: 1px solid #999; padding: 2px 4px;"):
        if items:
            html.Option("(none)", value="")
            html.Option("{{ item.text }}", v_for=f"item in {items}", key="item.value", value=("item.value",))
        for value, text in options or []:
            html.Option(text, value=value)


def _labeled_select(label: str, model: str, element_id: str, options: list[tuple[str, str]] | None = None,
                    items: str = "") -> None:
    """One form row: a caption and the :func:`_select` it names."""
    with html.Div(classes="d-flex align-center mb-2 text-caption"):
        html.Label(label, classes="mr-2")
        _select(model, element_id, options, items)


def _segment_panel(ctrl: Any, chunk_trigger: str) -> None:
    with v3.VExpansionPanel(title="Segment"):
        with v3.VExpansionPanelText():
            with html.Div(classes="d-flex"):
                v3.VTextField(v_model=("sample_name",), label="Registered sample", density="compact",
                              id="sample-name")
                v3.VBtn("Load sample", click=(ctrl.load_sample, CLICK_INPUTS), id="load-sample", classes="ml-2")
            with html.Div(classes="d-flex"):
                v3.VTextField(v_model=("ct_path",), label="CT path on the server", density="compact", id="ct-path")
                v3.VBtn("Open", click=(ctrl.load_path, CLICK_INPUTS), id="load-path", classes="ml-2")
            v3.VFileInput(label="…or upload a CT", density="compact", id="upload",
                          change=f"window.load_files_by_chunks($event.target.files, "
                                 f"{{ trigger_name: '{chunk_trigger}' }})")
            _labeled_select("Input CT", "inputVolume", "input-volume", items="volume_items")
            _labeled_select("Model", "model", "model", items="models")
            with html.Div(classes="d-flex"):
                v3.VTextField(v_model=("import_path",), label="Model package on the server (.vocomodel)",
                              density="compact", id="import-path")
                _button("import_model", "Import", ctrl.import_model, "import-model", classes="ml-2")
            _label("model_card")
            _label("device")
            _label("segment_estimate")
            _button("apply", "Apply", ctrl.apply, "apply", color="primary")
            _reason("apply", "apply-reason")
            with html.Div(v_show="has_segmentation"), html.Div(classes="d-flex mt-2"):  # d-flex beats v-show
                v3.VTextField(v_model=("seg_output",), label="Save as (.seg.nrrd)", density="compact",
                              id="seg-output")
                v3.VCheckbox(v_model=("overwrite",), label="overwrite", density="compact", id="overwrite")
                v3.VBtn("Save", click=(ctrl.save_seg, CLICK_INPUTS), id="save-seg", classes="ml-2")
            html.Div("{{ saved_path }}", id="saved-path", classes="text-caption")


def _see_panel(ctrl: Any) -> None:
    with v3.VExpansionPanel(title="See what VoCo sees"):
        with v3.VExpansionPanelText():
            with html.Div(classes="d-flex align-center text-caption"):
                html.Label("Recipe", classes="mr-2")
                _select("recipe", "recipe", [(r, r) for r in RECIPES])
                v3.VCheckbox(v_model=("showGrid",), label="Show grid", density="compact", id="show-grid",
                             disabled=("!actions.show_grid.enabled",), title=("actions.show_grid.reason",),
                             classes="ml-4", hide_details=True)
            v3.VTextField(v_model=("positionCheckpoint",), label="Pretraining checkpoint (empty: untrained model)",
                          density="compact", id="position-checkpoint")
            _label("grid")
            _label("position_model")
            html.Div("{{ actions.place_point.reason }}", id="place-point-reason", classes="text-caption")
            _button("predict", "Predict", ctrl.predict, "predict", size="small")
            _reason("predict", "predict-reason")
            _label("position")
            html.Div("target centre (RAS mm): {{ click_ras }}", id="click-ras", v_show="click_ras")
            with html.Table(id="positions", v_show="positions.length", classes="text-caption",
                            style="border-spacing: 10px 0;"):
                with html.Tr():
                    for head in ("base", "i", "j", "predicted", "true"):
                        html.Th(head)
                with html.Tr(v_for="row in positions", key="row.base", classes="position-row"):
                    for key in ("base", "i", "j", "predicted", "true"):
                        html.Td(f"{{{{ row.{key} }}}}", classes=f"cell-{key}")
            with html.Div(id="position-chart", v_show="positions.length",
                          style="display: flex; align-items: flex-end; height: 80px; gap: 2px;"):
                with html.Div(v_for="row in positions", key="row.base", style="display: flex; align-items: flex-end;"):
                    html.Div(style=("{height: (80 * row.predicted) + 'px', width: '5px', background: '#d95a1a'}",),
                             title=("'predicted ' + row.predicted",))
                    html.Div(style=("{height: (80 * row.true) + 'px', width: '5px', background: '#3373cc'}",),
                             title=("'true ' + row.true",))


def _train_panel(ctrl: Any) -> None:
    with v3.VExpansionPanel(title="Train"):
        with v3.VExpansionPanelText():
            with html.Select(v_model=("train_tab",), id="train-tab", style="border: 1px solid #999;"):
                html.Option("Pretraining", value=("0",))
                html.Option("Fine-tuning", value=("1",))
            with html.Div(v_show="train_tab == 0"):
                v3.VTextField(v_model=("pretrainData",), label="CT folder or datalist (empty: the loaded volumes)",
                              density="compact", id="pretrain-data")
                v3.VTextField(v_model=("pretrainOutput",), label="Output folder (empty: a new per-user folder)",
                              density="compact", id="pretrain-output")
                v3.VTextField(v_model=("pretrainSteps",), label="Steps", type="number", density="compact",
                              id="pretrain-steps")
            with html.Div(v_show="train_tab == 1", classes="text-caption"):
                _labeled_select("Training CT", "finetuneVolume", "finetune-volume", items="volume_items")
                _labeled_select("Its segmentation", "finetuneSegmentation", "finetune-segmentation",
                                items="segmentation_items")
                _labeled_select("Network", "finetuneNetwork", "finetune-network", [(n, n) for n in NETWORKS])
                v3.VTextField(v_model=("finetuneWeights",), label="Pretrained weights (optional)",
                              density="compact", id="finetune-weights")
                v3.VTextField(v_model=("finetuneOutput",), label="Output folder (empty: a new per-user folder)",
                              density="compact", id="finetune-output")
                v3.VTextField(v_model=("finetuneSteps",), label="Steps", type="number", density="compact",
                              id="finetune-steps")
            v3.VCheckbox(v_model=("resume",), label="Resume from the output folder's last checkpoint",
                         density="compact", id="resume", hide_details=True)
            _label("train_estimate")
            _label("train_data")
            _label("train_output")
            _button("start_training", "Start", ctrl.start_training, "start-training", color="primary")
            _reason("start_training", "start-training-reason")
            html.Div("loss {{ labels.loss }} · Dice {{ labels.dice }}", id="latest-metrics", classes="text-caption")
            html.Div(v_html=("loss_svg",), id="loss-curve", v_show="losses.length")
            with html.Ul(id="losses", classes="text-caption"):
                html.Li("step {{ p.step }}: loss {{ p.loss }}", v_for="p in losses", key="p.step", classes="loss")
            with html.Ul(id="dices", classes="text-caption"):
                html.Li("step {{ p.step }}: Dice {{ p.dice }}", v_for="p in dices", key="p.step", classes="dice")


def _run_bar(ctrl: Any) -> None:
    """The running job's progress, ETA and status with Cancel, kept at the top of the drawer while it scrolls."""
    with html.Div(classes="pa-2", style="position: sticky; top: 0; z-index: 2; background: white;"):
        v3.VProgressLinear(model_value=("progress",), height=8, id="progress")
        html.Div("{{ labels.progress }}", id="progress-text", classes="text-caption")
        html.Div("{{ labels.status }}", id="run-state", classes="text-caption", v_show="labels.status")
        html.Div("{{ run_pid }}", id="run-pid", style="display: none")
        _button("cancel", "Cancel", ctrl.cancel, "cancel", color="error")
