"""Outbound messages: the outbox, gateway routing, recipients, reminders, receipts, alerts."""
