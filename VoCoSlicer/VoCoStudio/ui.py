"""The studio's page: a drawer with the module's three sections (Segment, See what VoCo sees, Train) beside the
axial and 3D views. Element ids (``id=...``) are what the browser tests click and read."""

from __future__ import annotations

from typing import Any

from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import html
from trame.widgets import vuetify3 as v3

from VoCoStudio.app import Studio


def build_ui(studio: Studio) -> Any:
    """Lay out the page and bind its controls to ``studio``'s actions (errors become one page line)."""
    server, g = studio.server, studio._guard
    ctrl = server.controller
    ctrl.load_sample = lambda: g(studio.load_sample)
    ctrl.load_path = lambda: g(studio.load_path)
    received: list[dict] = []

    def upload_chunk(files: list[dict]) -> None:
        """trame-slicer's chunked upload: chunks of files, then an empty list at the end."""
        if files:
            received.extend(files)
        elif received:
            g(studio.load_upload, list(received))
            received.clear()

    chunk_trigger = server.trigger_name(upload_chunk)
    ctrl.segment = lambda: g(studio.segment)
    ctrl.save_seg = lambda: g(studio.save_segmentation)
    ctrl.show_grid = lambda: g(studio.show_grid)
    ctrl.train = lambda: g(studio.train, False)
    ctrl.resume = lambda: g(studio.train, True)
    ctrl.cancel = lambda: g(studio.cancel)
    server.state.trame__title = "VoCo Studio"

    with SinglePageWithDrawerLayout(server, full_height=True) as layout:
        layout.title.set_text("VoCo Studio")
        with layout.toolbar:
            v3.VSpacer()
            html.Span("{{ volume_name }}", id="volume-name", classes="mx-2")
            html.Span("{{ message }}", id="message", classes="mx-2 text-caption")
        with layout.drawer as drawer:
            drawer.width = 420
            html.Div("{{ error }}", id="error", v_show="error", classes="text-error pa-2")
            with v3.VExpansionPanels(multiple=True, model_value=("open_panels", [0, 1, 2])):
                _segment_panel(ctrl, chunk_trigger)
                _see_panel(ctrl)
                _train_panel(ctrl)
            _run_bar(ctrl)
        with layout.content:
            with html.Div(style="height: calc(100vh - 100px); width: 100%;", id="views"):
                studio.layout_manager.initialize_layout_grid(layout)
    return layout


def _segment_panel(ctrl: Any, chunk_trigger: str) -> None:
    with v3.VExpansionPanel(title="Segment"):
        with v3.VExpansionPanelText():
            with html.Div(classes="d-flex"):
                v3.VTextField(v_model=("sample_name",), label="Registered sample", density="compact",
                              id="sample-name")
                v3.VBtn("Load sample", click=ctrl.load_sample, id="load-sample", classes="ml-2")
            with html.Div(classes="d-flex"):
                v3.VTextField(v_model=("ct_path",), label="CT path on the server", density="compact", id="ct-path")
                v3.VBtn("Open", click=ctrl.load_path, id="load-path", classes="ml-2")
            v3.VFileInput(label="…or upload a CT", density="compact", id="upload",
                          change=f"window.load_files_by_chunks($event.target.files, "
                                 f"{{ trigger_name: '{chunk_trigger}' }})")
            v3.VTextField(v_model=("model_path",), label="Model package (.vocomodel)", density="compact",
                          id="model-path")
            v3.VBtn("Segment", click=ctrl.segment, disabled=("running",), id="segment")
            with html.Div(classes="d-flex mt-2", v_show="has_segmentation"):
                v3.VTextField(v_model=("seg_output",), label="Save as (.seg.nrrd)", density="compact",
                              id="seg-output")
                v3.VCheckbox(v_model=("overwrite",), label="overwrite", density="compact", id="overwrite")
                v3.VBtn("Save", click=ctrl.save_seg, id="save-seg", classes="ml-2")
            html.Div("{{ saved_path }}", id="saved-path", classes="text-caption")


def _see_panel(ctrl: Any) -> None:
    with v3.VExpansionPanel(title="See what VoCo sees"):
        with v3.VExpansionPanelText():
            with html.Div(classes="d-flex"):
                v3.VSelect(v_model=("recipe",), items=("['small', 'v2', 'v1']",), label="Recipe", density="compact",
                           id="recipe")
                v3.VBtn("Show grid", click=ctrl.show_grid, id="show-grid", classes="ml-2")
            html.Div("{{ grid_count }} base crops drawn; click a point in the axial view", id="grid-count",
                     v_show="grid_count")
            html.Div("target centre (RAS mm): {{ click_ras }}", id="click-ras", v_show="click_ras")
            with html.Table(id="positions", v_show="positions.length", classes="text-caption"):
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
            v3.VSelect(v_model=("train_kind",), items=("['pretrain', 'finetune']",), label="Run", density="compact",
                       id="train-kind")
            v3.VTextField(v_model=("train_data",), label="CT folder or datalist (pretrain)", density="compact",
                          id="train-data")
            v3.VTextField(v_model=("train_output",), label="Output folder", density="compact", id="train-output")
            v3.VTextField(v_model=("train_steps",), label="Steps", type="number", density="compact",
                          id="train-steps")
            with html.Div(classes="d-flex"):
                v3.VBtn("Start", click=ctrl.train, disabled=("running",), id="train")
                v3.VBtn("Resume", click=ctrl.resume, disabled=("running",), id="resume", classes="ml-2")
            html.Div(v_html=("loss_svg",), id="loss-curve", v_show="losses.length")
            with html.Ul(id="losses", classes="text-caption"):
                html.Li("step {{ p.step }}: loss {{ p.loss }}", v_for="p in losses", key="p.step", classes="loss")
            with html.Ul(id="dices", classes="text-caption"):
                html.Li("step {{ p.step }}: Dice {{ p.dice }}", v_for="p in dices", key="p.step")


def _run_bar(ctrl: Any) -> None:
    with html.Div(classes="pa-2"):
        v3.VProgressLinear(model_value=("progress",), height=8, id="progress")
        html.Div("{{ progress_text }}", id="progress-text", classes="text-caption")
        html.Div("ETA {{ eta }}", id="eta", v_show="eta", classes="text-caption")
        html.Div("{{ run_kind }}: {{ run_state }}", id="run-state", classes="text-caption", v_show="run_state")
        html.Div("{{ pid }}", id="run-pid", style="display: none")
        v3.VBtn("Cancel", click=ctrl.cancel, disabled=("!running",), id="cancel", color="error")
