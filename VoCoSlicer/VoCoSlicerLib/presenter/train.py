"""The Train section of the presenter: the pretraining and fine-tuning tabs, each with its own checks, estimate
and output folder (a per-user folder when none is chosen), Start (which turns into Cancel) and resume."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from VoCoSlicerLib.presenter.view import Action, path_text

TAB_PRETRAIN, TAB_FINETUNE = 0, 1


def default_runs_dir() -> Path:
    """Where training runs go when the user chose no folder: ``$VOCOSLICER_RUNS`` or ``~/VoCoSlicer/runs``."""
    return Path(os.environ.get("VOCOSLICER_RUNS") or Path.home() / "VoCoSlicer" / "runs")


class TrainSection:
    """Mixed into :class:`~VoCoSlicerLib.presenter.Presenter`."""

    def set_tab(self, index: int) -> None:
        """The training tab shown (``TAB_PRETRAIN`` or ``TAB_FINETUNE``): its checks and estimate apply."""
        self.tab = int(index)
        self._changed()

    def loaded_volumes(self) -> list[Any]:
        """The scene's CT volumes (scalar volume nodes, not labelmaps), the pretraining data when no folder or
        datalist is chosen."""
        found = self.logic.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        volumes = [found.GetItemAsObject(i) for i in range(found.GetNumberOfItems())]
        return [v for v in volumes if not v.IsA("vtkMRMLLabelMapVolumeNode") and v.GetImageData() is not None]

    def output_dir(self, kind: str) -> str:
        """The chosen output folder of ``kind`` ("pretrain"/"finetune"), else a new per-user one."""
        chosen = path_text(self.state.pretrainOutput if kind == "pretrain" else self.state.finetuneOutput)
        if chosen:
            return chosen
        if kind not in self._outputs:
            root = Path(self._runs_dir) if self._runs_dir else default_runs_dir()
            self._outputs[kind] = str(root / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
        return self._outputs[kind]

    def pretrain_parameters(self) -> Any:
        """The pretraining run the tab describes (loaded volumes when no data path is chosen)."""
        from VoCoSlicerLib.parameters import PretrainParameters

        s = self.state
        data = path_text(s.pretrainData)
        return PretrainParameters(data=data, output_dir=self.output_dir("pretrain"), recipe=s.recipe,
                                  steps=int(s.pretrainSteps), device=s.device, resume=bool(s.resume),
                                  loaded_volumes=0 if data else len(self.loaded_volumes()))

    def finetune_parameters(self) -> Any:
        """The fine-tuning run the tab describes (pairs are filled when it starts)."""
        from VoCoSlicerLib.parameters import FinetuneParameters

        s = self.state
        return FinetuneParameters(weights=path_text(s.finetuneWeights), output_dir=self.output_dir("finetune"),
                                  network=s.finetuneNetwork, steps=int(s.finetuneSteps), device=s.device,
                                  resume=bool(s.resume))

    def _train_view(self, actions: dict[str, Action], labels: dict[str, str]) -> None:
        s = self.state
        if self.tab == TAB_PRETRAIN:
            params = self.pretrain_parameters()
            valid = params.validate()
            reason = valid.reason
            labels["train_estimate"] = "Pretraining: " + self.logic.training_estimate(params.steps, params.recipe)
            data = f"{params.loaded_volumes} loaded volume(s)" if params.loaded_volumes else params.data
            labels["train_data"] = f"Data: {data}" if data else "Data: choose a folder or load CT volumes."
            labels["train_output"] = f"Output and cache: {params.output_dir}"
        else:
            params = self.finetune_parameters()
            reason = ""
            if s.finetuneVolume is None or s.finetuneSegmentation is None:
                reason = "Select the training CT volume and its segmentation."
            elif not params.output_dir:
                reason = "Choose an output folder."
            labels["train_estimate"] = "Fine-tuning: " + self.logic.finetune_estimate(params.steps, params.network)
            labels["train_data"] = f"Data: '{s.finetuneVolume.GetName()}' with '{s.finetuneSegmentation.GetName()}'" \
                if not reason else "Data: -"
            labels["train_output"] = f"Output: {params.output_dir}"
        if self.running in ("pretrain", "finetune"):
            actions["start_training"] = Action(True, f"Stop the {self.running} run.", "Cancel")
        else:
            reason = self._busy() or reason
            actions["start_training"] = Action(not reason, reason or "Start in the background.", "Start")

    def start_training(self) -> None:
        """Start the shown tab's run, or cancel the running training (Start turns into Cancel)."""
        from vococore.utils.errors import VoCoError

        if self.running in ("pretrain", "finetune"):
            self.cancel()
            return
        action = self.view().actions["start_training"]
        if not action.enabled:
            raise VoCoError(action.reason)
        if self.tab == TAB_PRETRAIN:
            params = self.pretrain_parameters()
            volumes = self.loaded_volumes() if params.loaded_volumes else []
            self.logic.start_pretraining(params, on_finished=self._run_finished, volume_nodes=volumes)
            kind = "pretrain"
        else:
            s = self.state
            self.logic.start_finetuning([(s.finetuneVolume, s.finetuneSegmentation)], self.finetune_parameters(),
                                        on_finished=self._run_finished)
            kind = "finetune"
        self._outputs.pop(kind, None)  # the next run without a chosen folder gets a new one
        self._run_started(kind)
