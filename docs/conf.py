"""Sphinx configuration for fnnet's documentation: MyST pages, the API from the docstrings, local MathJax.

Build (offline): ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # fnnet and experiments import from the checkout, installed or not

import fnnet  # noqa: E402

project = "fnnet"
author = "the fnnet authors"
copyright = "the fnnet authors, Apache-2.0"
release = version = fnnet.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_static/mathjax/README.md"]
# Literal blocks in docstrings are formulas as often as code: shown as written, not highlighted.
highlight_language = "text"
# f'(x) is a derivative, not a quotation: no typographic quotes.
smartquotes = False

# MyST: $...$ and $$...$$ math, ::: fences, anchors for headings (links like conventions.md#losses).
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# Tables of contents list a page's sections, not every function documented on it.
toc_object_entries = False

# The API reference comes from the docstrings (Google style "Args:/Returns:/Raises:").
autodoc_default_options = {"members": False, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# The formula sections of fnnet's docstrings ("Forward:", "Backward:", ...) render as headed paragraphs.
napoleon_custom_sections = ["Forward", "Backward", "Derivative", "Variance", "Kink"]

# Math is typeset by the MathJax 3 copy under _static/mathjax (no CDN): the docs build and read offline.
html_static_path = ["_static"]
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {"options": {"enableMenu": False}}

html_theme = "furo"
html_title = f"fnnet {release}"
html_show_sourcelink = False
html_permalinks_icon = "#"

# Nothing is fetched at build time: no intersphinx mapping.


# ----------------------------------------------------------------------------------------------
# fnnet's docstrings are written to be read in ``help()``: formulas such as |x| and indented blocks of
# equations under a line of prose. Before napoleon reads them, this hook makes them reStructuredText
# that says the same: a bar is a bar (not a substitution), an indented block under a line is shown as
# written (a literal block, line breaks kept), and ``a literal `` ends at its last non-space character.

_SECTION = re.compile(
    r"^\s*(args|arguments|attributes|example|examples|keyword args|keyword arguments|methods|note|notes|"
    r"other parameters|parameters|raises|references|returns|see also|warning|warnings|warns|yields|"
    r"forward|backward|derivative|variance|kink)\s*:\s*$",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^(\s*)([*+-]|\d+[.)]|#\.)\s+")
_LITERAL = re.compile(r"(``.*?``)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _content_indent(line: str) -> int:
    """Where a line's continuation starts: after a bullet or enumerator, else at the line's indent."""
    m = _BULLET.match(line)
    return m.end() if m else _indent(line)


def _escape(line: str) -> str:
    """Bars escaped outside ``literals``; a literal trimmed inside and ended before a letter (``X``s)."""
    parts = _LITERAL.split(line)
    for k, part in enumerate(parts):
        if k % 2:
            after = parts[k + 1][:1] if k + 1 < len(parts) else ""
            parts[k] = "``" + part[2:-2].strip() + "``" + ("\\ " if after.isalnum() else "")
        else:
            parts[k] = part.replace("|", "\\|")
    return "".join(parts)


_FIELDS = re.compile(
    r"^\s*(args|arguments|attributes|keyword args|keyword arguments|other parameters|parameters|raises)",
    re.IGNORECASE,
)
_ITEM = re.compile(r"^\s*\**[\w.\[\], ]+(\s*\(.*\))?\s*:(\s|$)")


def plain_text_to_rst(lines: list[str]) -> list[str]:
    out: list[str] = []
    literal = None  # the indent a literal block's lines must exceed
    section = None  # (header indent, item indent, is a list of "name: text" items) of a napoleon section
    item = None  # the content indent of the bullet or enumerated item being continued
    for i, line in enumerate(lines):
        if not line.strip():
            out.append(line)
            item = None if not (i + 1 < len(lines) and lines[i + 1].strip()) else item
            continue
        ind = _indent(line)
        if literal is not None and ind <= literal:
            literal = None
            if out and out[-1].strip():
                out.append("")
        if literal is not None:
            out.append(line)
            continue
        if section is not None and ind <= section[0]:
            section = None
        if section is not None:
            if section[1] is None:
                section = (section[0], ind, section[2])
            elif section[2] and ind == section[1] and not _ITEM.match(line):
                # prose after a list of arguments: a paragraph of its own after the list
                out += ["", " " * section[0] + _escape(line.strip())]
                section = None
                continue
            out.append(_escape(line))
            continue
        if _SECTION.match(line):
            section = (ind, None, bool(_FIELDS.match(line)))
            out.append(line)
            continue
        bullet = _BULLET.match(line)
        if item is not None and not bullet and ind < item and out and out[-1].strip():
            out.append("")  # a list ends before the text that follows it
        item = _content_indent(line) if bullet else (item if item is not None and ind >= item else None)
        text = _escape(line)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        opens_block = nxt.strip() and _indent(nxt) > _content_indent(line) and not nxt.lstrip().startswith(">>>")
        if text.rstrip().endswith("::"):
            literal = _content_indent(line)
            out += [text, ""] if nxt.strip() else [text]
        elif opens_block:
            text = text.rstrip()
            out += [text + (":" if text.endswith(":") else " ::"), ""]
            literal = _content_indent(line)
        else:
            out.append(text)
    return out


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = plain_text_to_rst(lines)


def setup(app):
    app.connect("autodoc-process-docstring", _process_docstring, priority=100)  # before napoleon (500)
