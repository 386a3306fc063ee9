"""``/admin``: a small server-rendered page where an account admin manages its mailboxes.

No JavaScript, no build step: HTML forms that POST and answer ``303 See Other``.

- ``GET /admin`` shows the sign-in form, or (signed in) the account's mailboxes, a form to
  connect one, and the outcome of the last consent (its ``outcome`` query parameter).
- ``POST /admin/session`` signs in with an API key (``admin_session`` holds the design);
  ``POST /admin/session/delete`` signs out.
- ``POST /admin/mailboxes`` creates a mailbox and sends the browser to the provider's
  consent; ``POST /admin/mailboxes/{id}/connect`` does the same for an existing one;
  ``POST /admin/mailboxes/{id}/disconnect`` disconnects it (the page asks for a
  confirmation first, in a ``<details>`` step that needs no script).
- ``POST /admin/support-access`` grants support access for a limited time and
  ``POST /admin/support-access/delete`` ends it (``admin_support`` draws the section): the
  API's service calls and audit events, for a key with ``account:write`` only.

Every form carries the session's CSRF token, and a POST whose ``Origin`` is not ours is
refused. A ``RequestError`` from the services is shown on the page as its message with its
status; nothing else about a failure ever is. The page's HTML is all in
``templates/admin_*.html``, and every value put into it is HTML-escaped
(``admin_render.render``); the mailbox cards are ``admin_mailbox_list``, the words
``admin_wording`` and the one stylesheet ``admin_style``, inlined and allowed by its hash.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from mailbox_worker.api.admin_mailbox_list import mailbox_list, provider_label
from mailbox_worker.api.admin_render import NO_HTML, Html, concatenate, render
from mailbox_worker.api.admin_session import COOKIE_NAME, COOKIE_PATH, AdminSessions, Session
from mailbox_worker.api.admin_style import STYLE_SOURCE, STYLESHEET
from mailbox_worker.api.admin_support import may_change, may_read, support_section
from mailbox_worker.api.admin_wording import CAPABILITY_LABELS
from mailbox_worker.api.admin_wording import OUTCOMES as OUTCOMES  # what each outcome says
from mailbox_worker.api.auth import MAILBOXES_READ, MAILBOXES_WRITE
from mailbox_worker.api.context import document, services
from mailbox_worker.api.document import schema_pointer
from mailbox_worker.api.parsing import within_body_timeout
from mailbox_worker.api.services import CONNECTED_OUTCOME, ConnectionStart, Principal
from mailbox_worker.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    RequestError,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationFailed,
)

ADMIN = "/admin"
SUPPORT_SECTION = f"{ADMIN}#support-access"
MAILBOX = "/admin/mailboxes/{mailbox_id:[A-Za-z0-9_-]+}"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
REQUIRED_PERMISSIONS = frozenset({MAILBOXES_READ, MAILBOXES_WRITE})

SESSIONS = web.AppKey("admin_sessions", AdminSessions)
PUBLIC_URL = web.AppKey("admin_public_url", str)

# The page may post only to us and send the browser on to an HTTPS consent page; it loads
# nothing, and applies no style but its own stylesheet (by hash); it cannot be framed, and its
# URL (which may carry an outcome) is never sent as a Referer to another origin.
# ("no-referrer" would also make browsers send "Origin: null" on our own forms.)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        f"default-src 'none'; style-src {STYLE_SOURCE}; form-action 'self' https:; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

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
            web.post(f"{ADMIN}/support-access", grant_support),
            web.post(f"{ADMIN}/support-access/delete", revoke_support),
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


@_shown_on_failure
async def grant_support(request: web.Request) -> web.StreamResponse:
    """303 to the page's support section once support access is granted (replacing one)."""
    try:
        signed_in = await _signed_in_form(request, "AdminSupportAccessForm")
    except ValidationFailed:
        raise InvalidRequest(
            "Say why support needs access (one line) and choose for how long."
        ) from None
    if signed_in is None:
        return _see_other(ADMIN)
    session, form = signed_in
    _check_may_change_support(session)
    await services(request).accounts.grant_support(
        session.principal, int(form["hours"]), form["reason"]
    )
    return _see_other(SUPPORT_SECTION)


@_shown_on_failure
async def revoke_support(request: web.Request) -> web.StreamResponse:
    """303 to the page's support section once support access has ended (idempotent)."""
    signed_in = await _signed_in_form(request, "AdminForm")
    if signed_in is None:
        return _see_other(ADMIN)
    session, _ = signed_in
    _check_may_change_support(session)
    await services(request).accounts.revoke_support(session.principal)
    return _see_other(SUPPORT_SECTION)


def _check_may_change_support(session: Session) -> None:
    if not may_change(session.principal):
        raise Forbidden(
            "This API key lacks the account:write permission needed to grant or end support "
            "access. Sign in with the account admin's key."
        )


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


def _page(
    title: str, content: Html, notice: Html, status: int, who: Html = NO_HTML, head: Html = NO_HTML
) -> web.Response:
    page = render(
        "admin_layout.html",
        title=title,
        stylesheet=Html(STYLESHEET),
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
    content = render("admin_bounce.inline.html", target=target)
    refresh = render("admin_bounce_head.html", target=target)
    return _page("Mailboxes", content, NO_HTML, 200, head=refresh)


def _sign_in_page(notice: Html, status: int) -> web.Response:
    return _page("Sign in", render("admin_sign_in.html"), notice, status)


async def _mailboxes_page(
    request: web.Request, session: Session, notice: Html, status: int
) -> web.Response:
    sessions = request.app[SESSIONS]
    csrf = sessions.csrf_token(session)
    connector = services(request).mailboxes
    mailboxes = await connector.list(session.principal)
    held_jobs = await connector.held_job_counts(session.principal) if mailboxes else {}
    now = dt.datetime.fromtimestamp(sessions.clock(), dt.UTC)
    accounts = services(request).accounts
    grant = await accounts.support_grant(session.principal) if may_read(session.principal) else None
    content = render(
        "admin_mailboxes.html",
        mailboxes=mailbox_list(mailboxes, held_jobs, csrf, now),
        csrf_token=csrf,
        provider_options=concatenate(
            render(
                "admin_provider_option.inline.html",
                provider=provider,
                label=provider_label(provider),
            )
            for provider in _enum(request, "Provider")
        ),
        capability_boxes=concatenate(
            render(
                "admin_capability.inline.html",
                capability=capability,
                label=CAPABILITY_LABELS.get(capability, capability),
            )
            for capability in _enum(request, "Capability")
        ),
        support=support_section(session.principal, grant, csrf),
    )
    who = render(
        "admin_signed_in_as.inline.html",
        key_id=session.principal.key_id,
        account_id=session.principal.account_id,
        csrf_token=csrf,
    )
    return _page("Mailboxes", content, notice, status, who)


def _role(kind: str) -> str:
    """An error is announced at once (``alert``); any other notice politely (``status``)."""
    return "alert" if kind == "error" else "status"


def _notice(kind: str, message: str) -> Html:
    return render("admin_notice.inline.html", kind=kind, role=_role(kind), message=message)


def _outcome_notice(query: Mapping[str, str]) -> Html:
    """The last consent's outcome in plain words, with its code."""
    outcome = query.get("outcome")
    if not outcome:
        return NO_HTML
    kind = "success" if outcome == CONNECTED_OUTCOME else "error"
    return render(
        "admin_outcome_notice.inline.html",
        kind=kind,
        role=_role(kind),
        message=OUTCOMES.get(outcome, "The consent did not complete."),
        outcome=outcome,
    )
