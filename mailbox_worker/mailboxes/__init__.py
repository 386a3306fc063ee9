"""Mailbox lifecycle: connect (OAuth consent), reconnect, disconnect."""
