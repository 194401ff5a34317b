"""Notifications: every run and order state change, published as an EventBridge event
(``notify.events``; the schema is ``schema.events``). Slack, SNS or email are one rule away."""
