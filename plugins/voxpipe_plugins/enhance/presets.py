"""Named CT windows (level, width in HU). Pure data: imported by `plugin.py`, so keep it light.

Source for every value unless noted: Radiopaedia, "Windowing (CT)" (D. J. Bell, A. Murphy
et al., https://radiopaedia.org/articles/windowing-ct), table "Typical window width and
level values". Where Radiopaedia gives a range or two choices, the choice is stated.
docs/enhancement.md has the same table.
"""

from __future__ import annotations

# name: (level HU, width HU, where the numbers come from)
WINDOW_PRESETS: dict[str, tuple[float, float, str]] = {
    "brain": (40.0, 80.0, "Radiopaedia: brain W:80 L:40"),
    "subdural": (75.0, 215.0, "Radiopaedia: subdural W:130-300 L:50-100; the midpoint of both ranges"),
    "stroke": (
        40.0,
        40.0,
        "Radiopaedia: stroke W:40 L:40 (the other listed choice, W:8 L:32 from "
        "Lev et al., Radiology 1999;213:150-155, is a starting point readers adjust: use level/width)",
    ),
    "lung": (-600.0, 1500.0, "Radiopaedia: lungs W:1500 L:-600"),
    "mediastinum": (50.0, 350.0, "Radiopaedia: mediastinum W:350 L:50"),
    "abdomen": (
        40.0,
        400.0,
        "abdominal soft-tissue window [-160, 240] HU as used in abdominal CT "
        "segmentation work; Radiopaedia lists abdomen soft tissues W:400 L:50",
    ),
    "liver": (30.0, 150.0, "Radiopaedia: liver W:150 L:30"),
    "bone": (400.0, 1800.0, "Radiopaedia: bone (spine) W:1800 L:400"),
}

PRESET_NAMES = tuple(WINDOW_PRESETS)
