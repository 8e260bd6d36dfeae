"""Schemathesis hooks for scripts/schemathesis.sh.

A challenge's opponent must be another user than its challenger: a rule between two fields
(and the token's `sub`), which JSON Schema cannot state, so the OpenAPI document says it in
words. Generated bodies that break it (`{"user_id": "0", "opponent_id": "0"}` is a favourite
of the coverage phase) get another opponent before they are sent; that opponent is as valid
as the one it replaces.
"""

import os

import schemathesis

# The `sub` of the token the run uses: the challenger when a body names no `user_id`.
TOKEN_USER = os.environ["MATCHWELL_SCHEMATHESIS_USER"]


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if (case.method.upper(), case.path) != ("POST", "/v1/matchmaking/challenges"):
        return
    body = case.body
    if not isinstance(body, dict):
        return
    challenger = body.get("user_id") or TOKEN_USER
    if body.get("opponent_id") == challenger:
        body["opponent_id"] = "opponent" if challenger != "opponent" else "another-opponent"
