"""Events for the invoicing app (docs/webhooks.md): their types (``types``), the outbox they
wait in (``outbox``), their signature (``signing``) and their delivery to the app's callback
URL (``delivery``)."""
