"""The main job (``make demo``): VoCo end to end on the bundled real CT, written to one output folder."""

from vococore_demo.pipeline import DemoResult, DemoSettings, run_demo

__all__ = ["DemoResult", "DemoSettings", "run_demo"]
