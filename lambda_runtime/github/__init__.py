"""GitHub: webhook intake (``webhooks``, ``deliveries``), what an event starts (``events``), and
the provider that reports runs on pull requests (``provider``, ``comment``).

Nothing is imported here: the intake function needs only the webhook modules, and PyGithub
(``provider``) costs ~100 ms of cold start, so each caller imports the module it uses.
"""
