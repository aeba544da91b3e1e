"""docs/config_reference.md is generated from the config dataclasses; it must match them."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from config_reference import field_comments, render  # noqa: E402


def test_config_reference_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_config_field_says_what_it_means():
    """A comment beside the field, above it, or heading its group: else its row would be blank.
    A section of its own (a field typed as another config class) is described where it is listed."""
    classes: set = set()
    render(classes)
    sections = {c.__name__ for c in classes}
    blank = []
    for cls in classes:
        comments = field_comments(cls)
        blank += [f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)
                  if f.init and f.type not in sections and not any(comments.get(f.name, ("", "")))]
    assert not blank, f"config fields with no comment: {sorted(blank)}"
