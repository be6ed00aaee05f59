"""Argument types that validate each option where it is parsed, so no invalid value reaches torch or MONAI, and
a parser whose errors are one line (argparse prints its whole usage block first)."""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import NoReturn

# Window sizes the networks accept: SwinUNETR halves the grid 5 times (patch 2, then 4 mergings), BasicUNet 4.
ROI_MULTIPLE = {"swin": 32, "cnn": 16}
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the option and the problem (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text: str) -> int:
    """An integer of at least 1 (steps, batch sizes, window sizes)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def count(text: str) -> int:
    """An integer of at least 0 (how many random sub-volumes)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text!r}")
    return value


def label_id(text: str) -> int:
    """A label value of a labelmap: 0 (background) to 65535."""
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a label value must be 0..65535, got {text!r}")
    return value


def overlap(text: str) -> float:
    """Sliding-window overlap, a fraction in [0, 1)."""
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A finite number (coordinates in mm)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def device(text: str) -> str:
    """auto, cpu, mps, cuda or cuda:N (whether CUDA is there is checked when the device is picked)."""
    if not DEVICE.match(text.strip()):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text.strip()


def label_map(text: str) -> tuple[int, int]:
    """``FROM:TO``, a label value of one map renamed to a value of the other (``--map 1:5``)."""
    src, sep, dst = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expects FROM:TO label values, e.g. 1:5, got {text!r}")
    return label_id(src), label_id(dst)


def check_roi(roi: tuple[int, int, int] | None, arch: str, where: str) -> None:
    """Refuse a window the packaged network cannot take (one line, before any work)."""
    from vococore.utils.errors import VoCoError

    multiple = ROI_MULTIPLE.get(arch)
    if roi and multiple and any(r % multiple for r in roi):
        raise VoCoError(f"--roi {' '.join(map(str, roi))}: a {arch} network needs each size to be a multiple of "
                        f"{multiple}", where)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
