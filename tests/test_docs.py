"""The README and docs/ stay navigable: every relative link resolves, every #anchor names a heading.

A link is a Markdown `[text](target)` in README.md or docs/*.md. One that is not a web address,
a mailto: or an in-page `#anchor` must name a file or directory of the repository, relative to
the file that holds it; its `#fragment`, and every in-page `#anchor`, must match a heading of the
Markdown file it points into, slugged as GitHub does (lowercase, spaces to '-', punctuation
other than '-' and '_' dropped). The README, the project's front page, stays within 250 lines.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: '## Replay at T > 0: exact' -> 'replay-at-t--0-exact'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_links_resolve_and_anchors_name_headings():
    broken = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"(https?|mailto):", target):
                continue
            path, _, fragment = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists() or ROOT not in [dest, *dest.parents]:
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file in the repository)")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
