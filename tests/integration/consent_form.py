"""Reading the sandbox's consent pages the way a browser would."""

from __future__ import annotations

from html.parser import HTMLParser


class FormReader(HTMLParser):
    """A page's form: its action, the fields a browser would submit, and any error shown."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: list[tuple[str, str]] = []  # hidden and text inputs
        self.checkboxes: list[str] = []  # values of the boxes ticked on arrival
        self.ticked: list[tuple[str, str]] = []  # the same boxes, as (name, value)
        self.error: str | None = None
        self._in_error = False

    @property
    def submission(self) -> list[tuple[str, str]]:
        """What submitting the form unchanged sends: the fields and the ticked boxes."""
        return [*self.fields, *self.ticked]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = attributes.get("action", "")
        elif tag == "input":
            kind, name = attributes.get("type", "text"), attributes.get("name", "")
            if kind in ("hidden", "text"):
                self.fields.append((name, attributes.get("value", "")))
            elif kind == "checkbox" and "checked" in attributes:
                self.checkboxes.append(attributes.get("value", ""))
                self.ticked.append((name, attributes.get("value", "")))
        elif tag == "p" and attributes.get("id") == "error":
            self._in_error = True

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.error = data
            self._in_error = False
