"""The Google simulator: OAuth 2.0 (accounts.google.com, oauth2.googleapis.com); Gmail will
grow here.

* ``state`` — what it remembers (``GoogleState``: clients, accounts, grants, codes, tokens) and
  the scenario switches;
* ``authorize`` — the authorization endpoint, with ``consent_page`` (granular consent);
* ``token_endpoint`` — token, revoke, discovery and keys;
* ``oauth_errors`` — the error answers; ``scopes`` — Google's scope spellings;
* ``admin`` — the ``/_sandbox/google/`` control API.

It imports nothing from ``microsoft``; what both share lives at the sandbox's top level.
"""
