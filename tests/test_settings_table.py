"""docs/configuration.md's table of settings is the one scripts/settings_table.py makes from
Settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from service.api.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def load_script():  # scripts/ is not a package
    spec = importlib.util.spec_from_file_location("settings_table",
                                                  ROOT / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_list_every_setting_as_the_class_describes_it() -> None:
    script = load_script()
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == script.page_with_table(page), (
        "docs/configuration.md's settings table is out of date: run "
        ".venv/bin/python scripts/settings_table.py --write"
    )
    for name in Settings.model_fields:
        assert f"`EMBED_{name.upper()}`" in page


def test_every_setting_has_a_description() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"
