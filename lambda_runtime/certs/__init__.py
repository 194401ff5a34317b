"""Mutual TLS: the certificate authority's records, shared by ``iac-ci certs`` (which writes them)
and the intake function (which checks every client certificate against them)."""
