"""Origins: the one normalised spelling return URLs and declared origins are compared in."""

from __future__ import annotations

import re

import pytest

from mailbox_worker.policy.origins import normalise_origin, url_origin


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("https://invoicing.example", "https://invoicing.example"),
        ("HTTPS://Invoicing.Example/", "https://invoicing.example"),
        ("https://invoicing.example:443", "https://invoicing.example"),
        ("https://invoicing.example:8443", "https://invoicing.example:8443"),
        ("https://invoicing.example:", "https://invoicing.example"),
        ("https://Bücher.example", "https://xn--bcher-kva.example"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
        # IDNA 2008, as a browser's Origin header spells it (IDNA 2003 said strasse.de).
        ("https://straße.de", "https://xn--strae-oqa.de"),
        ("https://192.0.2.10:9000", "https://192.0.2.10:9000"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://[::1]:3000", "http://[::1]:3000"),
    ],
)
def test_origins_are_normalised(given: str, normalised: str) -> None:
    assert normalise_origin(given) == normalised


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("http://invoicing.example", "must use https"),
        ("ftp://invoicing.example", "must start with https://"),
        ("invoicing.example", "must start with https://"),
        ("https://", "has no host"),
        ("https://:443", "has no host"),
        ("https://invoicing.example/settings", "no path"),
        ("https://invoicing.example?x=1", "no path, query"),
        ("https://invoicing.example#top", "fragment"),
        ("https://admin@invoicing.example", "user name or password"),
        ("https://invoicing.example:0", "invalid port"),
        ("https://invoicing.example:65536", "invalid port"),
        ("https://invoicing.example:https", "invalid port"),
        ("https://invoicing..example", "invalid host name"),
        ("https://-invoicing.example", "invalid host name"),
        ("https://invoicing_app.example", "invalid host name"),
        ("https://invoicing.example.", "invalid host name"),
        ("https://evil%2eexample", "invalid host name"),
        ("https://" + "a" * 64 + ".example", "invalid host name"),
        ("https://256.0.0.1", "invalid IPv4 address"),
        ("https://0", "invalid IPv4 address"),
        ("https://invoicing.0", "invalid IPv4 address"),
        ("https://invoicing.0x1f", "invalid IPv4 address"),
        ("https://010.0.0.1", "invalid IPv4 address"),
        ("https://[2001:db8::1]", "IPv6 literal only for [::1]"),
        ("https://invoicing.example\\@evil.example", "backslashes"),
        ("https://invoicing.example\n", "whitespace"),
    ],
)
def test_what_is_not_an_origin_is_refused_saying_why(given: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        normalise_origin(given)


def test_the_daemon_may_be_reached_over_http_on_any_host() -> None:
    assert normalise_origin("http://Mailbox.Internal:8080", http_anywhere=True) == (
        "http://mailbox.internal:8080"
    )


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Invoicing.example:443/settings?tab=email#mail", "https://invoicing.example"),
        ("https://invoicing.example.evil.example/", "https://invoicing.example.evil.example"),
        ("https://invoicing.example:8443/back", "https://invoicing.example:8443"),
        ("http://127.0.0.1:8080/admin", "http://127.0.0.1:8080"),
    ],
)
def test_a_urls_origin_is_the_normalised_scheme_host_and_port(url: str, origin: str) -> None:
    assert url_origin(url) == origin


@pytest.mark.parametrize(
    "url",
    [
        "https://invoicing.example@evil.example/",
        "https://evil.example\\@invoicing.example/",
        "javascript://invoicing.example/%0aalert(1)",
        "http://invoicing.example/settings",
    ],
)
def test_a_url_with_no_declarable_origin_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        url_origin(url)
