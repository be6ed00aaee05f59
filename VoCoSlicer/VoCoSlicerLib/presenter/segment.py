"""The Segment section of the presenter: model choice and card, device decision with its reason, the estimate
for the chosen model, Apply (which turns into Cancel), importing model packages, and exporting the result as
DICOM SEG into the input's study."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from VoCoSlicerLib.presenter.view import Action


def _size_text(size: int | None) -> str:
    if not size:
        return "size unknown"
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


class SegmentSection:
    """Mixed into :class:`~VoCoSlicerLib.presenter.Presenter`.

    ``dicom_database`` is the :class:`VoCoSlicerLib.dicom_export.DicomStore` DICOM SEG export writes into (Slicer's
    DICOM database; None: no export)."""

    dicom_database: Any = None
    _segmented: tuple[Any, str] | None = None  # (input volume node, model id) of the last segmentation started

    def model_entry(self) -> Any:
        """The registry entry of the chosen model, or None when the name is not in the list."""
        try:
            return self.logic.registry.get(self.state.model)
        except Exception:
            return None

    def model_settings(self) -> dict[str, Any]:
        """Feature size, window, overlap, spacing and classes of the chosen model (remembered per model file)."""
        entry = self.model_entry()
        if entry is None:
            return {}
        package, weights = self.logic.model_files(entry.id)
        present = package or weights
        key = (entry.id, present, present.stat().st_mtime_ns if present else None)
        if key not in self._settings_cache:
            self._settings_cache[key] = self.logic.model_settings(entry.id)
        return self._settings_cache[key]

    def device_check(self) -> Any:
        """The device decision for the chosen model, or None while the GPU check is still running."""
        from VoCoSlicerLib import device

        if self.state.device == "cpu":
            return device.DeviceCheck("cpu", True)
        if self.gpu is None:
            return None
        settings = self.model_settings()
        need = device.inference_memory_gb(settings.get("feature_size", 48), settings.get("roi", (96, 96, 96)))
        return device.decide_device(self.state.device, need, self.gpu)

    def model_card(self) -> str:
        """Title, classes, size, license and source of the chosen model."""
        entry = self.model_entry()
        if entry is None:
            return ""
        package, weights = self.logic.model_files(entry.id)
        on_disk = package or weights
        size = on_disk.stat().st_size if on_disk else entry.size
        classes = self.model_settings().get("classes") or len(entry.labels)
        where = "downloaded" if on_disk else "downloaded on first use"
        source = entry.url or entry.description or entry.source
        return (f"{entry.title}: {classes} classes, {_size_text(size)} ({where}), license {entry.license}, "
                f"source {source}")

    def _segment_view(self, actions: dict[str, Action], labels: dict[str, str]) -> None:
        from VoCoSlicerLib.parameters import SegmentParameters

        s = self.state
        entry = self.model_entry()
        labels["model_card"] = self.model_card()
        volume = s.inputVolume
        estimate = ""
        if volume is not None and entry is not None:
            estimate = self.logic.segmentation_estimate(volume, self.model_settings())
        check = self.device_check()
        if check is None:
            labels["device"] = "Checking the GPU..."
        elif check.ok and check.device == "cuda":
            labels["device"] = f"Runs on {check.gpu_name} ({check.free_gb:.1f} GiB free of {check.total_gb:.1f})."
        elif check.ok and check.reason:
            labels["device"] = f"GPU not used: {check.reason} The run falls back to the CPU" + \
                (f": {estimate}." if estimate else ".")
        elif check.ok:
            labels["device"] = "Runs on the CPU" + (f": {estimate}." if estimate else ".")
        else:
            labels["device"] = check.reason
        labels["segment_estimate"] = estimate if check is None or check.device == "cpu" else \
            (f"{estimate}; on the GPU: seconds to a minute" if estimate else "")
        self._export_view(actions, labels)
        if self.running == "segment":
            actions["apply"] = Action(True, "Stop the segmentation.", "Cancel")
            return
        valid = SegmentParameters(model=s.model, device=s.device).validate(volume.GetName() if volume else None,
                                                                           None)
        reason = self._busy() or valid.reason or (check.reason if check is not None and not check.ok else "")
        if entry is None and not reason:
            reason = f"Unknown model {s.model!r}; choose one from the list."
        if not reason:
            package, weights = self.logic.model_files(entry.id)
            tip = "Segment the input volume in the background." if package or weights else \
                f"Downloads {entry.title} ({_size_text(entry.size)}) first, then segments the input volume."
        actions["apply"] = Action(not reason, reason or tip, "Apply")

    def apply(self, download: Callable[[Any], Any] | None = None) -> None:
        """Segment the input volume, or cancel the running segmentation (Apply turns into Cancel).

        ``download(entry)`` fetches a model not downloaded yet (the front end shows its progress)."""
        from vococore.utils.errors import VoCoError

        from VoCoSlicerLib.parameters import SegmentParameters

        if self.running == "segment":
            self.cancel()
            return
        actions: dict[str, Action] = {}
        self._segment_view(actions, {})  # only this section's checks: Apply's time on the GUI thread is counted
        action = actions["apply"]
        if not action.enabled:
            raise VoCoError(action.reason)
        entry = self.model_entry()
        package, weights = self.logic.model_files(entry.id)
        if package is None and weights is None:
            if download is None:
                raise VoCoError(f"model {entry.id!r} is not downloaded yet")
            download(entry)
        self.logic.start_segmentation(self.state.inputVolume, SegmentParameters(model=entry.id,
                                                                                device=self.state.device),
                                      on_finished=self._segmentation_finished, gpu=self.gpu)
        self._segmented = (self.state.inputVolume, entry.id)
        self._run_started("segment")

    def _segmentation_finished(self, state: Any, segmentation_node: Any) -> None:
        if segmentation_node is not None:
            # its segments carry the package's standard terms already: vococore infer writes them into the
            # .seg.nrrd header, which Slicer's storage node reads (checked in test_slicer_dicom_export)
            segmentation_node.CreateDefaultDisplayNodes()
        self._run_finished(state)

    def _result_package(self) -> Path | None:
        """The model package that made the last segmentation (converted from official weights by the run)."""
        if self._segmented is None:
            return None
        return self.logic.model_files(self._segmented[1])[0]

    def _export_view(self, actions: dict[str, Action], labels: dict[str, str]) -> None:
        from VoCoSlicerLib.dicom_export import not_from_dicom

        labels["export"] = self.texts.get("export", "")
        result, volume = self.logic.result_node, self._segmented[0] if self._segmented else None
        if self.running == "segment":  # its result replaces the current one; a training run does not matter
            reason = self._busy()
        elif result is None or result.GetScene() is None:
            reason = "Segment a volume first (Apply): the result is what DICOM SEG exports."
        elif volume is None or volume.GetScene() is None:
            reason = "The input volume of the result is no longer in the scene."
        elif not_from_dicom(volume):
            reason = not_from_dicom(volume)
        elif self.dicom_database is None:
            reason = "Slicer's DICOM database is not available."
        elif self._result_package() is None:
            reason = "The model package that made the result is gone; segment again."
        else:
            reason = ""
        tip = (f"Write '{result.GetName()}' as DICOM SEG into the study of '{volume.GetName()}' in the DICOM "
               "database, with the model's name, version and weights checksum." if not reason else reason)
        actions["export_dicom_seg"] = Action(not reason, tip, "Export DICOM SEG")

    def export_dicom_seg(self) -> Path:
        """Export the result as DICOM SEG referencing its input's DICOM images into the DICOM database, and put
        the result under the input's study; returns the file the database keeps."""
        import shutil
        import tempfile

        from vococore.utils.errors import VoCoError

        from VoCoSlicerLib.dicom_export import export_dicom_seg, package_algorithm

        actions: dict[str, Action] = {}
        self._export_view(actions, {})
        if not actions["export_dicom_seg"].enabled:
            raise VoCoError(actions["export_dicom_seg"].reason)
        result, volume = self.logic.result_node, self._segmented[0]
        algorithm = package_algorithm(self._result_package())
        folder = Path(tempfile.mkdtemp(prefix="dicomseg-", dir=self.logic.work_dir))
        try:  # written alone in a folder that the database imports (copying the file), then removed
            written = export_dicom_seg(result, volume, folder / "segmentation.dcm",
                                       self.dicom_database.file_for_instance, algorithm)
            stored = self.dicom_database.add(written)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.texts["export"] = f"DICOM SEG of '{result.GetName()}' added to the study of '{volume.GetName()}'."
        self._changed()
        return stored

    def import_model(self, path: str | Path) -> str:
        """Add a model package to the model list and choose it; returns its id. Only ``.vocomodel`` packages:
        a bare ``.pt`` checkpoint does not say its architecture, preprocessing or label names."""
        from vococore.segmentation.package import read_package_info
        from vococore.utils.errors import VoCoError

        path = Path(path)
        if not path.name.endswith(".vocomodel"):
            raise VoCoError("only VoCo model packages (.vocomodel) can be imported: a .pt checkpoint does not say "
                            "its architecture, preprocessing or label names. Fine-tuning (Train section) writes a "
                            "package; official VoComni models are in the model list already", path)
        info = read_package_info(path)  # refuses a file that is not a package, before anything is copied
        taken = {e.id for e in self.logic.registry.entries()}
        base = path.name[: -len(".vocomodel")]
        model_id = next(f"{base}-{n}" if n else base for n in range(len(taken) + 1)
                        if (f"{base}-{n}" if n else base) not in taken)
        entry = self.logic.registry.import_model(path, model_id, title=info.description or model_id,
                                                 labels={li.value: li.name for li in info.labels})
        self.state.model = entry.id
        self._changed()
        return entry.id
