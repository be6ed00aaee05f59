"""Label ids with names, colours and standard terminology: what a labelmap's values mean, carried into files
(``.seg.nrrd``, DICOM SEG) and Slicer segments."""

from __future__ import annotations

import colorsys
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

Code = tuple[str, str, str]  # (coding scheme designator, code value, code meaning), e.g. ("SCT", "10200004", "Liver")


@dataclass(frozen=True)
class Terminology:
    """The coded meaning of a segment, as DICOM SEG and Slicer's terminology hold it (SNOMED CT codes)."""

    category: Code
    type: Code
    type_modifier: Code | None = None  # laterality of an anatomical structure
    region: Code | None = None  # anatomic region of a finding (e.g. a neoplasm in the liver)
    region_modifier: Code | None = None
    context: str = "Segmentation category and type - DICOM master list"
    anatomic_context: str = "Anatomic codes - DICOM master list"
    note: str = ""

    def to_slicer(self) -> dict[str, Any]:
        """The entry as ``slicerio`` writes Slicer's ``TerminologyEntry`` segment tag."""
        entry: dict[str, Any] = {"contextName": self.context, "category": list(self.category),
                                 "type": list(self.type)}
        if self.type_modifier:
            entry["typeModifier"] = list(self.type_modifier)
        if self.region:
            entry["anatomicContextName"] = self.anatomic_context
            entry["anatomicRegion"] = list(self.region)
            if self.region_modifier:
                entry["anatomicRegionModifier"] = list(self.region_modifier)
        return entry

    def to_json(self) -> dict[str, Any]:
        """Plain data for a package's label list."""
        data: dict[str, Any] = {"category": list(self.category), "type": list(self.type), "context": self.context}
        for key in ("type_modifier", "region", "region_modifier"):
            if getattr(self, key):
                data[key] = list(getattr(self, key))
        if self.region:
            data["anatomic_context"] = self.anatomic_context
        if self.note:
            data["note"] = self.note
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Terminology":
        """Inverse of :meth:`to_json` (also reads the entries of ``terminology.json``)."""
        codes = {k: _code(data[k]) for k in ("category", "type", "type_modifier", "region", "region_modifier")
                 if data.get(k)}
        extra = {k: str(data[k]) for k in ("context", "anatomic_context", "note") if data.get(k)}
        return cls(**codes, **extra)


@dataclass(frozen=True)
class LabelInfo:
    """One label value of a labelmap, with its segment name, RGB colour (each 0..1) and, where a standard code
    exists for it, its terminology."""

    value: int
    name: str
    color: tuple[float, float, float]
    terminology: Terminology | None = None


def _code(item: Any) -> Code:
    scheme, value, meaning = (str(x) for x in item)
    return scheme, value, meaning


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    return json.loads(resources.files("vococore.io").joinpath("terminology.json").read_text())


def standard_term(name: str) -> tuple[Terminology, tuple[float, float, float]] | None:
    """Terminology and colour (0..1) of a label name our packages use (TotalSegmentator v2 names, VoComni
    classes), from ``terminology.json``; None for a name without a standard code (see :func:`no_standard_code`)."""
    entry = _table()["terms"].get(name)
    if entry is None or "no_standard_code" in entry:
        return None
    term = Terminology.from_json({"anatomic_context": _table()["anatomic_context"], **entry})
    return term, _table_color(entry)


def no_standard_code(name: str) -> str:
    """Why a label name of ours has no standard code, as the label map says (the VoComni pseudo-label tumour
    classes); empty for a coded name or one the label map does not know."""
    return str(_table()["terms"].get(name, {}).get("no_standard_code", ""))


def _table_color(entry: dict[str, Any]) -> tuple[float, float, float]:
    return tuple(round(c / 255.0, 4) for c in entry["color"])  # type: ignore[return-value]


def default_color(value: int) -> tuple[float, float, float]:
    """A distinct, stable colour for a label value (golden-angle hues), for labels given without colour."""
    hue = (value * 0.618033988749895) % 1.0
    return tuple(round(c, 4) for c in colorsys.hsv_to_rgb(hue, 0.65, 0.95))  # type: ignore[return-value]


def make_label(value: int, name: str, color: tuple[float, float, float] | None = None) -> LabelInfo:
    """A label with the standard terminology of ``name`` when it has one; the colour is ``color``, else the
    term's colour, else :func:`default_color`."""
    found = standard_term(name)
    term, term_color = found if found else (None, None)
    if found is None and no_standard_code(name):  # uncoded, but the label map still gives its colour
        term_color = _table_color(_table()["terms"][name])
    chosen = color if color is not None else term_color or default_color(value)
    return LabelInfo(int(value), str(name), tuple(float(c) for c in chosen), term)  # type: ignore[arg-type]


def make_labels(names: dict[int, str], colors: dict[int, tuple[float, float, float]] | None = None) -> list[LabelInfo]:
    """Build a sorted label list from ``{value: name}`` with :func:`make_label` (background 0 dropped)."""
    colors = colors or {}
    return [make_label(int(v), n, colors.get(v)) for v, n in sorted(names.items()) if int(v) != 0]
