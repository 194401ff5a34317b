"""Pipelines beyond pull requests: the triggers of ``.iac-ci.yml`` (``on:``), schedules, chained runs."""
