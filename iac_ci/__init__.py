"""The ``iac-ci`` command and what only it needs: the embedded AWS, the local engine and the
client of a deployed stack. None of this runs in Lambda or CodeBuild (``lambda_runtime`` does),
so the image never installs it."""
