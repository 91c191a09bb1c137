"""moto with IAM authorization evaluated the way AWS evaluates it, for the deploy
rehearsal (`make rehearse`).

moto's own enforcement (INITIAL_NO_AUTH_ACTION_COUNT) checks signatures and the
caller's policies, but only against the resource "*" outside SQS, IAM, STS and S3, so
a policy naming a table or a key never matches; it checks batch and transaction calls
as actions IAM does not have (sqs:SendMessageBatch, dynamodb:TransactWriteItems); it
evaluates conditions only as StringEquals and denies when an Allow's condition fails;
and it ignores KMS key policies. This server keeps moto's signature check and its
trust-policy check for sts:AssumeRole, and replaces the permission check with one
that follows AWS's rules for what Herald calls:

- the resource: DynamoDB table and index ARNs (each table of a batch), the KMS key's
  ARN (from KeyId, an alias, or the key inside a ciphertext), SQS queue ARNs, role ARNs,
  S3 bucket and object ARNs;
- the action: TransactWriteItems and TransactGetItems as the action of each item
  (PutItem, UpdateItem, DeleteItem, ConditionCheckItem, GetItem) on its table; the SQS
  batch calls as their single forms (SendMessage, DeleteMessage, ChangeMessageVisibility);
- Action/NotAction, Resource/NotResource with wildcards; an explicit Deny wins;
- conditions: String*, Arn*, Bool, Null, the ForAllValues:/ForAnyValue: qualifiers and
  IfExists, on the request keys kms:EncryptionContextKeys, kms:EncryptionContext:<key>,
  kms:CallerAccount, aws:TagKeys, aws:RequestTag/<key>, sts:ExternalId and the global
  aws:PrincipalArn, aws:PrincipalAccount, aws:PrincipalType, aws:RequestedRegion and
  aws:SecureTransport (an absent key fails a condition as in AWS; an operator not
  listed here fails it and is logged);
- KMS key policies: the caller is allowed when the key policy allows it directly, or
  allows the account (its root) and the caller's IAM policies allow it.

A presigned S3 GET (query-string authentication, as the api's dataref redirect
hands out) is evaluated with its signer's permissions; its signature is not checked
(moto checks only the Authorization header's).

Two gaps of moto's CloudFormation are filled: an AWS::KMS::Key keeps its KeySpec and
KeyUsage (moto makes every key SYMMETRIC_DEFAULT for ENCRYPT_DECRYPT, so the stack's
HMAC key for dataref tokens would refuse GenerateMac).

Not evaluated: service control policies, permission boundaries, session policies,
resource policies other than KMS key policies, and condition keys not listed above.

    INITIAL_NO_AUTH_ACTION_COUNT=3 python infra/moto_iam.py 127.0.0.1 5355
"""
import base64
import fnmatch
import json
import logging
import os
import sys
from urllib.parse import urlparse

from werkzeug.serving import run_simple

from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import AccessDeniedError
from moto.iam.access_control import IAMPolicy, IAMRequest, S3IAMRequest
from moto.kms.models import Key as KmsKey, kms_backends
from moto.kms.utils import _deserialize_ciphertext_blob
from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.server import DomainDispatcherApplication, create_backend_app

log = logging.getLogger("moto_iam")

SQS_SINGLE_FORMS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
TRANSACT_ITEM_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


def _json_body(handler):
    try:
        return json.loads(handler.raw_body or b"{}")
    except (TypeError, ValueError):
        return {}


def _document(policy):
    return json.loads(policy) if isinstance(policy, (str, bytes)) else policy


def _table_arn(handler, name, index=None):
    if name.startswith("arn:"):
        arn = name
    else:
        arn = f"arn:aws:dynamodb:{handler.region}:{handler.current_account}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


def _dynamodb_checks(handler, action):
    body = _json_body(handler)
    if action in ("TransactWriteItems", "TransactGetItems"):
        checks = []
        for item in body.get("TransactItems", []):
            for kind, spec in item.items():
                checks.append(
                    (f"dynamodb:{TRANSACT_ITEM_ACTIONS.get(kind, kind)}", _table_arn(handler, spec["TableName"]))
                )
        return checks
    if action in ("BatchWriteItem", "BatchGetItem"):
        return [(f"dynamodb:{action}", _table_arn(handler, t)) for t in body.get("RequestItems", {})]
    if "TableName" in body:
        return [(f"dynamodb:{action}", _table_arn(handler, body["TableName"], body.get("IndexName")))]
    return []


def _kms_key(handler, body):
    backend = kms_backends[handler.current_account][handler.region]
    key_id = body.get("KeyId")
    if not key_id and body.get("CiphertextBlob"):
        try:
            key_id = _deserialize_ciphertext_blob(base64.b64decode(body["CiphertextBlob"])).key_id
        except Exception:  # a malformed blob: KMS answers it itself
            return None
    if not key_id:
        return None
    try:
        return backend.keys[backend.any_id_to_key_id(key_id)]
    except Exception:  # an unknown key: KMS answers NotFound itself
        return None


def _kms_context(body):
    ctx = {}
    encryption_context = body.get("EncryptionContext")
    if isinstance(encryption_context, dict) and encryption_context:
        ctx["kms:EncryptionContextKeys"] = list(encryption_context)
        for k, v in encryption_context.items():
            ctx[f"kms:EncryptionContext:{k}"] = [v]
    return ctx


def _sts_context(handler):
    q = handler.querystring
    ctx = {}
    if "ExternalId" in q:
        ctx["sts:ExternalId"] = [q["ExternalId"][0]]
    keys = []
    n = 1
    while f"Tags.member.{n}.Key" in q:
        key = q[f"Tags.member.{n}.Key"][0]
        keys.append(key)
        ctx[f"aws:RequestTag/{key}"] = [q.get(f"Tags.member.{n}.Value", [""])[0]]
        n += 1
    if keys:
        ctx["aws:TagKeys"] = keys
    return ctx


# Condition operators: (test of one actual value against one expected value, negated).
def _string_like(actual, expected):
    return fnmatch.fnmatchcase(actual, expected)


OPERATORS = {
    "StringEquals": (lambda a, e: a == e, False),
    "StringNotEquals": (lambda a, e: a == e, True),
    "StringEqualsIgnoreCase": (lambda a, e: a.lower() == e.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda a, e: a.lower() == e.lower(), True),
    "StringLike": (_string_like, False),
    "StringNotLike": (_string_like, True),
    "ArnEquals": (lambda a, e: a == e, False),
    "ArnNotEquals": (lambda a, e: a == e, True),
    "ArnLike": (_string_like, False),
    "ArnNotLike": (_string_like, True),
    "Bool": (lambda a, e: a.lower() == e.lower(), False),
}


def _condition_holds(operator, actual, expected):
    if operator == "Null":
        return (actual is None) == (str(expected[0]).lower() == "true")
    qualifier = None
    if ":" in operator:
        qualifier, operator = operator.split(":", 1)
    if_exists = operator.endswith("IfExists")
    if if_exists:
        operator = operator[: -len("IfExists")]
    if operator not in OPERATORS:
        log.warning("condition operator %s is not evaluated by the rehearsal: it fails", operator)
        return False
    if actual is None:
        return qualifier == "ForAllValues" or if_exists
    test, negated = OPERATORS[operator]
    matches = [any(test(a, str(e)) for e in expected) for a in actual]
    if negated:
        matches = [not m for m in matches]
    if qualifier == "ForAllValues":
        return all(matches)
    return any(matches)


def _conditions_hold(conditions, ctx):
    for operator, pairs in (conditions or {}).items():
        for key, expected in pairs.items():
            expected = expected if isinstance(expected, list) else [expected]
            actual = ctx.get(key)
            if actual is None:
                lowered = {k.lower(): v for k, v in ctx.items()}
                actual = lowered.get(key.lower())
            if not _condition_holds(operator, actual, expected):
                return False
    return True


def _matches(patterns, value, case_sensitive):
    patterns = patterns if isinstance(patterns, list) else [patterns]
    for p in patterns:
        if case_sensitive:
            if fnmatch.fnmatchcase(value, p):
                return True
        elif fnmatch.fnmatchcase(value.lower(), p.lower()):
            return True
    return False


def _statements(document):
    statements = document.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def _principal_matches(principal, identities):
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    aws = principal.get("AWS", [])
    aws = aws if isinstance(aws, list) else [aws]
    services = principal.get("Service", [])
    services = services if isinstance(services, list) else [services]
    return any(p == "*" or p in identities for p in aws) or any(f"service:{s}" in identities for s in services)


def _service_users():
    """REHEARSAL_SERVICE_USERS=user=service.amazonaws.com,...: IAM users of this moto
    that stand for an AWS service principal (the Lambda service assuming a function's
    role), as moto has no service principals of its own."""
    pairs = [p.split("=", 1) for p in os.environ.get("REHEARSAL_SERVICE_USERS", "").split(",") if "=" in p]
    return {user: service for user, service in pairs}


def evaluate(documents, action, resource, ctx, identities=None):
    """'deny', 'allow' or None (no statement applies) for one action on one resource.
    With `identities` the documents are resource policies whose Principal must name
    one of them."""
    allowed = False
    for document in documents:
        for s in _statements(document):
            if identities is not None and not _principal_matches(s.get("Principal"), identities):
                continue
            if "NotAction" in s:
                if _matches(s["NotAction"], action, False):
                    continue
            elif not _matches(s.get("Action", []), action, False):
                continue
            if "NotResource" in s:
                if _matches(s["NotResource"], resource, True):
                    continue
            elif "Resource" in s and not _matches(s["Resource"], resource, True):
                continue
            if not _conditions_hold(s.get("Condition"), ctx):
                continue
            if s.get("Effect") == "Deny":
                return "deny"
            allowed = True
    return "allow" if allowed else None


_UNREAD = set()


class RehearsalIAMRequest(IAMRequest):
    def documents(self):
        documents = []
        for policy in self._access_key.collect_policies():
            if isinstance(policy, dict) and "Statement" in policy:
                documents.append(policy)
                continue
            try:
                documents.append(IAMPolicy(policy)._policy_json)
            except (KeyError, TypeError, StopIteration, ValueError):
                # An AWS managed policy moto holds without a document (it loads AWS's
                # list only on request): it grants nothing here.
                name = getattr(policy, "arn", None) or str(policy)[:120]
                if name not in _UNREAD:
                    _UNREAD.add(name)
                    log.warning("policy %s has no document in moto: it grants nothing in the rehearsal", name)
        return documents

    def identities(self):
        key = self._access_key
        ids = {key.arn, f"arn:aws:iam::{self.account_id}:root", self.account_id}
        role = getattr(key, "_owner_role_name", None)
        if role:
            ids.add(f"arn:aws:iam::{self.account_id}:role/{role}")
        service = _service_users().get(getattr(key, "_owner_user_name", None))
        if service:
            ids.add(f"service:{service}")
        return ids

    def global_context(self):
        """The global condition keys every request carries."""
        key = self._access_key
        role = getattr(key, "_owner_role_name", None)
        principal = f"arn:aws:iam::{self.account_id}:role/{role}" if role else key.arn
        return {
            "aws:PrincipalArn": [principal],
            "aws:PrincipalAccount": [self.account_id],
            "aws:PrincipalType": ["AssumedRole" if role else "User"],
            "aws:RequestedRegion": [self._region],
            # The functions' SDKs call AWS over TLS; moto is reached over plain http.
            "aws:SecureTransport": ["true"],
        }

    def trusted(self, role_arn, ctx):
        """The role's trust policy allows this caller sts:AssumeRole (and sts:TagSession
        when the call tags the session)."""
        try:
            role = self.backend.get_role_by_arn(role_arn)
        except Exception:  # not a role of this account: STS answers it itself
            return True
        document = role.assume_role_policy_document
        trust = [_document(document)]
        actions = ["sts:AssumeRole"] + (["sts:TagSession"] if ctx.get("aws:TagKeys") else [])
        return all(evaluate(trust, a, role_arn, ctx, self.identities()) == "allow" for a in actions)

    def check(self, action, resource, ctx, key_policy=None):
        self._action = action
        if action == "sts:GetCallerIdentity":
            return
        verdict = evaluate(self.documents(), action, resource, ctx)
        if verdict == "deny":
            self._deny(resource)
        if key_policy is not None:
            kp = [_document(key_policy)]
            if evaluate(kp, action, resource, ctx, self.identities()) == "deny":
                self._deny(resource)
            direct = evaluate(kp, action, resource, ctx, self.identities() - {f"arn:aws:iam::{self.account_id}:root", self.account_id})
            delegated = evaluate(kp, action, resource, ctx, {f"arn:aws:iam::{self.account_id}:root", self.account_id})
            if not (direct == "allow" or (delegated == "allow" and verdict == "allow")):
                self._deny(resource)
        elif verdict != "allow":
            self._deny(resource)
        if action == "sts:AssumeRole" and not self.trusted(resource, ctx):
            self._deny(resource)

    def _deny(self, resource):
        log.warning("AccessDenied: %s %s on %s", self._access_key.arn, self._action, resource)
        raise AccessDeniedError(user_arn=self._access_key.arn, action=f"{self._action} on resource: {resource}")


def authorize(self, resource="*"):
    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        ActionAuthenticatorMixin.request_count += 1
        return
    if self.headers.get("X-Amz-Target") in ActionAuthenticatorMixin.PUBLIC_OPERATIONS:
        return
    action = self._get_action()
    path = self.raw_path
    query = self.uri.split("?", 1)[1] if "?" in self.uri else ""
    # A request without a body is signed over an empty payload (moto would sign its
    # parsed parameters instead, and refuse every GET of a REST service).
    has_body = bool(self.raw_body)
    request = RehearsalIAMRequest(
        account_id=self.current_account,
        method=self.method,
        path=path + ("?" + query if query else ""),
        data=self.data if has_body or self.method not in ("GET", "HEAD", "DELETE") else {},
        body=self.raw_body,
        headers=self.headers,
        action=action,
    )
    request.check_signature()
    service = request._service
    ctx = request.global_context()
    key_policy = None
    checks = [(f"{service}:{action}", resource)]
    if service == "dynamodb":
        # Nothing to name (an empty batch): checked against "*", as moto does.
        checks = _dynamodb_checks(self, action) or checks
    elif service == "sqs":
        checks = [(f"sqs:{SQS_SINGLE_FORMS.get(action, action)}", resource)]
    elif service == "kms":
        body = _json_body(self)
        key = _kms_key(self, body)
        ctx.update(_kms_context(body))
        ctx["kms:CallerAccount"] = [self.current_account]
        if key is not None:
            checks = [(f"kms:{action}", key.arn)]
            key_policy = key.policy
    elif service == "sts":
        ctx.update(_sts_context(self))
    for checked_action, checked_resource in checks:
        request.check(checked_action, checked_resource, ctx, key_policy)


ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = authorize


class RehearsalS3IAMRequest(RehearsalIAMRequest):
    """The same evaluation for S3's REST calls, whose signatures and errors are S3's."""

    _create_auth = S3IAMRequest._create_auth
    _raise_signature_does_not_match = S3IAMRequest._raise_signature_does_not_match
    _raise_invalid_access_key = S3IAMRequest._raise_invalid_access_key


def authorize_s3(self, bucket_name=None, key_name=None):
    """S3's calls, on the bucket's or the object's ARN (moto's own check crashes on the
    inline policies CloudFormation gives a role)."""
    if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
        ActionAuthenticatorMixin.request_count += 1
        return
    name = f"{bucket_name or '*'}/{key_name}" if key_name else (bucket_name or "*")
    query = urlparse(self.uri).query
    headers = self.headers
    presigned = "Authorization" not in headers and "X-Amz-Credential" in self.querystring
    if presigned:
        # The signer's identity as an Authorization header would carry it.
        q = {k: v[0] for k, v in self.querystring.items()}
        headers = dict(headers)
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={q['X-Amz-Credential']}, "
            f"SignedHeaders={q.get('X-Amz-SignedHeaders', 'host')}, Signature={q.get('X-Amz-Signature', '')}"
        )
        if "X-Amz-Security-Token" in q:
            headers["X-Amz-Security-Token"] = q["X-Amz-Security-Token"]
    request = RehearsalS3IAMRequest(
        account_id=self.current_account,
        method=self.method,
        path=self.raw_path + ("?" + query if query else ""),
        data=self.data,
        body=self.raw_body,
        headers=headers,
        action=self._get_action(),
    )
    if not presigned:
        request.check_signature()
    request.check(request._action, f"arn:aws:s3:::{name}", request.global_context())


ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = authorize_s3


def key_from_cloudformation(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
    """An AWS::KMS::Key as CloudFormation creates it: with its KeySpec and KeyUsage."""
    properties = cloudformation_json["Properties"]
    key = kms_backends[account_id][region_name].create_key(
        policy=properties["KeyPolicy"],
        key_usage=properties.get("KeyUsage", "ENCRYPT_DECRYPT"),
        key_spec=properties.get("KeySpec", "SYMMETRIC_DEFAULT"),
        description=properties.get("Description"),
        tags=properties.get("Tags", []),
    )
    key.key_rotation_status = properties.get("EnableKeyRotation", False)
    key.enabled = properties.get("Enabled", True)
    return key


KmsKey.create_from_cloudformation_json = classmethod(key_from_cloudformation)

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)
