"""The main window's actions and menus, as tables: what each action is called, its keys and tip, and what it
calls on the window. main_window.py builds them with `make_actions` / `make_menus` and wires the rest."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence

from .slice_view import LAYERS, WINDOW_PRESETS
from .study_files import locate_study

# name, text, what it calls on the window (w), shortcuts, tip
ACTIONS = [
    ("open_study", "Open &study…", lambda w: w.choose_study, ["Ctrl+O"],
     "Open a DICOM folder, a NIfTI file or a folder of slice images"),
    ("open_image_folder", "Open image &folder…", lambda w: w.choose_image_folder, [], ""),
    ("open_project", "Open &project…", lambda w: w.choose_project, ["Ctrl+Shift+O"], ""),
    ("add_study", "&Add study…", lambda w: lambda: w.choose_study_to_add(), ["Ctrl+Shift+A"],
     "Add a NIfTI volume or DICOM series to this project"),
    ("add_study_folder", "Add study &folder…", lambda w: lambda: w.choose_study_to_add(folder=True), [],
     "Add a DICOM folder or a folder of slice images to this project"),
    ("remove_study", "&Remove study", lambda w: w.remove_current_study, [],
     "Remove the shown study from the project (its labels and corrections come back with Undo)"),
    ("locate_study", "&Locate moved study…", lambda w: lambda: locate_study(w), [],
     "Point the project at the new place of a study whose files were moved (its labels and corrections are kept)"),
    ("prev_study", "Previous study", lambda w: lambda: w.controller.step_study(-1), ["Ctrl+PgUp"], ""),
    ("next_study", "Next study", lambda w: lambda: w.controller.step_study(1), ["Ctrl+PgDown"], ""),
    ("export", "Masks as &NIfTI…", lambda w: w.show_export_dialog, ["Ctrl+E"], "The mask as NIfTI in the "
     "geometry of the source study"),
    ("export_seg", "Masks as DICOM &SEG…", lambda w: lambda: w.show_export_dialog("dicom-seg"), ["Ctrl+Shift+E"],
     "The mask as a DICOM Segmentation over the source series (for PACS viewers, 3D Slicer, OHIF)"),
    ("report", "&Report (PDF)…", lambda w: w.save_report, ["Ctrl+R"],
     "A one-page PDF: infected volume and % of lung, burden along the slices, key slices"),
    ("open_seg", "Open DICOM SE&G as mask…", lambda w: w.choose_seg, [],
     "A DICOM SEG of an open project's study (e.g. edited in another tool) becomes its mask"),
    ("settings", "Training &settings…", lambda w: w.show_settings, ["Ctrl+,"], ""),
    ("quit", "&Quit", lambda w: w.close, ["Ctrl+Q"], ""),
    ("lung", "&Lung window", lambda w: lambda: w.view.set_preset("lung"), ["1"], ""),
    ("mediastinum", "&Mediastinum window", lambda w: lambda: w.view.set_preset("mediastinum"), ["2"], ""),
    ("bone", "&Bone window", lambda w: lambda: w.view.set_preset("bone"), ["3"], ""),
    ("fit", "&Fit to window", lambda w: lambda: w.view.fit(), ["F"], ""),
    ("zoom_in", "Zoom &in", lambda w: lambda: w.view.zoom(1.25), ["Ctrl++", "Ctrl+="], ""),
    ("zoom_out", "Zoom &out", lambda w: lambda: w.view.zoom(0.8), ["Ctrl+-"], ""),
    ("prev_slice", "Previous slice", lambda w: lambda: w.view.step_slice(-1), ["Up", "Left"], ""),
    ("next_slice", "Next slice", lambda w: lambda: w.view.step_slice(1), ["Down", "Right"], ""),
    ("prev_page", "10 slices back", lambda w: lambda: w.view.step_slice(-10), ["PgUp"], ""),
    ("next_page", "10 slices on", lambda w: lambda: w.view.step_slice(10), ["PgDown"], ""),
    ("infected", "&Infected", lambda w: lambda: w.label_current("infected"), ["I"], "Label this slice infected"),
    ("clean", "&Clean", lambda w: lambda: w.label_current("clean"), ["C"], "Label this slice clean"),
    ("unlabel", "&Unlabel", lambda w: lambda: w.label_current(None), ["U", "Backspace"], "Remove the label"),
    ("next_unlabelled", "&Next unlabelled", lambda w: w.go_next_unlabelled, ["N"], ""),
    ("suggest", "Next &suggested slice", lambda w: w.controller.go_next_suggestion, ["S"],
     "Go to the slice most worth labelling next, in any study (scored by the last run's classifier)"),
    ("undo", "Undo", lambda w: w.undo, ["Ctrl+Z"], ""),
    ("redo", "Redo", lambda w: w.redo, ["Ctrl+Shift+Z", "Ctrl+Y"], ""),
    ("train", "▶ &Train", lambda w: w.start_training, ["Ctrl+T"],
     "Train the classifier and the segmenter on the labels, then predict this study"),
    ("predict", "&Predict with the last run", lambda w: w.start_prediction, ["Ctrl+P"], ""),
    ("cancel", "■ Cancel", lambda w: w.jobs.cancel, ["Esc"], "Cancel the running job"),
    ("demo", "Open &demo study", lambda w: w.open_demo, [], "Build a small synthetic study with labels and open it"),
    ("show_log", "Show the &log file", lambda w: w.show_log, [], ""),
    ("about", "&About", lambda w: w.about, [], ""),
]
# checkable: name, text, what it calls with the new state, shortcuts, tip
TOGGLES = [
    ("brush", "Brush", lambda w: lambda on: w.set_tool("brush", on), ["B"], "Paint infection on the mask"),
    ("eraser", "Eraser", lambda w: lambda on: w.set_tool("eraser", on), ["E"], "Erase infection from the mask"),
    *[(f"show_{name}", f"Show {name}", lambda w, n=name: lambda on: w.set_layer_visible(n, on),
       {"prediction": ["P"], "attention": ["A"]}.get(name, []), "") for name in LAYERS],
]
MENUS = [
    ("&File", ["open_study", "open_image_folder", "open_project", "recent", "open_seg", "-", "add_study",
               "add_study_folder", "remove_study", "locate_study", "-", ("&Export", ["export", "export_seg"]),
               "report", "-", "settings", "-", "quit"]),
    ("&View", [*WINDOW_PRESETS, "-", "fit", "zoom_in", "zoom_out", "-", "prev_study", "next_study", "-",
               *(f"show_{n}" for n in LAYERS)]),
    ("&Label", ["infected", "clean", "unlabel", "next_unlabelled", "suggest", "-", "undo", "redo"]),
    ("&Train", ["train", "predict", "cancel", "-", "settings"]),
    ("&Correct", ["brush", "eraser"]),
    ("&Help", ["demo", "show_log", "about"]),
]


def _action(window, name: str, text: str, slot, shortcuts, tip: str, checkable: bool) -> QAction:
    a = QAction(text, window)
    a.setObjectName(f"action_{name}")
    if shortcuts:
        a.setShortcuts([QKeySequence(s) for s in shortcuts])
        a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    a.setCheckable(checkable)
    if tip or shortcuts:
        keys = " / ".join(QKeySequence(s).toString(QKeySequence.SequenceFormat.NativeText) for s in shortcuts)
        a.setToolTip(f"{tip or text.replace('&', '')}" + (f" ({keys})" if keys else ""))
    (a.toggled if checkable else a.triggered).connect(slot)
    window.addAction(a)          # shortcuts work even when the action is in no visible menu
    return a


def make_actions(window) -> dict[str, QAction]:
    actions = {name: _action(window, name, text, make_slot(window), keys, tip, False)
               for name, text, make_slot, keys, tip in ACTIONS}
    actions.update({name: _action(window, name, text, make_slot(window), keys, tip, True)
                    for name, text, make_slot, keys, tip in TOGGLES})
    presets = QActionGroup(window)
    for name in WINDOW_PRESETS:
        actions[name].setCheckable(True)
        presets.addAction(actions[name])
    actions["lung"].setChecked(True)
    presets.setExclusionPolicy(QActionGroup.ExclusionPolicy.ExclusiveOptional)
    return actions


def make_menus(menubar, actions: dict[str, QAction]) -> dict[str, object]:
    """The menu bar from MENUS ("-" a separator, "recent" the recent-projects submenu, (title, names) a submenu);
    returns the menus (and submenus) by title (without '&') and the recent submenu as "recent"."""
    menus: dict[str, object] = {}
    for title, names in MENUS:
        menu = menubar.addMenu(title)
        menus[title.replace("&", "")] = menu
        for name in names:
            if name == "-":
                menu.addSeparator()
            elif name == "recent":
                menus["recent"] = menu.addMenu("Open &recent project")
            elif isinstance(name, tuple):
                sub_title, sub_names = name
                sub = menu.addMenu(sub_title)
                menus[sub_title.replace("&", "")] = sub
                for sub_name in sub_names:
                    sub.addAction(actions[sub_name])
            else:
                menu.addAction(actions[name])
    return menus
