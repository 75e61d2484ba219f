"""The docs' table of settings, generated from the Settings class (one row per field).

    .venv/bin/python scripts/settings_table.py          # print the table
    .venv/bin/python scripts/settings_table.py --write  # put it into docs/configuration.md

tests/test_settings_table.py fails when docs/configuration.md's table differs from this output,
so a new setting is documented the moment it is added.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.api.settings import Settings  # noqa: E402

PAGE = ROOT / "docs" / "configuration.md"
START, END = "<!-- settings-table -->", "<!-- /settings-table -->"


def shown_default(name: str, field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if name.endswith("_bytes") and isinstance(default, int) and default and default % 2**20 == 0:
        return f"{default} ({default // 2**20} MiB)"
    return str(default)


def settings_table() -> str:
    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| variable | default | what it does |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        description = description.replace("<", "&lt;").replace(">", "&gt;")
        default = shown_default(name, field)
        rows.append(f"| `{prefix}{name.upper()}` | `{default}` | {description} |")
    return "\n".join(rows)


def page_with_table(page: str) -> str:
    """`page` with the text between its START and END markers replaced by the table."""
    before, _, rest = page.partition(START)
    _, _, after = rest.partition(END)
    if not rest:
        raise SystemExit(f"{PAGE.relative_to(ROOT)} has no {START} ... {END} markers")
    return f"{before}{START}\n{settings_table()}\n{END}{after}"


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        PAGE.write_text(page_with_table(PAGE.read_text()))
    else:
        print(settings_table())
