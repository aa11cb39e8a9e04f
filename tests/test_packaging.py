"""Packaging, fast checks only: the spec and what it names exist and import, the frozen entry point dispatches,
the smoke test's own checks pass on good input and fail on bad input. The bundle build itself
(`bash packaging/build.sh`, many minutes) stays out of the suite."""
import configparser
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
SPEC = PACKAGING / "covidseg-assist.spec"


def _load(name: str):
    """Import a module from packaging/ by path (the folder is not a package: it must not shadow `packaging`)."""
    spec = importlib.util.spec_from_file_location(name, PACKAGING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def entry():
    sys.path.insert(0, str(PACKAGING))          # the entry point imports covidseg_smoke as PyInstaller sees it
    try:
        yield _load("covidseg_assist")
    finally:
        sys.path.remove(str(PACKAGING))


@pytest.fixture(scope="module")
def smoke():
    return _load("covidseg_smoke")


def test_spec_compiles_and_names_files_that_exist():
    text = SPEC.read_text(encoding="utf-8")
    compile(text, str(SPEC), "exec")
    scripts = re.findall(r'PACKAGING / "([^"]+\.py)"', text)
    assert scripts == ["covidseg_assist.py"]
    for name in scripts:
        assert (PACKAGING / name).is_file()
    assert (ROOT / "resources" / "icon.svg").is_file()
    # the one-folder layout, the platform branches and the plugin metadata pylibjpeg needs
    assert "exclude_binaries=True" in text and "COLLECT(" in text and "BUNDLE(" in text
    for needle in ('"ico"', '"icns"', '"png"', "copy_metadata", '"pylibjpeg-openjpeg"', "SimpleITK", "cv2"):
        assert needle in text, needle


def _lazily_imported_packages() -> set[str]:
    """Third-party packages that covidseg_core or app import only inside functions (PyInstaller's analysis of
    module-level imports does not see them)."""
    import ast

    lazy, top = set(), set()
    for f in [*(ROOT / "covidseg_core").rglob("*.py"), *(ROOT / "app").rglob("*.py")]:
        tree = ast.parse(f.read_text(encoding="utf-8"))
        inner = [n for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) for n in ast.walk(fn)]
        for names, nodes in ((lazy, inner), (top, tree.body)):
            for n in nodes:
                if isinstance(n, ast.Import):
                    names.update(a.name.split(".")[0] for a in n.names)
                elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                    names.add(n.module.split(".")[0])
    return lazy - top - set(sys.stdlib_module_names)


def test_spec_bundles_what_the_code_imports_lazily():
    text = SPEC.read_text(encoding="utf-8")
    excludes = text[text.index("excludes = ["):].split("]", 1)[0]
    lazy = _lazily_imported_packages()
    assert {"matplotlib", "onnxruntime", "highdicom"} <= lazy        # the detector itself works
    for package in lazy:
        assert f'"{package}' in text, f"{package} is imported lazily but the spec does not name it"
        assert f'"{package}"' not in excludes, f"the spec excludes {package}, which the code imports"


def test_packaging_folder_does_not_shadow_the_packaging_library():
    assert not (PACKAGING / "__init__.py").exists()


def test_build_script_pins_torch_and_pyinstaller():
    text = (PACKAGING / "build.sh").read_text(encoding="utf-8")
    subprocess.run(["bash", "-n", str(PACKAGING / "build.sh")], check=True)
    assert re.search(r"TORCH_SPEC:-torch==\d+\.\d+\.\d+", text)
    assert re.search(r"pyinstaller==\d+\.\d+\.\d+", text)
    assert "-m venv" in text and "--smoke-test" in text
    assert not re.search(r"pip install[^\n]*\btorch\b(?!==|_)", text.replace("$TORCH_SPEC", ""))


def test_entry_point_dispatches_cli(entry, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        entry.main(["cli", "--version"])
    assert exc.value.code == 0
    assert "covidseg" in capsys.readouterr().out
    from covidseg_core.demo import write_demo

    write_demo(tmp_path, n_slices=4, size=32)
    assert entry.main(["cli", "info", str(tmp_path / "volume" / "ct.nii.gz")]) == 0
    assert json.loads(capsys.readouterr().out)


def test_entry_point_starts_gui_by_default(entry, monkeypatch):
    pytest.importorskip("PySide6")
    import app

    seen = []
    monkeypatch.setattr(app, "main", lambda argv: seen.append(argv) or 7)
    assert entry.main(["some/study.nii.gz"]) == 7
    assert seen == [["some/study.nii.gz"]]


def test_entry_point_smoke_flag_reaches_smoke_module(entry, monkeypatch, smoke):
    seen = []
    monkeypatch.setattr(smoke, "main", lambda argv: seen.append(argv) or 0)
    assert entry.main(["--smoke-test", "OUT", "--skip-training"]) == 0
    assert seen == [["OUT", "--skip-training"]]


def test_desktop_entry_runs_the_bundled_executable():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(PACKAGING / "linux" / "covidseg-assist.desktop", encoding="utf-8")
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Terminal"] == "false"
    assert entry["Exec"].split()[0] == "covidseg-assist" == entry["Icon"]
    assert '"covidseg-assist"' in SPEC.read_text(encoding="utf-8")
    subprocess.run(["bash", "-n", str(PACKAGING / "linux" / "install.sh")], check=True)
    validator = shutil.which("desktop-file-validate")       # desktop-file-utils, where installed
    if validator:
        done = subprocess.run([validator, str(PACKAGING / "linux" / "covidseg-assist.desktop")],
                              capture_output=True, text=True)
        assert done.returncode == 0 and "error" not in done.stdout, done.stdout


def test_make_icons_writes_png_ico_icns(tmp_path):
    pytest.importorskip("PySide6.QtSvg")
    from PIL import Image

    icons = _load("make_icons").make_icons(tmp_path)
    assert Image.open(icons["png"]).size == (256, 256)
    assert Image.open(icons["ico"]).format == "ICO"
    assert Image.open(icons["icns"]).format == "ICNS"
    rgba = np.asarray(Image.open(icons["png"]).convert("RGBA"))
    assert rgba[..., 3].min() == 0 and rgba[128, 128, 3] == 255      # transparent corners, drawn middle


def _nifti(path, arr, spacing=(1.4, 1.4, 5.0), origin=(0.0, 0.0, 0.0)):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


def test_smoke_nifti_check_passes_and_fails(smoke, tmp_path):
    scan = tmp_path / "ct.nii.gz"
    _nifti(scan, np.zeros((3, 8, 8), np.int16))
    truth = tmp_path / "truth.nii.gz"
    gt = np.zeros((3, 8, 8), np.uint8)
    gt[1, 2:4, 2:4] = 1
    _nifti(truth, gt)
    good = tmp_path / "good"
    good.mkdir()
    _nifti(good / "mask.nii.gz", gt)
    result = smoke.check_nifti_prediction(good, scan, truth)
    assert result["dice_vs_demo_truth"] == pytest.approx(1.0)
    moved = tmp_path / "moved"
    moved.mkdir()
    _nifti(moved / "mask.nii.gz", gt, origin=(5.0, 0.0, 0.0))
    with pytest.raises(smoke.SmokeFailure, match="Origin"):
        smoke.check_nifti_prediction(moved, scan, truth)
    grey = tmp_path / "grey"
    grey.mkdir()
    _nifti(grey / "mask.nii.gz", (gt * 7).astype(np.uint8))
    with pytest.raises(smoke.SmokeFailure, match="binary"):
        smoke.check_nifti_prediction(grey, scan, truth)
    with pytest.raises(smoke.SmokeFailure, match="no NIfTI"):
        smoke.check_nifti_prediction(tmp_path / "empty", scan, truth)


def test_smoke_dicom_jpeg2000_check(smoke, tmp_path):
    report = smoke._Report(tmp_path, 0.0, "test")
    smoke.check_dicom_jpeg2000(tmp_path, report)
    assert report.data["dicom_jpeg2000"] == {"slices": 4, "is_hu": True}


def test_smoke_launch_clock_ignores_stale_values(smoke, monkeypatch):
    monkeypatch.setenv("COVIDSEG_LAUNCH_T0", "12.5")
    t0, source = smoke._launch_time()
    assert t0 == smoke._IMPORTED_AT and "ignored" in source
    monkeypatch.setenv("COVIDSEG_LAUNCH_T0", str(smoke._IMPORTED_AT - 2.0))
    assert smoke._launch_time()[0] == pytest.approx(smoke._IMPORTED_AT - 2.0)


def test_smoke_gui_and_dicom_steps_unfrozen(smoke, tmp_path, monkeypatch):
    """The smoke test's GUI part as the bundle runs it (here from source): window up, demo opened, closed."""
    pytest.importorskip("PySide6")
    pytest.importorskip("pyqtgraph")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.delenv("COVIDSEG_LAUNCH_T0", raising=False)
    data = smoke.run_smoke_test(tmp_path, timeout_s=300, skip_training=True)
    assert data["ok"] and data["step"] == "done"
    assert data["gui"]["study_shape"] == [32, 128, 128]
    assert data["gui"]["labels"]["unlabelled"] == 0
    assert data["gui"]["device_label"].startswith("Device: ")
    assert 0 < data["timings_s"]["startup_to_window"] < data["timings_s"]["total"]
    assert data["versions"]["torch"]
    saved = json.loads((tmp_path / smoke.REPORT_NAME).read_text(encoding="utf-8"))
    assert saved["ok"] and saved["timings_s"] == data["timings_s"]


def test_smoke_cli_step_names_a_missing_command(smoke, tmp_path):
    with pytest.raises(smoke.SmokeFailure, match="no `nosuch` command"):
        smoke._cli(["--quiet", "nosuch", "--out", str(tmp_path)])
    from covidseg_core.demo import write_demo

    write_demo(tmp_path, n_slices=4, size=32)
    smoke._cli(["--quiet", "info", str(tmp_path / "volume" / "ct.nii.gz")])
