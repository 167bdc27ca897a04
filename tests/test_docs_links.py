"""Every link in README.md and docs/*.md leads somewhere: a file of the repository, a heading of that file,
or a well-formed web address; and every docs page can be reached from the README."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from jobs_fixtures import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(page: Path) -> list[str]:
    """The targets of the page's Markdown links, code blocks left out."""
    return LINK.findall(FENCE.sub("", page.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens kept), spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text()), flags=re.MULTILINE)
    return {slug(heading) for heading in headings}


def problem(page: Path, target: str) -> str | None:
    url = urlparse(target)
    if url.scheme in ("http", "https"):
        return None if url.netloc else "a web address without a host"
    if url.scheme:
        return f"an unexpected scheme {url.scheme!r}"
    path = (page.parent / unquote(url.path)).resolve() if url.path else page
    if not path.is_relative_to(REPO):
        return "outside the repository"
    if not path.exists():
        return "no such file"
    if url.fragment and path.suffix == ".md" and url.fragment not in anchors(path):
        return f"no heading #{url.fragment} in {path.relative_to(REPO)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_link_of_the_page_leads_somewhere(page: Path):
    broken = [f"{target}: {why}" for target in links(page) if (why := problem(page, target))]
    assert broken == []


def test_every_docs_page_can_be_reached_from_the_readme():
    reached, todo = set(), [REPO / "README.md"]
    while todo:
        page = todo.pop()
        for target in links(page):
            url = urlparse(target)
            if url.scheme or not url.path.endswith(".md"):
                continue
            path = (page.parent / unquote(url.path)).resolve()
            if path.exists() and path not in reached:
                reached.add(path)
                todo.append(path)
    assert [str(page.relative_to(REPO)) for page in PAGES[1:] if page not in reached] == []


def test_the_checker_sees_a_broken_link_and_a_missing_heading():
    page = REPO / "docs" / "cli.md"
    assert problem(page, "no-such-page.md") == "no such file"
    assert problem(page, "cli.md#no-such-heading") == "no heading #no-such-heading in docs/cli.md"
    assert problem(page, "cli.md#presets-stages-and-the-jobs-cli") is None
    assert problem(page, "../../etc/passwd") == "outside the repository"
