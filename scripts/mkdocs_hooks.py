"""mkdocs hooks (mkdocs.yml `hooks:`): the benchmarks' results become part of the site.

bench/*.py write their latest figures to bench/results/ (tables as .md, plots as .png, figures
as .json). The docs link them where they are made, `../bench/results/latest.md` from a page in
docs/ (right on GitHub too); here each file of bench/results/ is added to the site under
bench/results/ and those links are pointed at it, so the site never keeps a copy that could
go stale.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
PUBLISHED = {".md", ".png", ".json"}
LINK_FROM_DOCS = "](../bench/results/"  # a page in docs/ linking a result where it is made
LINK_IN_SITE = "](bench/results/"  # the same file in the site


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for path in sorted(RESULTS.iterdir()):
        if path.suffix in PUBLISHED:
            files.append(File.generated(config, f"bench/results/{path.name}",
                                        abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri.startswith("bench/"):
        return markdown
    return markdown.replace(LINK_FROM_DOCS, LINK_IN_SITE)
