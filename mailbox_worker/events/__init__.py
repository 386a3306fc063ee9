"""Events for the invoicing app: the outbox they wait in (``outbox``) and their delivery to
the app's callback URL (``delivery``)."""
