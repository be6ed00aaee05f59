"""VoCo Studio clicked through in a real headless Chromium against the real server (trame-slicer, MRML, vococore
subprocesses): the sample CT, the grid, a click's position prediction, segmentation with its overlay, cancel, and a
short pretraining run's losses. Screenshots are kept in output/studio-screenshots."""

from __future__ import annotations

import re
import shutil
import time

import numpy as np
import pytest

from studio_harness import browser_page, free_port, require_browser_stack, screenshot, studio_server, view_image, \
    wait_text

require_browser_stack()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """One server and one page for the module (starting them costs tens of seconds on 2 cores)."""
    tmp = tmp_path_factory.mktemp("studio")
    with studio_server(tmp, "--port", str(free_port())) as (proc, url), browser_page(url) as page:
        wait_text(page, "#volume-name", r"example_ct_sm", timeout_s=180)
        view_image(page, 0)
        yield page, tmp


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


def test_grid_and_clicked_position_match_vococore(studio, sample):
    import torch

    from vococore.io import read_volume
    from vococore.pretraining.model import VoCoModel
    from vococore.pretraining.position import predict_positions
    from vococore.pretraining.pretext import default_backbone, get_recipe

    page, _ = studio
    page.click("#show-grid")
    recipe = get_recipe("small")
    wait_text(page, "#grid-count", rf"^{recipe.num_bases} base crops")
    axial = view_image(page, 0)
    box = axial.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55)
    ras_text = wait_text(page, "#click-ras", r"\[.*\]", timeout_s=120)
    page.wait_for_function("document.querySelectorAll('#positions .position-row').length > 0")
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
    np.testing.assert_allclose(page_true, sub.true, atol=1e-3)
    np.testing.assert_allclose(page_pred, sub.predicted, atol=1e-3)
    assert page_true.max() > 0  # the target crop overlaps some base crop


def test_segment_shows_overlay_and_saves_without_overwriting(studio):
    from PIL import Image

    page, tmp = studio
    model = _package(tmp / "fast.vocomodel", spacing=6.0, overlap=0.25, everywhere=1)
    view_image(page, 0).screenshot(path=str(tmp / "before.png"))
    before = np.asarray(Image.open(tmp / "before.png").convert("RGB")).astype(int)
    _fill(page, "#model-path", str(model))
    page.click("#segment")
    wait_text(page, "#run-state", r"segment: succeeded", timeout_s=300)

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
    # label 1 everywhere: the whole CT in the view turns orange (a third of the view or more); before, only the
    # earlier test's grid outlines come near that colour
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


def test_cancel_ends_the_run_within_5_s(studio):
    import psutil

    page, tmp = studio
    slow = _package(tmp / "slow.vocomodel", spacing=1.0, overlap=0.9)
    _fill(page, "#model-path", str(slow))
    page.click("#segment")
    wait_text(page, "#progress-text", r"infer|preprocess|\d+/\d+", timeout_s=180)
    pid = int(wait_text(page, "#run-pid", r"\d+"))
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    start = time.monotonic()
    page.click("#cancel")
    wait_text(page, "#run-state", r"cancelled", timeout_s=10)
    gone, alive = psutil.wait_procs(tree, timeout=max(0.1, 5.0 - (time.monotonic() - start)))
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert time.monotonic() - start < 5.0


def test_pretraining_losses_appear(studio, sample):
    page, tmp = studio
    data = tmp / "ct"
    data.mkdir()
    shutil.copy(sample("TotalSegCTSmall"), data / "case0.nii.gz")
    _fill(page, "#train-data", str(data))
    _fill(page, "#train-output", str(tmp / "pretrain"))
    _fill(page, "#train-steps", "2")
    page.click("#train")
    wait_text(page, "#run-state", r"pretrain: succeeded", timeout_s=400)
    losses = [float(re.search(r"loss (\S+)", li.inner_text()).group(1)) for li in page.query_selector_all("#losses li")]
    screenshot(page, "pretraining")
    assert len(losses) == 2 and all(np.isfinite(losses)), losses
    assert (tmp / "pretrain" / "checkpoints" / "last.pt").is_file()


def test_upload_loads_the_ct_and_a_bad_path_gives_one_line(studio, sample):
    page, tmp = studio
    upload = tmp / "uploaded_ct.nii.gz"
    shutil.copy(sample("TotalSegCTSmall"), upload)
    page.set_input_files("input#upload", str(upload))
    wait_text(page, "#volume-name", r"^uploaded_ct$", timeout_s=120)
    _fill(page, "#ct-path", str(tmp / "no-such.nii.gz"))
    page.click("#load-path")
    assert wait_text(page, "#error", r"no such file") == f"{tmp / 'no-such.nii.gz'}: no such file"
    assert page.inner_text("#volume-name") == "uploaded_ct"
