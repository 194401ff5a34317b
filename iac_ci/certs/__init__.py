"""``iac-ci certs``: a small certificate authority for the API's mutual TLS.

``authority`` makes the certificates (the ``cryptography`` library, no I/O), ``store`` keeps them
(CA keys in SSM SecureString, metadata in DynamoDB, the truststore in S3, API Gateway told its
version) and ``lifecycle`` orders the writes of ``init``, ``issue``, ``rotate-intermediate`` and
``revoke`` so that a crash at any point leaves a state the next command finishes.
"""
