"""The admin page's templates (``templates/admin_*.html``) and how values go into them.

Every value put into a template is HTML-escaped unless it is ``Html``: markup rendered from
these same templates.
"""

from __future__ import annotations

import functools
import html
import importlib.resources
from collections.abc import Iterable
from string import Template


class Html(str):
    """Markup rendered from this page's templates: put into another template as it is."""


NO_HTML = Html("")


@functools.cache
def _template(name: str) -> Template:
    """``templates/{name}``. A ``*.inline.html`` fragment goes inside a line of its page: it is
    written one element a line for reading, and its line breaks are not part of it."""
    source = importlib.resources.files("mailbox_worker.api").joinpath(f"templates/{name}")
    text = source.read_text(encoding="utf-8")
    if name.endswith(".inline.html"):
        text = "".join(text.splitlines())
    return Template(text)


def render(name: str, /, **values: str) -> Html:
    """The template ``name`` filled with ``values``, each HTML-escaped unless it is ``Html``."""
    escaped = {
        key: value if isinstance(value, Html) else html.escape(value)
        for key, value in values.items()
    }
    return Html(_template(name).substitute(escaped))


def concatenate(fragments: Iterable[Html]) -> Html:
    return Html("".join(fragments))
