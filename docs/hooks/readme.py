"""MkDocs hook: the repository's README.md as the site page ``readme.md``.

The README holds the measured tables (Results, Performance); the site links to them there instead of copying a
single number, so each measurement lives in one file. The README is written for the repository root, where its
pictures are ``docs/images/...``; on the site that folder is the docs root, so those links are rewritten. A
picture the README names that is not in the repository is shown as a visible warning box on the page (the
README itself has the broken link) instead of failing the whole build.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGE = "readme.md"
IMAGE = re.compile(r"!\[([^\]]*)\]\(docs/([^)\s]+)\)")
log = logging.getLogger("mkdocs.hooks.readme")


def on_files(files, config):
    files.append(File.generated(config, PAGE, abs_src_path=str(README)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != PAGE:
        return markdown

    def image(match: re.Match) -> str:
        alt, rel = match.group(1), match.group(2)
        if (Path(config["docs_dir"]) / rel).is_file():
            return f"![{alt}]({rel})"
        log.info("README.md shows docs/%s, which does not exist", rel)
        return (f'\n\n!!! warning "Missing picture"\n    The README shows `docs/{rel}` ({alt}), which is not in the '
                "repository.\n\n")

    return IMAGE.sub(image, markdown)
