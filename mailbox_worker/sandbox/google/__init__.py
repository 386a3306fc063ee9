"""The Google simulator: OAuth 2.0 (accounts.google.com, oauth2.googleapis.com) and the Gmail
API (gmail.googleapis.com).

* ``state`` — what it remembers (``GoogleState``: clients, accounts, grants, codes, tokens) and
  the scenario switches;
* ``authorize`` — the authorization endpoint, with ``consent_page`` (granular consent);
* ``token_endpoint`` — token, revoke, discovery and keys;
* ``oauth_errors`` — the error answers; ``scopes`` — Google's scope spellings;
* ``admin`` — the ``/_sandbox/google/`` control API;
* ``gmail`` — messages.send, drafts.create, drafts.send and their upload variants, reading
  bodies through ``gmail_uploads`` and messages through ``gmail_messages``, answering errors
  through ``gmail_errors``; ``gmail_state`` (with ``gmail_quota``) is what it remembers and
  ``gmail_admin`` the inspection and limits API under ``/_sandbox/google/``.

It imports nothing from ``microsoft``; what both share lives at the sandbox's top level.
"""
