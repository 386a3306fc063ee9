"""``/admin``: a small server-rendered page where an account admin manages its mailboxes.

No JavaScript, no build step: HTML forms that POST and answer ``303 See Other``.

- ``GET /admin`` shows the sign-in form, or (signed in) the account's mailboxes, a form to
  connect one, and the outcome of the last consent (its ``outcome`` query parameter).
- ``POST /admin/session`` signs in with an API key (``admin_session`` holds the design);
  ``POST /admin/session/delete`` signs out.
- ``POST /admin/mailboxes`` creates a mailbox and sends the browser to the provider's
  consent; ``POST /admin/mailboxes/{id}/connect`` does the same for an existing one;
  ``POST /admin/mailboxes/{id}/disconnect`` disconnects it.

Every form carries the session's CSRF token, and a POST whose ``Origin`` is not ours is
refused. A ``RequestError`` from the services is shown on the page as its message with its
status; nothing else about a failure ever is. The page's HTML is all in
``templates/admin_*.html``, and every value put into it is HTML-escaped (``_render``).
"""

from __future__ import annotations

import functools
import html
import importlib.resources
from collections.abc import Awaitable, Callable, Iterable, Mapping
from string import Template
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from mailbox_worker.api.admin_session import COOKIE_NAME, COOKIE_PATH, AdminSessions, Session
from mailbox_worker.api.auth import MAILBOXES_READ, MAILBOXES_WRITE
from mailbox_worker.api.context import document, services
from mailbox_worker.api.document import schema_pointer
from mailbox_worker.api.parsing import within_body_timeout
from mailbox_worker.api.representations import timestamp
from mailbox_worker.api.services import (
    CONNECTED_OUTCOME,
    ConnectionStart,
    MailboxView,
    Principal,
)
from mailbox_worker.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    RequestError,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationFailed,
)
from mailbox_worker.states import RECONNECTABLE, MailboxState

ADMIN = "/admin"
MAILBOX = "/admin/mailboxes/{mailbox_id:[A-Za-z0-9_-]+}"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
REQUIRED_PERMISSIONS = frozenset({MAILBOXES_READ, MAILBOXES_WRITE})

SESSIONS = web.AppKey("admin_sessions", AdminSessions)
PUBLIC_URL = web.AppKey("admin_public_url", str)

# The page may post only to us and send the browser on to an HTTPS consent page; it cannot
# be framed, and its URL (which may carry an outcome) is never sent as a Referer to another
# origin. ("no-referrer" would also make browsers send "Origin: null" on our own forms.)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; form-action 'self' https:; frame-ancestors 'none'; base-uri 'none'"
    ),
}
REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

OUTCOMES: Mapping[str, str] = {
    CONNECTED_OUTCOME: "The mailbox is connected.",
    "access_denied": "The consent was cancelled or refused: the mailbox is not connected.",
    "consent_failed": "The provider reported an error during the consent: the mailbox is "
    "not connected.",
    "admin_consent_required": "The organisation lets only an administrator approve this app: "
    "the mailbox is not connected. Ask an administrator of your Microsoft 365 organisation to "
    "approve it (the admin_consent_url the connection returned), then connect again.",
    "admin_consent_answered": "The administrator's approval was answered: connect the mailbox "
    "again.",
    "scope_missing": "The consent did not grant every permission this mailbox needs, so it "
    "was not connected and the partial grant was discarded. Connect again and keep every "
    "permission ticked.",
    "scope_too_broad": "The grant carried a permission that reads or manages the whole "
    "mailbox, more than sending invoices needs, so it was not connected and the grant was "
    "revoked. Remove this app's access in the account's security settings, then connect again.",
    "address_mismatch": "You signed in as another mailbox than the one being reconnected: "
    "nothing was changed.",
    "address_unknown": "The provider did not say which mailbox signed in: it was not connected.",
    "address_invalid": "The provider gave an address that is not a valid mail address: the "
    "mailbox was not connected.",
    "identity_unknown": "The provider did not say which account signed in: the mailbox was "
    "not connected.",
    "identity_mismatch": "You signed in as another account than the one this mailbox was "
    "connected with, even if the address is the same: nothing was changed. Sign in as that "
    "account, or connect a new mailbox.",
    "state_invalid": "This authorization link is unknown or was already used. Start again.",
    "state_expired": "The consent took too long. Start again.",
    "code_rejected": "The provider refused the authorization code. Start again.",
    "provider_unavailable": "The provider could not be reached. Try again in a moment.",
    "mailbox_disconnected": "The mailbox was disconnected in the meantime.",
}
CAPABILITY_LABELS: Mapping[str, str] = {
    "send": "send: send invoices from this mailbox",
    "draft": "draft: leave invoices as drafts for a person to review",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, sessions: AdminSessions, public_url: str | None = None) -> None:
    """Add the page's routes to ``app``, with the session store the root built.

    ``public_url`` (the daemon's ``server.public_url``) gives the consent's return URL and
    whether the cookie is ``Secure``; without it, the origin the browser used is taken.
    """
    app[SESSIONS] = sessions
    if public_url:
        app[PUBLIC_URL] = public_url.rstrip("/")
    app.router.add_routes(
        [
            web.get(ADMIN, show, allow_head=False),
            web.post(f"{ADMIN}/session", sign_in),
            web.post(f"{ADMIN}/session/delete", sign_out),
            web.post(f"{ADMIN}/mailboxes", connect),
            web.post(f"{MAILBOX}/connect", reconnect),
            web.post(f"{MAILBOX}/disconnect", disconnect),
        ]
    )


def _shown_on_failure(handler: Handler) -> Handler:
    """A ``RequestError`` becomes the page with its message, answered with its status."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as error:
            notice = _notice("error", error.message)
            session = await _session(request)
            if session is None:
                response = _sign_in_page(notice, error.status)
            else:
                response = await _mailboxes_page(request, session, notice, error.status)
            if error.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response

    return wrapper


# -- handlers ---------------------------------------------------------------------------------


@_shown_on_failure
async def show(request: web.Request) -> web.StreamResponse:
    """200: the sign-in form, or the account's mailboxes and the last consent's outcome."""
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return _bounce_page(request)
    session = await _session(request)
    notice = _outcome_notice(request.query)
    if session is None:
        return _sign_in_page(notice, 200)
    return await _mailboxes_page(request, session, notice, 200)


@_shown_on_failure
async def sign_in(request: web.Request) -> web.StreamResponse:
    """303 to ``/admin`` with the session cookie; 401/403 with the form again."""
    _check_origin(request)
    form = await _read_form(request, "AdminSignInForm")
    sessions = request.app[SESSIONS]
    session = await sessions.sign_in(form["api_key"])
    if session is None:
        raise Unauthenticated("That API key is not valid (unknown, malformed or revoked).")
    if not REQUIRED_PERMISSIONS.issubset(session.principal.permissions):
        raise Forbidden(
            "That API key lacks the mailboxes:read and mailboxes:write permissions this page needs."
        )
    response = _see_other(ADMIN)
    response.set_cookie(
        COOKIE_NAME,
        session.cookie,
        max_age=session.expires_at - int(sessions.clock()),
        path=COOKIE_PATH,
        secure=_secure(request),
        httponly=True,
        samesite="Strict",
    )
    return response


@_shown_on_failure
async def sign_out(request: web.Request) -> web.StreamResponse:
    """303 to ``/admin``; the session's key is forgotten and the cookie cleared."""
    signed_in = await _signed_in_form(request, "AdminForm")
    if signed_in is not None:
        request.app[SESSIONS].sign_out(signed_in[0])
    response = _see_other(ADMIN)
    response.del_cookie(
        COOKIE_NAME, path=COOKIE_PATH, secure=_secure(request), httponly=True, samesite="Strict"
    )
    return response


@_shown_on_failure
async def connect(request: web.Request) -> web.StreamResponse:
    """303 to the provider's consent page for a new mailbox."""
    mailboxes = services(request).mailboxes
    return await _to_consent(
        request,
        "AdminConnectForm",
        lambda principal, form, return_url: mailboxes.create(
            principal, form["provider"], sorted(form["capabilities"]), return_url, None
        ),
        invalid_form="Choose a provider and tick at least one capability.",
    )


@_shown_on_failure
async def reconnect(request: web.Request) -> web.StreamResponse:
    """303 to the provider's consent page for an existing mailbox."""
    mailbox_id = _mailbox_id(request)
    mailboxes = services(request).mailboxes
    return await _to_consent(
        request,
        "AdminForm",
        lambda principal, _, return_url: mailboxes.reconnect(principal, mailbox_id, return_url),
    )


@_shown_on_failure
async def disconnect(request: web.Request) -> web.StreamResponse:
    """303 to ``/admin`` once the mailbox is disconnected (idempotent)."""
    mailbox_id = _mailbox_id(request)
    signed_in = await _signed_in_form(request, "AdminForm")
    if signed_in is None:
        return _see_other(ADMIN)
    session, _ = signed_in
    await services(request).mailboxes.disconnect(session.principal, mailbox_id)
    return _see_other(ADMIN)


# -- sessions, forms and CSRF -----------------------------------------------------------------


Form = dict[str, Any]
ConsentStart = Callable[[Principal, Form, str], Awaitable[ConnectionStart]]
"""Starts a consent for the signed-in principal from the posted form and our return URL."""


async def _to_consent(
    request: web.Request, schema: str, start: ConsentStart, *, invalid_form: str | None = None
) -> web.StreamResponse:
    """303 to the consent page that ``start`` opens (given the signed-in principal, the form
    and our return URL); 303 to ``/admin`` when no one is signed in.

    ``invalid_form``, when given, is the message of the 400 for a form that does not match
    ``schema``, instead of the details of each field.
    """
    try:
        signed_in = await _signed_in_form(request, schema)
    except ValidationFailed:
        if invalid_form is None:
            raise
        raise InvalidRequest(invalid_form) from None
    if signed_in is None:
        return _see_other(ADMIN)
    session, form = signed_in
    started = await start(session.principal, form, _return_url(request))
    return _see_other(started.authorization_url)


async def _session(request: web.Request) -> Session | None:
    session = await request.app[SESSIONS].resume(request.cookies.get(COOKIE_NAME))
    if session is None or not REQUIRED_PERMISSIONS.issubset(session.principal.permissions):
        return None
    return session


async def _signed_in_form(request: web.Request, schema: str) -> tuple[Session, Form] | None:
    """The session and form of a POST whose CSRF token is right; None when not signed in.

    The form is read first, so a malformed one is 400 (or 415) whoever sends it; then
    ``Forbidden`` for a foreign ``Origin`` or a wrong token.
    """
    form = await _read_form(request, schema)
    _check_origin(request)
    session = await _session(request)
    if session is None:
        return None
    if not request.app[SESSIONS].csrf_valid(session, str(form.get("csrf_token", ""))):
        raise Forbidden("This form has expired or did not come from this page. Reload the page.")
    return session, form


async def _read_form(request: web.Request, schema: str) -> Form:
    """The urlencoded body, checked against the document's component ``schema``.

    A field the schema makes an array may repeat; any other appears once. Another media
    type is 415; a form that does not match is 400 naming the fields at fault.
    """
    if request.content_type != FORM_MEDIA_TYPE:
        raise UnsupportedMediaType(f"the form must be sent as {FORM_MEDIA_TYPE}")
    try:
        posted = await within_body_timeout(request, request.post())
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The form could not be read.") from None
    properties = document(request).content["components"]["schemas"][schema]["properties"]
    form: Form = {}
    for name, value in posted.items():
        if not isinstance(value, str):
            raise InvalidRequest("The form could not be read.")
        if properties.get(name, {}).get("type") == "array":
            form.setdefault(name, []).append(value)
        elif name in form:
            raise InvalidRequest(f"The form repeats the field {name[:100]!r}.")
        else:
            form[name] = value
    document(request).validate(schema_pointer(schema), form)
    return form


def _mailbox_id(request: web.Request) -> str:
    """The path's mailbox id; one the document's ``Id`` refuses names nothing (404)."""
    mailbox_id = request.match_info["mailbox_id"]
    try:
        document(request).validate(schema_pointer("Id"), mailbox_id)
    except ValidationFailed:
        raise NotFound("no such mailbox in this account", code="mailbox_not_found") from None
    return mailbox_id


def _check_origin(request: web.Request) -> None:
    """Refuse a POST a browser says came from another origin (defence beside the token)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != _origin(_base_url(request)):
        raise Forbidden("This form did not come from this page.")


# -- URLs -------------------------------------------------------------------------------------


def _base_url(request: web.Request) -> str:
    configured = request.app.get(PUBLIC_URL)
    if configured:
        return configured
    return str(request.url.origin()).rstrip("/")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _return_url(request: web.Request) -> str:
    return f"{_base_url(request)}{ADMIN}"


def _secure(request: web.Request) -> bool:
    return urlsplit(_base_url(request)).scheme == "https"


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **REDIRECT_HEADERS})


def _enum(request: web.Request, schema: str) -> list[str]:
    values = document(request).content["components"]["schemas"][schema]["enum"]
    return [str(value) for value in values]


# -- rendering --------------------------------------------------------------------------------


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


def _render(name: str, /, **values: str) -> Html:
    """The template ``name`` filled with ``values``, each HTML-escaped unless it is ``Html``."""
    escaped = {
        key: value if isinstance(value, Html) else html.escape(value)
        for key, value in values.items()
    }
    return Html(_template(name).substitute(escaped))


def _concatenate(fragments: Iterable[Html]) -> Html:
    return Html("".join(fragments))


def _page(
    title: str, content: Html, notice: Html, status: int, who: Html = NO_HTML, head: Html = NO_HTML
) -> web.Response:
    page = _render(
        "admin_layout.html",
        title=title,
        head=head,
        signed_in_as=who,
        notice=notice,
        content=content,
    )
    return web.Response(
        text=page, status=status, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
    )


def _bounce_page(request: web.Request) -> web.Response:
    """The same URL again, reached from our own page.

    A browser coming back from the provider's consent arrives through a cross-site redirect
    chain, so it withholds the ``SameSite=Strict`` cookie. A navigation our own page starts
    (a meta refresh: no script needed) is same-site and carries it. Only ``GET /admin``, which
    changes nothing, is ever bounced.
    """
    target = request.rel_url.path_qs
    content = _render("admin_bounce.inline.html", target=target)
    refresh = _render("admin_bounce_head.html", target=target)
    return _page("Mailboxes", content, NO_HTML, 200, head=refresh)


def _sign_in_page(notice: Html, status: int) -> web.Response:
    return _page("Sign in", _render("admin_sign_in.html"), notice, status)


async def _mailboxes_page(
    request: web.Request, session: Session, notice: Html, status: int
) -> web.Response:
    csrf = request.app[SESSIONS].csrf_token(session)
    mailboxes = await services(request).mailboxes.list(session.principal)
    content = _render(
        "admin_mailboxes.html",
        table=_table(mailboxes, csrf),
        csrf_token=csrf,
        provider_options=_concatenate(
            _render("admin_provider_option.inline.html", provider=provider)
            for provider in _enum(request, "Provider")
        ),
        capability_boxes=_concatenate(
            _render(
                "admin_capability.inline.html",
                capability=capability,
                label=CAPABILITY_LABELS.get(capability, capability),
            )
            for capability in _enum(request, "Capability")
        ),
    )
    who = _render(
        "admin_signed_in_as.inline.html",
        key_id=session.principal.key_id,
        account_id=session.principal.account_id,
    )
    return _page("Mailboxes", content, notice, status, who)


def _table(mailboxes: list[MailboxView], csrf: str) -> Html:
    if not mailboxes:
        return _render("admin_no_mailboxes.inline.html")
    rows = _concatenate(_row(mailbox, csrf) for mailbox in mailboxes)
    return _render("admin_table.inline.html", rows=rows)


def _row(mailbox: MailboxView, csrf: str) -> Html:
    return _render(
        "admin_row.inline.html",
        mailbox_id=mailbox.id,
        provider=mailbox.provider,
        address=mailbox.address or "(not known yet)",
        capabilities=", ".join(mailbox.capabilities),
        state=mailbox.state,
        state_reason=mailbox.state_reason or "",
        created=timestamp(mailbox.created_at) or "",
        actions=_actions(mailbox, csrf),
    )


def _actions(mailbox: MailboxView, csrf: str) -> Html:
    if mailbox.state == MailboxState.DISCONNECTED:
        return NO_HTML
    forms = ["admin_reconnect.inline.html"] if mailbox.state in RECONNECTABLE else []
    forms.append("admin_disconnect.inline.html")
    return _concatenate(_render(form, mailbox_id=mailbox.id, csrf_token=csrf) for form in forms)


def _role(kind: str) -> str:
    """An error is announced at once (``alert``); any other notice politely (``status``)."""
    return "alert" if kind == "error" else "status"


def _notice(kind: str, message: str) -> Html:
    return _render("admin_notice.inline.html", kind=kind, role=_role(kind), message=message)


def _outcome_notice(query: Mapping[str, str]) -> Html:
    """The last consent's outcome in plain words, with its code."""
    outcome = query.get("outcome")
    if not outcome:
        return NO_HTML
    kind = "success" if outcome == CONNECTED_OUTCOME else "error"
    return _render(
        "admin_outcome_notice.inline.html",
        kind=kind,
        role=_role(kind),
        message=OUTCOMES.get(outcome, "The consent did not complete."),
        outcome=outcome,
    )
