"""The Microsoft simulator: identity platform v2.0 (login.microsoftonline.com) and Graph mail.

* ``state`` — what it remembers (``MicrosoftState``: tenants, users, clients, codes, tokens,
  consents, stored messages) and the scenario switches;
* ``authorize`` — discovery, keys and the authorize endpoint, with ``consent_page``;
* ``token_endpoint`` — the code and refresh-token grants; ``token_values`` — Entra-shaped values;
* ``identity_errors`` — the AADSTS error answers; ``scopes`` — Entra's scope rules;
* ``graph`` — the mail operations, with ``graph_messages`` (MIME and JSON messages),
  ``graph_attachments`` (upload sessions) and ``graph_errors`` (error bodies, middleware);
* ``admin`` — its part of the ``/_sandbox/`` control API.

It imports nothing from ``google``; what both share lives at the sandbox's top level.
"""
