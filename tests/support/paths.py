"""Where the repository, the tests and their fixture files are, for tests at any level."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
GITHUB_FIXTURES = FIXTURES / "github"
