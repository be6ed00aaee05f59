"""The extension's files hang together: the .ui holds every widget the widget code uses and binds every
parameter, CMake lists every file, the ExtensionsIndex entry follows the schema, icons are 128x128, the
library stays Qt-free, and the self-test runs inside Slicer (skipped here: no Qt)."""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "VoCoSlicer"
UI = MODULE / "Resources" / "UI" / "VoCoSlicer.ui"
SOURCE = (MODULE / "VoCoSlicer.py").read_text()

# parameter annotation -> widget classes that connectGui binds it to
# (connectGui binds a str to a QComboBox only with a Choice annotation: checked below)
WIDGETS_FOR_TYPE = {"str": {"QComboBox"}, "bool": {"QCheckBox"}, "int": {"QSpinBox"}, "Path": {"ctkPathLineEdit"},
                    "node": {"qMRMLNodeComboBox"}}


def _ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def _parameters() -> dict[str, str]:
    """Field name -> kind (str/bool/int/Path/node:<class>) of VoCoSlicerParameterNode, read from the source."""
    tree = ast.parse(SOURCE)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VoCoSlicerParameterNode")
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in cls.decorator_list)
    fields = {}
    for item in cls.body:
        if isinstance(item, ast.AnnAssign):
            text = ast.unparse(item.annotation)
            match = re.search(r"slicer\.(vtkMRML\w+)", text)
            fields[item.target.id] = f"node:{match.group(1)}" if match else \
                next(k for k in ("str", "bool", "int", "Path") if re.search(rf"\b{k}\b", text))
    return fields


def test_ui_parses_and_holds_every_widget_the_code_uses():
    widgets = _ui_widgets()
    # widgets used directly, and through the BUTTONS/LABELS tables that bind them to the presenter's view
    used = set(re.findall(r"self\.ui\.(\w+)", SOURCE)) | set(re.findall(r'"(\w+(?:Button|Label|CheckBox))"', SOURCE))
    assert len(used) > 15
    assert sorted(used - set(widgets)) == []
    root = ET.parse(UI).getroot()
    assert root.find("widget").get("class") == "qMRMLWidget"
    # every MRML widget gets the scene from the top-level widget
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {n for n, w in widgets.items() if w.get("class") in ("qMRMLNodeComboBox", "qSlicerMarkupsPlaceWidget")}
    assert mrml and mrml <= receivers


def test_every_parameter_is_bound_to_a_fitting_widget():
    fields = _parameters()
    bound = {}
    for name, widget in _ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget
    # 'model' is synced by hand (onModelSelected): its choices grow when the user imports a model, and
    # connectGui fills a QComboBox only from a fixed Choice annotation
    assert sorted(bound) == sorted(set(fields) - {"model"})
    assert "self._parameterNode.model = self.ui.modelComboBox.itemData(index)" in SOURCE
    for name, kind in fields.items():
        if name == "model":
            continue
        widget = bound[name]
        assert widget.get("class") in WIDGETS_FOR_TYPE[kind.split(":")[0]], (name, widget.get("class"))
        if widget.get("class") == "QComboBox":
            assert re.search(rf"\b{name}: Annotated\[str, Choice\(", SOURCE), name
        if kind.startswith("node:"):
            types = [s.text for p in widget.findall("property") if p.get("name") == "nodeTypes"
                     for s in p.iter("string")]
            assert types == [kind.split(":")[1]], name


def _untracked(folder: Path = MODULE) -> set[str]:
    """Files under ``folder`` git does not track yet (someone's work in progress): judged once committed."""
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "."], cwd=folder,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return set()
    return set(out.split())


def _cmake_list(cmake: str, name: str) -> set[str]:
    block = re.search(rf"set\({name}\n(.*?)\n\s*\)", cmake, re.S)
    assert block, name
    return {line.strip() for line in block.group(1).splitlines() if line.strip()}


def test_extension_installs_every_file_of_the_module_and_of_vococore():
    """What the extension installs: every file CMake lists exists, and every file of the module and every file
    of the vococore package (which the extension ships, so no git or repository copy is needed) is listed."""
    cmake = (MODULE / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "VoCoSlicer")
    module = _cmake_list(cmake, "MODULE_PYTHON_SCRIPTS") | _cmake_list(cmake, "MODULE_PYTHON_RESOURCES")
    on_disk = {p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"
               and p.relative_to(MODULE).parts[0] != "VoCoStudio"}  # the web front end: never installed in Slicer
    assert sorted(module - on_disk) == []  # listed but missing
    assert not any(name.startswith("VoCoStudio") for name in module)
    assert sorted(on_disk - _untracked() - module) == []  # present but not installed
    core = ROOT / "VoCoCore"
    shipped = _cmake_list(cmake, "VOCOCORE_PYTHON_SCRIPTS") | _cmake_list(cmake, "VOCOCORE_PYTHON_RESOURCES")
    package = {p.relative_to(core).as_posix() for p in (core / "vococore").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    untracked_core = {f"vococore/{p}" for p in _untracked(core / "vococore")}
    assert sorted(shipped - package) == []
    assert sorted(package - untracked_core - shipped) == []
    assert all(f.endswith(".py") for f in _cmake_list(cmake, "VOCOCORE_PYTHON_SCRIPTS"))
    assert "slicerMacroBuildScriptedModule" in cmake and "WITH_GENERIC_TESTS" in cmake
    assert re.search(r"ctkMacroCompilePythonScript\(\s*TARGET_NAME VoCoCore\s+SCRIPTS \"\$\{VOCOCORE_PYTHON_SCRIPTS\}\""
                     r"\s+RESOURCES \"\$\{VOCOCORE_PYTHON_RESOURCES\}\"\s+SOURCE_DIR \$\{CMAKE_CURRENT_SOURCE_DIR\}/"
                     r"\.\./VoCoCore\s", cmake)
    assert "slicer_add_python_unittest(SCRIPT VoCoSlicer.py)" in cmake


def test_top_level_cmake_is_an_extension():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    order = ["cmake_minimum_required", "project(VoCoSlicer)", "EXTENSION_HOMEPAGE", "EXTENSION_DEPENDS",
             "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(VoCoSlicer)",
             "## NEXT_MODULE", "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]
    positions = [cmake.index(token) for token in order]
    assert positions == sorted(positions)
    values = dict(re.findall(r'set\((EXTENSION_\w+) "([^"]*)"\)', cmake))
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert values.get(f"EXTENSION_{key}"), key
    assert values["EXTENSION_DEPENDS"] == "PyTorch"
    # the icon and screenshot URLs point at files of this repository
    prefix = "https://raw.githubusercontent.com/vocoslicer/SlicerVoCo/main/"
    for url in [values["EXTENSION_ICONURL"], *values["EXTENSION_SCREENSHOTURLS"].split()]:
        assert url.startswith(prefix) and "?" not in url
        assert (ROOT / url[len(prefix):]).is_file(), url


def test_extensions_index_entry():
    entry = json.loads((ROOT / "Resources" / "ExtensionsIndex" / "VoCoSlicer.json").read_text())
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert re.search(r"slicer-extension-catalog-entry-schema-v1\.0\.[12]\.json", entry["$schema"])
    cmake = (ROOT / "CMakeLists.txt").read_text()
    depends = re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', cmake).group(1).split()
    assert entry["build_dependencies"] == depends == ["PyTorch"]
    assert 1 <= entry["tier"] <= 5 and entry["scm_revision"] == "main"


def test_icons_are_128_pngs():
    from PIL import Image

    for path in (ROOT / "Resources" / "Icons" / "VoCoSlicer.png", MODULE / "Resources" / "Icons" / "VoCoSlicer.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (128, 128)
    shots = list((ROOT / "Resources" / "Screenshots").glob("*.png"))
    assert shots
    with Image.open(shots[0]) as image:
        assert image.size[0] >= 800


def test_library_is_qt_free_and_module_file_holds_the_slicer_classes():
    forbidden = {"qt", "ctk", "PythonQt", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"}
    for path in (MODULE / "VoCoSlicerLib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            assert not forbidden & set(names), (path.name, names)
        assert len(path.read_text().splitlines()) < 400, path.name
    tree = ast.parse(SOURCE)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    bases = {name: [ast.unparse(b) for b in cls.bases] for name, cls in classes.items()}
    assert bases["VoCoSlicer"] == ["ScriptedLoadableModule"]
    assert bases["VoCoSlicerLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["VoCoSlicerTest"] == ["ScriptedLoadableModuleTest"]
    tests = {f.name for f in classes["VoCoSlicerTest"].body if isinstance(f, ast.FunctionDef)}
    assert {"setUp", "runTest", "test_grid_on_sample_ct", "test_segmentation_end_to_end"} <= tests
    assert "tryWithErrorDisplay" in SOURCE and "connectGui(self.ui)" in SOURCE


def test_self_test_in_slicer():
    pytest.importorskip("qt", reason="the self-test needs the Slicer application (Qt); run it with Slicer --testing")
    import sys

    sys.path.insert(0, str(MODULE))
    from VoCoSlicer import VoCoSlicerTest

    VoCoSlicerTest().runTest()


def test_module_file_loads_before_vococore_is_installed():
    """VoCoSlicer.py imports only Lib modules that need neither vococore nor torch at import time, so a fresh
    Slicer can load the module and offer the installation."""
    heavy = ("vococore", "torch", "monai", "numpy")
    top = [n for n in ast.parse(SOURCE).body if isinstance(n, ast.ImportFrom) and
           (n.module or "").startswith("VoCoSlicerLib")]
    modules = {"VoCoSlicerLib." + a.name if n.module == "VoCoSlicerLib" else n.module for n in top for a in n.names}
    assert "VoCoSlicerLib.logic" not in modules
    seen, todo = set(), list(modules)
    while todo:  # follow the Lib's own top-level imports
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((MODULE / (name.replace(".", "/") + ".py")).read_text())
        for node in tree.body:
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in heavy for a in node.names), (name, ast.unparse(node))
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in heavy, (name, ast.unparse(node))
                if (node.module or "").startswith("VoCoSlicerLib."):
                    todo.append(node.module)
    assert {"VoCoSlicerLib.install", "VoCoSlicerLib.parameters", "VoCoSlicerLib.runner"} <= seen
