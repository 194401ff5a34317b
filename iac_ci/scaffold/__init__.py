"""``iac-ci init``: scaffolding an ``.iac-ci.yml`` from a repository's Terraform.

- ``hcl``: just enough of Terraform's language to read what matters here (module calls and their
  ``source``, ``provider`` blocks, the ``backend``/``cloud`` block) from ``*.tf`` and ``*.tf.json``;
- ``terraform``: a repository's files (git's list in a work tree, else a walk), which folders are
  roots and which modules, and each root's paths;
- ``render``: the roots as plan and apply orders, written out as a commented ``.iac-ci.yml``.

None of it writes: it reads files (asking git which ones count) and returns records; the CLI
(``iac_ci.cli.init``) writes.
"""
