"""``iac-ci init``: scaffolding an ``.iac-ci.yml`` from a repository's Terraform.

- ``hcl``: just enough of Terraform's language to read what matters here (module calls and their
  ``source``, ``provider`` blocks, the ``backend``/``cloud`` block) from ``*.tf`` and ``*.tf.json``;
- ``terraform``: the walk over a repository that tells roots from modules;
- ``render``: the roots as plan and apply orders, written out as a commented ``.iac-ci.yml``.

All of it is pure: it reads files and returns records; the CLI (``iac_ci.cli.init``) writes.
"""
