"""Authentication (who is calling) and authorization (what they may do).

identity.py: the :class:`Caller`; oidc.py, tokens.py, basic.py: one way each to prove
who one is; authenticator.py: the configured ways together; policy.py: the one set of rules
every API applies; ratelimit.py: submission rate per caller; secrets.py: encryption of
credentials kept at rest.
"""
