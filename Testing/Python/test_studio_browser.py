"""VoCo Studio clicked through in a real headless Chromium against the real server (trame-slicer, MRML, vococore
subprocesses): buttons, reasons and labels as the presenter decides them, the sample CT, the grid, a click's position
prediction, segmentation with its overlay, Apply turning into Cancel, pretraining with losses, ETA, cancel and resume,
fine-tuning with loss and Dice. Screenshots are kept in output/studio-screenshots."""

from __future__ import annotations

import re
import shutil
import time
import types

import numpy as np
import pytest

from studio_harness import browser_page, free_port, require_browser_stack, screenshot, studio_server, view_image, \
    wait_text

require_browser_stack()


# the page's element of each presenter action checked against the presenter itself
ACTION_IDS = {"apply": "#apply", "start_training": "#start-training", "predict": "#predict", "cancel": "#cancel",
              "import_model": "#import-model"}


def _page_actions(page) -> dict[str, tuple[bool, str]]:
    """(enabled, tooltip) of each action's button as the page shows it."""
    return {key: (not page.is_disabled(sel), page.get_attribute(sel, "title")) for key, sel in ACTION_IDS.items()}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """One server and one page for the module (starting them costs tens of seconds on 2 cores). The page's buttons
    are read once before any CT is loaded, then the sample CT is loaded from the page."""
    tmp = tmp_path_factory.mktemp("studio")
    with studio_server(tmp, "--port", str(free_port()), "--sample", "") as (proc, url), browser_page(url) as page:
        wait_text(page, "#apply-reason", r"\S", timeout_s=120)  # the presenter's first view has arrived
        empty = _page_actions(page)
        empty_labels = {key: page.inner_text(f"#label-{key}") for key in ("position-model", "train-data")}
        page.click("#load-sample")
        wait_text(page, "#volume-name", r"example_ct_sm", timeout_s=180)
        view_image(page, 0)
        yield types.SimpleNamespace(page=page, tmp=tmp, empty=empty, empty_labels=empty_labels)


def _package(path, spacing: float, overlap: float, everywhere: int | None = None):
    """A real model package: an untrained MONAI BasicUNet with two labels. With ``everywhere``, its last
    convolution is set to vote for that label at every voxel, so the overlay it yields is known in advance."""
    import torch

    from vococore.io import LabelInfo
    from vococore.networks.backbones import BackboneSpec, build_segmenter
    from vococore.preprocessing.preprocessor import PreprocessConfig
    from vococore.segmentation.package import ModelPackage, save_package

    torch.manual_seed(0)
    spec = BackboneSpec(arch="cnn", feature_size=8)
    package = ModelPackage(backbone=spec, labels=[LabelInfo(1, "organ", (1.0, 0.5, 0.0)),
                                                  LabelInfo(2, "bone", (0.9, 0.9, 0.8))],
                           preprocess=PreprocessConfig(spacing=(spacing,) * 3, min_size=(32, 32, 32)),
                           roi_size=(32, 32, 32), overlap=overlap)
    model = build_segmenter(spec, out_channels=3)
    if everywhere is not None:
        last = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(torch.nn.functional.one_hot(torch.tensor(everywhere), 3).float() * 10)
    return save_package(model, package, path)


def _fill(page, selector: str, value: str) -> None:
    page.fill(f"{selector} input" if page.query_selector(f"{selector} input") else selector, value)
    page.keyboard.press("Tab")  # v-model syncs to the server on input; blur makes sure it was sent


def _import(page, package) -> str:
    """Import a model package from the page; the presenter chooses it in the model list. Returns its id."""
    _fill(page, "#import-path", str(package))
    page.click("#import-model")
    wait_text(page, "#message", r"^Imported model")
    page.wait_for_function("document.querySelector('#model').value.length > 0")
    return page.input_value("#model")


def _start_run(page, selector: str) -> None:
    """Click a button that starts a run and wait until the page shows it going (the last run's status cleared)."""
    page.click(selector)
    wait_text(page, "#run-state", r"^$", timeout_s=30)


def _run_end(page, kind: str, timeout_s: float) -> str:
    """The presenter's status line once the ``kind`` run has ended, whichever way."""
    return wait_text(page, "#run-state", rf"^{kind} (succeeded|failed|cancelled)$", timeout_s=timeout_s)


def _button_text(page, selector: str) -> str:
    return page.inner_text(selector).strip().lower()


def _loss_points(page, selector: str = "#losses li") -> list[tuple[int, float]]:
    points = [re.match(r"step (\d+): \w+ (\S+)", li.inner_text()) for li in page.query_selector_all(selector)]
    return [(int(m.group(1)), float(m.group(2))) for m in points]


def test_buttons_reasons_and_labels_are_the_presenters(studio, mrml, sample, tmp_path):
    from vococore.io import read_volume
    from VoCoSlicerLib import device, nodes
    from VoCoSlicerLib.logic import VoCoLogic
    from VoCoSlicerLib.presenter import ModuleState, Presenter
    from VoCoSlicerLib.registry import ModelRegistry

    # the presenter in this process, on its own scene, in the states the page went through
    logic = VoCoLogic(mrml.scene, registry=ModelRegistry(cache_dir=tmp_path / "models"), work_dir=tmp_path / "work")
    presenter = Presenter(ModuleState(), logic, probe_gpu=device.gpu_facts, runs_dir=tmp_path / "runs")
    presenter.wait_for_gpu_check()
    view = presenter.view()
    assert studio.empty == {key: (view.actions[key].enabled, view.actions[key].reason) for key in ACTION_IDS}
    assert studio.empty["apply"] == (False, "Select an input CT volume.")  # said once without the presenter
    assert studio.empty_labels == {"position-model": view.labels["position_model"],
                                   "train-data": view.labels["train_data"]}

    page = studio.page
    presenter.state.inputVolume = nodes.node_from_volume(read_volume(sample("TotalSegCTSmall")), mrml.scene, "CT")
    view = presenter.view()
    assert _page_actions(page)["apply"] == (True, view.actions["apply"].reason)
    assert view.actions["apply"].reason.startswith("Downloads VoComni")  # no model downloaded in either cache
    assert page.inner_text("#apply-reason") == view.actions["apply"].reason
    assert _page_actions(page)["start_training"] == (False, view.actions["start_training"].reason)
    for key in ("segment_estimate", "train_estimate", "position_model"):
        assert page.inner_text(f"#label-{key.replace('_', '-')}") == view.labels[key], key
    screenshot(page, "presenter-state")


def test_grid_and_clicked_position_match_vococore(studio, sample):
    import torch

    from vococore.io import read_volume
    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.position import predict_positions
    from vococore.pretraining.pretext import default_backbone, get_recipe

    page = studio.page
    page.select_option("#recipe", "small")
    page.check("#show-grid")
    recipe = get_recipe("small")
    wait_text(page, "#label-grid", rf"^{recipe.num_bases} base crops of the small recipe on 'example_ct_sm'\.$")
    assert page.inner_text("#predict-reason") == "Place the target point first."
    axial = view_image(page, 0)
    box = axial.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55)
    ras_text = wait_text(page, "#click-ras", r"\[.*\]", timeout_s=120)
    page.wait_for_function("document.querySelectorAll('#positions .position-row').length > 0")
    assert wait_text(page, "#predict-reason", "overlap") == "Predict the target crop's overlap with each base crop."
    page.locator("#positions").scroll_into_view_if_needed()
    screenshot(page, "grid-position")
    ras = np.array([float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", ras_text.split(":", 1)[1])])
    rows = [[float(c.inner_text()) for c in row.query_selector_all("td")]
            for row in page.query_selector_all("#positions .position-row")]
    page_pred, page_true = np.array([r[3] for r in rows]), np.array([r[4] for r in rows])

    volume = read_volume(sample("TotalSegCTSmall"))
    low, high = np.sort(np.stack([volume.affine[:3, :3] @ c + volume.affine[:3, 3]
                                  for c in ([0, 0, 0], np.array(volume.shape) - 1)]), axis=0)
    assert np.all(ras >= low - 1) and np.all(ras <= high + 1), (ras, low, high)  # the click landed on the CT
    torch.manual_seed(0)  # the studio's untrained position model is built from seed 0
    model = VoCoModel(default_backbone("small"), "small").eval()
    with torch.no_grad():
        sub = predict_positions(model, volume, points_ras=ras.reshape(1, 3)).subvolumes[0]
    assert len(rows) == recipe.num_bases
    assert [r[1:3] for r in rows] == [[k // 3, k % 3] for k in range(9)]
    np.testing.assert_allclose(page_true, sub.true, atol=1e-3)
    np.testing.assert_allclose(page_pred, sub.predicted, atol=1e-3)
    assert page_true.max() > 0  # the target crop overlaps some base crop


def _segment_fast(page, tmp, name: str = "fast") -> None:
    """Segment the input CT from the page with a model that votes label 1 everywhere (known overlay)."""
    model = _package(tmp / f"{name}.vocomodel", spacing=6.0, overlap=0.25, everywhere=1)
    _import(page, model)
    _start_run(page, "#apply")
    assert _run_end(page, "segment", 300) == "segment succeeded", page.inner_text("#error")


def test_segment_shows_overlay_and_saves_without_overwriting(studio):
    from PIL import Image

    page, tmp = studio.page, studio.tmp
    page.uncheck("#show-grid")  # the grid's filled boxes would hide the overlay
    wait_text(page, "#label-grid", r"^$")
    view_image(page, 0).screenshot(path=str(tmp / "before.png"))
    before = np.asarray(Image.open(tmp / "before.png").convert("RGB")).astype(int)
    _segment_fast(page, tmp)

    def orange(img):  # the 'organ' segment's colour (1.0, 0.5, 0.0) blended over grey CT
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        return int(((r - b > 80) & (r > g + 30)).sum())

    deadline, after = time.monotonic() + 90, before
    while time.monotonic() < deadline:  # the overlay arrives with the next streamed frame
        view_image(page, 0).screenshot(path=str(tmp / "after.png"))
        after = np.asarray(Image.open(tmp / "after.png").convert("RGB")).astype(int)
        if orange(after) > after.shape[0] * after.shape[1] / 3:
            break
        page.wait_for_timeout(1000)
    screenshot(page, "segmentation")
    # label 1 everywhere: the whole CT in the view turns orange (a third of the view or more); before, nothing is
    assert orange(after) > after.shape[0] * after.shape[1] / 3 and orange(after) > 10 * orange(before), (
        orange(before), orange(after))

    out = tmp / "result.seg.nrrd"
    _fill(page, "#seg-output", str(out))
    page.click("#save-seg")
    wait_text(page, "#saved-path", re.escape(str(out)))
    assert out.stat().st_size > 0
    stamp = out.stat().st_mtime_ns
    page.click("#save-seg")  # a second save without 'overwrite' is refused with one line
    wait_text(page, "#error", r"already exists")
    assert out.stat().st_mtime_ns == stamp


def test_apply_turns_into_cancel_which_ends_the_run_within_5_s(studio):
    import psutil

    page, tmp = studio.page, studio.tmp
    _import(page, _package(tmp / "slow.vocomodel", spacing=1.0, overlap=0.9))
    _start_run(page, "#apply")
    wait_text(page, "#progress-text", r"infer|preprocess|\d+/\d+", timeout_s=180)
    pid = int(wait_text(page, "#run-pid", r"\d+"))
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    assert _button_text(page, "#apply") == "cancel" and page.get_attribute("#apply", "title") == \
        "Stop the segmentation."
    start = time.monotonic()
    page.click("#apply")
    assert _run_end(page, "segment", 10) == "segment cancelled", page.inner_text("#error")
    gone, alive = psutil.wait_procs(tree, timeout=max(0.1, 5.0 - (time.monotonic() - start)))
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert time.monotonic() - start < 5.0
    assert _button_text(page, "#apply") == "apply"


def test_pretraining_losses_and_eta_then_cancel_and_resume_from_the_checkpoint(studio, sample):
    from vococore.training.checkpoint import load_checkpoint

    page, tmp = studio.page, studio.tmp
    data, out, steps = tmp / "ct", tmp / "pretrain", 8
    data.mkdir()
    shutil.copy(sample("TotalSegCTSmall"), data / "case0.nii.gz")
    page.select_option("#train-tab", "0")
    page.select_option("#recipe", "small")
    _fill(page, "#pretrain-data", str(data))
    _fill(page, "#pretrain-output", str(out))
    _fill(page, "#pretrain-steps", str(steps))
    wait_text(page, "#label-train-output", re.escape(str(out)))
    _start_run(page, "#start-training")
    # the ETA line while it runs: the step reached and the time left that vococore's progress reports
    eta = wait_text(page, "#progress-text", rf"^pretrain [1-{steps - 1}]/{steps}, about \d+ (s|min) left$",
                    timeout_s=180)
    assert _button_text(page, "#start-training") == "cancel" and page.inner_text("#run-state") == ""
    page.locator("#start-training").scroll_into_view_if_needed()
    screenshot(page, "pretraining-eta")
    page.wait_for_function("document.querySelectorAll('#losses li').length >= 2", timeout=120_000)
    page.click("#start-training")  # Start is Cancel while the run goes
    assert _run_end(page, "pretrain", 10) == "pretrain cancelled", page.inner_text("#error")
    before = _loss_points(page)
    saved = int(load_checkpoint(out / "checkpoints" / "last.pt")["step"])
    assert 2 <= len(before) and [s for s, _ in before] == list(range(1, len(before) + 1)), before
    assert before[-1][0] >= saved >= 1 and saved < steps, (before, saved, eta)
    assert all(np.isfinite([v for _, v in before]))

    # the same folder again: the presenter asks for Resume, then the run continues from the checkpoint's step
    wait_text(page, "#start-training-reason", r"already holds a run; tick 'Resume'")
    assert page.is_disabled("#start-training")
    page.check("#resume")
    wait_text(page, "#start-training-reason", r"^Start in the background\.$")
    _start_run(page, "#start-training")
    assert _run_end(page, "pretrain", 300) == "pretrain succeeded", page.inner_text("#error")
    after = _loss_points(page)
    page.locator("#losses").scroll_into_view_if_needed()
    screenshot(page, "pretraining-resumed")
    assert [s for s, _ in after] == list(range(saved + 1, steps + 1)), (saved, after)
    assert all(np.isfinite([v for _, v in after]))
    assert int(load_checkpoint(out / "checkpoints" / "last.pt")["step"]) == steps
    page.uncheck("#resume")


def test_finetuning_from_the_page_shows_live_loss_and_dice(studio):
    page, tmp = studio.page, studio.tmp
    _segment_fast(page, tmp, "fast-for-finetune")  # the CT's segmentation to learn from
    page.select_option("#train-tab", "1")
    wait_text(page, "#start-training-reason", r"^Select the training CT volume and its segmentation\.$")
    volume = page.input_value("#input-volume")
    page.select_option("#finetune-volume", volume)
    segmentations = page.eval_on_selector_all("#finetune-segmentation option", "os => os.map(o => o.value)")
    page.select_option("#finetune-segmentation", segmentations[-1])  # the latest result
    page.select_option("#finetune-network", "cnn")
    _fill(page, "#finetune-output", str(tmp / "finetune"))
    wait_text(page, "#start-training-reason", r"^Start in the background\.$")
    # the steps typed while the page's client holds its state changes back (as while any request of its own is in
    # flight), then Start at once: the click carries what the page shows (once, Start ran the 500 default steps)
    page.evaluate("() => window.trame.client.beginBusy()")  # what each of its requests does till answered
    try:
        _fill(page, "#finetune-steps", "3")
        assert page.evaluate("() => window.trame.state.dirtyKeys.has('finetuneSteps')")  # not sent yet
        _start_run(page, "#start-training")
    finally:
        page.evaluate("() => window.trame.client.endBusy()")  # the held change goes out now
    live = None  # the loss list while the run still goes (Start shows Cancel)
    deadline = time.monotonic() + 300
    while not page.inner_text("#run-state").startswith("finetune "):  # succeeded, failed or cancelled
        assert time.monotonic() < deadline, page.inner_text("#progress-text")
        if live is None and page.query_selector_all("#losses li") and _button_text(page, "#start-training") == \
                "cancel":
            live = _loss_points(page)
        page.wait_for_timeout(100)
    page.locator("#dices").scroll_into_view_if_needed()
    assert page.inner_text("#run-state") == "finetune succeeded", page.inner_text("#error")
    screenshot(page, "finetuning")
    losses, dices = _loss_points(page), _loss_points(page, "#dices li")
    assert live and live[0][0] == 1, live
    assert [s for s, _ in losses] == [1, 2, 3] and all(np.isfinite([v for _, v in losses])), losses
    assert len(dices) == 1 and dices[0][0] == 3 and 0.0 <= dices[0][1] <= 1.0, dices
    latest = re.fullmatch(r"loss (\S+) · Dice (\S+)", page.inner_text("#latest-metrics"))
    assert latest and abs(float(latest.group(2)) - dices[0][1]) < 1e-3, page.inner_text("#latest-metrics")
    assert (tmp / "finetune" / "checkpoints" / "last.pt").is_file()


def test_upload_loads_the_ct_and_a_bad_path_gives_one_line(studio, sample):
    page, tmp = studio.page, studio.tmp
    upload = tmp / "uploaded_ct.nii.gz"
    shutil.copy(sample("TotalSegCTSmall"), upload)
    page.set_input_files("input#upload", str(upload))
    wait_text(page, "#volume-name", r"^uploaded_ct$", timeout_s=120)
    _fill(page, "#ct-path", str(tmp / "no-such.nii.gz"))
    page.click("#load-path")
    assert wait_text(page, "#error", r"no such file") == f"{tmp / 'no-such.nii.gz'}: no such file"
    assert page.inner_text("#volume-name") == "uploaded_ct"
