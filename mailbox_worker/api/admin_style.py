"""The admin page's one stylesheet, inlined in every page and allowed by its hash.

No build step, no web font, nothing fetched: the system font stack and a few colours, each
text colour at least 4.5:1 against its background (WCAG AA). The page's
``Content-Security-Policy`` allows exactly this stylesheet (``STYLE_SOURCE``: its SHA-256),
so no other style, inline or ``style=`` attribute, ever applies.
"""

from __future__ import annotations

import base64
import hashlib

STYLESHEET = """
:root {
  --ink: #1d2733; --muted: #4a5563; --line: #d5dae1; --paper: #f5f6f8; --card: #fff;
  --accent: #1d5bb8; --accent-dark: #17498f; --danger: #b3261e; --danger-dark: #8c1d17;
  --focus: #f5b400;
  color-scheme: light;
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--paper); color: var(--ink); line-height: 1.5;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    sans-serif;
}
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
a { color: var(--accent); }
a:hover { color: var(--accent-dark); }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.page-header { background: var(--ink); color: #fff; padding: 0.75rem 1.5rem; }
.bar {
  max-width: 57rem; margin: 0 auto; display: flex; flex-wrap: wrap; align-items: center;
  justify-content: space-between; gap: 0.5rem 1rem;
}
.page-header h1 { margin: 0; font-size: 1.15rem; font-weight: 600; }
.page-header h1 span { color: #c9d2dd; font-weight: 400; }
.session {
  flex: 1 1 auto; display: flex; align-items: center; justify-content: space-between;
  gap: 1rem; margin: 0; font-size: 0.85rem;
}
.session p { margin: 0; color: #dfe5ec; }
.session code { color: #fff; }
main, .page-footer { max-width: 60rem; margin: 0 auto; padding: 0 1.5rem; }
main { padding-top: 1.5rem; }
h2 { font-size: 1.25rem; margin: 1.75rem 0 0.75rem; }
section > p, .hint { color: var(--muted); }
.notice {
  border-radius: 6px; padding: 0.75rem 1rem; margin: 0 0 1rem; border-left: 5px solid;
}
.notice.success { background: #e7f4ea; border-color: #1e7b3a; color: #12461f; }
.notice.error { background: #fdecea; border-color: var(--danger); color: #6e1510; }
.notice small { color: inherit; }
.card > h2:first-child { margin-top: 0; }
.card, .mailbox {
  background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 1rem 1.25rem; margin: 0 0 1rem;
}
.mailbox-list { list-style: none; margin: 0; padding: 0; }
.mailbox-head { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem 0.75rem; }
.mailbox-head h3 { margin: 0; font-size: 1.1rem; overflow-wrap: anywhere; }
.provider-name { color: var(--muted); font-size: 0.9rem; }
.mailbox-id { margin-left: auto; color: var(--muted); font-size: 0.8rem; }
.mailbox[data-state="disconnected"] { background: #fafbfc; border-style: dashed; }
.badge {
  display: inline-block; border-radius: 999px; padding: 0.1rem 0.65rem; font-size: 0.8rem;
  font-weight: 600; border: 1px solid;
}
.badge::before {
  content: ""; display: inline-block; width: 0.5em; height: 0.5em; border-radius: 50%;
  background: currentColor; margin-right: 0.4em; vertical-align: 0.1em;
}
.state-connected { background: #e7f4ea; color: #12602b; border-color: #9fd0ae; }
.state-pending_consent { background: #fff4dc; color: #6e4200; border-color: #ebc77a; }
.state-reauth_required { background: #fdecea; color: #9a1f17; border-color: #eba59f; }
.state-disconnected { background: #eef0f3; color: #46505c; border-color: #c3c9d1; }
.reason { margin: 0.5rem 0 0; }
.reason code { color: var(--muted); }
.facts {
  display: grid; grid-template-columns: repeat(auto-fit, minmax(11rem, 1fr));
  gap: 0.75rem 1.5rem; margin: 0.9rem 0;
}
.facts dt { font-size: 0.75rem; text-transform: uppercase; letter-spacing: 0.04em;
  color: var(--muted); }
.facts dd { margin: 0.1rem 0 0; overflow-wrap: anywhere; }
.chip {
  display: inline-block; background: #eaf0fa; color: #173f7a; border-radius: 4px;
  padding: 0 0.4rem; margin: 0 0.25rem 0.25rem 0; font-size: 0.85rem;
}
.held-some { font-weight: 600; color: #6e4200; }
.actions { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 0.75rem;
  border-top: 1px solid var(--line); padding-top: 0.75rem; }
.actions form { margin: 0; }
button, summary.button {
  font: inherit; font-weight: 600; border-radius: 6px; padding: 0.45rem 1rem;
  cursor: pointer; border: 1px solid var(--accent); background: var(--accent); color: #fff;
}
button:hover { background: var(--accent-dark); }
.secondary, .page-header button {
  background: transparent; color: var(--accent); border-color: currentColor;
}
.page-header button { color: #fff; padding: 0.3rem 0.8rem; }
.page-header button:hover { background: #2f3c4b; }
summary.button { display: inline-block; list-style: none; background: #fff;
  color: var(--danger); border-color: var(--danger); }
summary.button::-webkit-details-marker { display: none; }
details[open] summary.button { background: #fdecea; }
.confirm {
  margin-top: 0.6rem; padding: 0.75rem 1rem; border: 1px solid #eba59f; border-radius: 6px;
  background: #fff8f7; max-width: 36rem;
}
.confirm p { margin: 0 0 0.6rem; }
button.danger { background: var(--danger); border-color: var(--danger); }
button.danger:hover { background: var(--danger-dark); }
label { font-weight: 600; }
input[type="password"], input[type="text"], select {
  font: inherit; padding: 0.4rem 0.5rem; border: 1px solid #8a94a3; border-radius: 6px;
  background: #fff; color: var(--ink); max-width: 100%;
}
fieldset { border: 1px solid var(--line); border-radius: 6px; margin: 1rem 0; }
legend { font-weight: 600; padding: 0 0.3rem; }
fieldset label { font-weight: 400; }
.support-on strong { color: #12602b; }
#revoke-support { margin-top: 0.5rem; }
.empty { text-align: center; color: var(--muted); }
.page-footer { color: var(--muted); font-size: 0.9rem; padding-bottom: 2rem; }
.page-footer p { border-top: 1px solid var(--line); padding-top: 1rem; margin: 1.5rem 0 0; }
"""

_DIGEST = base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode()
STYLE_SOURCE = f"'sha256-{_DIGEST}'"
"""The CSP source that allows ``STYLESHEET`` inlined as it is, and nothing else."""
