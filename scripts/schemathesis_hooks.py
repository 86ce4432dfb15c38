"""schemathesis hooks for notbetrieb (loaded by scripts/schemathesis).

The built-in `positive_data_acceptance` check is told (scripts/schemathesis.toml) to let 400 and
422 through, and `valid_data_accepted` below decides them instead, more narrowly: a request that
matches the document may only be refused for what a document cannot know or say:

- 422 `url` for a webhook target that does not resolve to a public address (DNS decides that);
- 422 naming a field that refers to stored data (a town, district, service, office, procedure or user that
  does not exist, a user name taken) or a rule across fields (`valid_until` before `valid_from`,
  a body `procedure`/`slug` other than the path's, a step forward without evidence, a `version`
  other than `If-Match`'s), or an `Idempotency-Key` used before for another request;
- 422 naming a field whose rule a pattern cannot say briefly: an expected date's upper bound
  (ten years after today) and an e-mail address's character and length rules (the document's
  pattern is wider than `write::valid_email`, never narrower);
- 422 `wrong_type` for an integer written with a fraction (`3.0`), which JSON Schema counts as an
  integer but the server, like most JSON readers, does not;
- 400 on /search when neither `q` nor `place` has a non-blank character (OpenAPI cannot say
  "one of two query parameters"; the operation's description does).

Every other 400 or 422 for schema-valid data fails the run.
"""

import json

import schemathesis

# Fields whose acceptable values depend on stored data or on other fields.
REFERENCES = {
    "municipalities", "districts", "services", "targets", "for_ags", "office_slug", "service_slug",
    "scopes", "scope_ref", "depends_on", "user_id", "username", "id", "valid_until", "procedure",
    "slug", "evidence", "version", "expires_at", "municipality", "service", "owner_ags",
    # A webhook's target must resolve to a public address: what DNS says, not the document.
    "url",
}

# Fields whose rule is narrower than their documented pattern (see the module's description).
NARROWER_THAN_PATTERN = {"email", "expected_return", "expected_release", "expected_normal", "expected_date"}


def _is_positive(case):
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _has_fractional_integer(value, field):
    body = value if isinstance(value, dict) else {}
    v = body.get(field)
    return isinstance(v, float) and v.is_integer()


def _blank(value):
    return value is None or str(value).strip() == ""


@schemathesis.check
def valid_data_accepted(ctx, response, case):
    if not _is_positive(case) or response.status_code not in (400, 422):
        return None
    try:
        answer = json.loads(response.content or b"{}")
    except ValueError:
        answer = {}
    field = answer.get("field")
    if response.status_code == 422:
        if answer.get("error") == "idempotency_key_reused":
            return None
        if answer.get("error") == "invalid" and (field in REFERENCES or field in NARROWER_THAN_PATTERN):
            return None
        if field and _has_fractional_integer(case.body, field):
            return None
    if response.status_code == 400 and case.path.endswith("/search"):
        query = case.query or {}
        if _blank(query.get("q")) and _blank(query.get("place")):
            return None
    raise AssertionError(
        f"Schema-valid request refused with {response.status_code}: {answer.get('error')} "
        f"(field {field!r}): {answer.get('message')}"
    )
