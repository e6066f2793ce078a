"""A small IAM policy evaluator for the tests: does a set of policies allow one action on one resource?

moto stores IAM policies but never evaluates them, so the tests decide here what AWS would decide. It covers
the policy grammar the project's documents and AmazonEMRServicePolicy_v2 use, and refuses (raises) anything
else rather than guess: an unknown condition operator, a policy variable, a Principal other than "*" or
{"Service": ...}. A service principal (a role's trust policy) is matched against the request context's
aws:PrincipalServiceName, the key AWS sets when a service principal makes the request
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-principalservicename).

The logic, as the IAM User Guide states it:
- explicit Deny beats Allow; no applicable statement is an implicit deny
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic_AccessPolicyLanguage_Interplay.html
- Action names are case-insensitive and take * and ? wildcards; NotAction / NotResource apply to everything
  they do not list
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_notaction.html
- Resource ARNs take * and ? within each colon-separated segment; a * ending the pattern's last segment may
  match beyond colons
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html
- several operators, and several keys under one operator, are ANDed; several values of one key are ORed,
  NORed under a negated operator
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-logic-multiple-context-keys-or-values.html
- a key missing from the request context makes a condition false, except under a negated operator (true),
  ...IfExists (true) and Null (which tests exactly that); ArnLike/ArnEquals compare the six ARN segments
  separately, each with wildcards
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
- ForAllValues: every request value must match (true when the key is missing or empty); ForAnyValue: at
  least one must (false when missing)
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass


class Decision(enum.Enum):
    ALLOW = "allow"
    IMPLICIT_DENY = "implicit deny"
    EXPLICIT_DENY = "explicit deny"


@dataclass(frozen=True)
class Result:
    decision: Decision
    statements: tuple[str, ...]  # Sid (or position) of each statement that decided it

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


Context = Mapping[str, "str | bool | list[str]"]

_STATEMENT_KEYS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition", "Principal"}


@functools.cache
def _glob(pattern: str, ignore_case: bool) -> re.Pattern:
    if "${" in pattern:
        raise NotImplementedError(f"policy variables are not evaluated here: {pattern!r}")
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def glob_matches(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return _glob(pattern, ignore_case).fullmatch(value) is not None


def _arn_parts(arn: str) -> list[str]:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise ValueError(f"not an ARN: {arn!r}")
    return parts


def arn_matches(pattern: str, arn: str, trailing_star_spans_colons: bool = True) -> bool:
    """Segment by segment; the Resource element (not ArnLike) lets a final * run past colons."""
    if pattern == "*":
        return True
    wanted, actual = pattern.split(":", 5), _arn_parts(arn)
    if len(wanted) == 6:
        return all(glob_matches(w, a) for w, a in zip(wanted, actual, strict=True))
    if trailing_star_spans_colons and wanted[-1].endswith("*"):
        head = len(wanted) - 1
        return all(glob_matches(w, a) for w, a in zip(wanted[:head], actual[:head], strict=True)) and (
            glob_matches(wanted[-1], ":".join(actual[head:]))
        )
    return False


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"condition value {value!r} is neither a string, a number nor a boolean")


# operator -> (does one request value match one policy value, is the operator negated)
_OPERATORS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "StringEquals": (lambda v, p: v == p, False),
    "StringNotEquals": (lambda v, p: v == p, True),
    "StringEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), True),
    "StringLike": (lambda v, p: glob_matches(p, v), False),
    "StringNotLike": (lambda v, p: glob_matches(p, v), True),
    "ArnEquals": (lambda v, p: arn_matches(p, v, trailing_star_spans_colons=False), False),
    "ArnLike": (lambda v, p: arn_matches(p, v, trailing_star_spans_colons=False), False),
    "ArnNotEquals": (lambda v, p: arn_matches(p, v, trailing_star_spans_colons=False), True),
    "ArnNotLike": (lambda v, p: arn_matches(p, v, trailing_star_spans_colons=False), True),
    "Bool": (lambda v, p: v.lower() == p.lower(), False),
}


def _lookup(context: Context, key: str) -> list[str] | str | None:
    """Condition key names are case-insensitive; None when the key is missing (or an empty set)."""
    found = [name for name in context if name.lower() == key.lower()]
    if len(found) > 1:
        raise ValueError(f"request context names {key!r} twice: {found}")
    if not found:
        return None
    value = context[found[0]]
    if isinstance(value, list):
        return [_as_text(v) for v in value] or None
    return _as_text(value)


def _parse_operator(operator: str) -> tuple[str | None, str, bool]:
    qualifier = None
    for prefix in ("ForAnyValue:", "ForAllValues:"):
        if operator.startswith(prefix):
            qualifier, operator = prefix[:-1], operator[len(prefix):]
    if_exists = operator.endswith("IfExists") and operator != "IfExists"
    base = operator.removesuffix("IfExists") if if_exists else operator
    if base == "Null" and (qualifier or if_exists):
        raise ValueError(f"Null takes neither a set qualifier nor IfExists: {operator!r}")
    if base != "Null" and base not in _OPERATORS:
        raise ValueError(f"condition operator {operator!r} is not evaluated by this test evaluator")
    return qualifier, base, if_exists


def _key_holds(operator: str, key: str, expected, context: Context) -> bool:
    qualifier, base, if_exists = _parse_operator(operator)
    wanted = [_as_text(v) for v in _as_list(expected)]
    value = _lookup(context, key)
    if base == "Null":
        return any((value is None) == (w.lower() == "true") for w in wanted)
    match, negated = _OPERATORS[base]

    def holds(one: str) -> bool:
        hit = any(match(one, w) for w in wanted)
        return not hit if negated else hit

    if qualifier is None:
        if value is None:
            return if_exists or negated
        if isinstance(value, list):
            raise ValueError(f"{key} is multivalued: {operator} needs ForAnyValue: or ForAllValues:")
        return holds(value)
    if value is None:
        return qualifier == "ForAllValues" or if_exists
    values = _as_list(value)
    return all(map(holds, values)) if qualifier == "ForAllValues" else any(map(holds, values))


def conditions_hold(condition: Mapping, context: Context) -> bool:
    # every key is evaluated (no short cut), so an unsupported operator raises wherever it stands
    results = [
        _key_holds(operator, key, expected, context)
        for operator, keys in condition.items()
        for key, expected in keys.items()
    ]
    return all(results)


def _applies(statement: Mapping, action: str, resource: str, context: Context) -> bool:
    unknown = set(statement) - _STATEMENT_KEYS
    if unknown:
        raise ValueError(f"statement elements not evaluated here: {sorted(unknown)}")
    principal = statement.get("Principal", "*")
    if isinstance(principal, Mapping) and set(principal) == {"Service"}:
        if _lookup(context, "aws:PrincipalServiceName") not in _as_list(principal["Service"]):
            return False
    elif principal not in ("*", {"AWS": "*"}):
        raise NotImplementedError(f"only Principal '*' or a service is evaluated here, not {principal!r}")
    if ("Action" in statement) == ("NotAction" in statement):
        raise ValueError(f"a statement needs exactly one of Action and NotAction: {statement}")
    if "Resource" in statement and "NotResource" in statement:
        raise ValueError(f"a statement takes at most one of Resource and NotResource: {statement}")
    if "Resource" not in statement and "NotResource" not in statement and "Principal" not in statement:
        # only a resource-based policy (a trust policy: the role itself) leaves the resource implicit
        raise ValueError(f"an identity policy statement needs Resource or NotResource: {statement}")
    if statement["Effect"] not in ("Allow", "Deny"):
        raise ValueError(f"Effect must be Allow or Deny, not {statement['Effect']!r}")
    if ":" not in action:
        raise ValueError(f"an action is service:Name, not {action!r}")

    def action_listed(patterns) -> bool:
        return any(glob_matches(p, action, ignore_case=True) for p in _as_list(patterns))

    def resource_listed(patterns) -> bool:
        return any(arn_matches(p, resource) for p in _as_list(patterns))

    in_action = action_listed(statement["Action"]) if "Action" in statement else (
        not action_listed(statement["NotAction"])
    )
    if "Resource" in statement:
        in_resource = resource_listed(statement["Resource"])
    elif "NotResource" in statement:
        in_resource = not resource_listed(statement["NotResource"])
    else:
        in_resource = True  # the policy's own resource
    return in_action and in_resource and conditions_hold(statement.get("Condition", {}), context)


def statements(policies: Mapping | Iterable[Mapping]) -> list[tuple[str, Mapping]]:
    """(name, statement) for every statement of one policy document or several."""
    documents = [policies] if isinstance(policies, Mapping) else list(policies)
    named = []
    for number, document in enumerate(documents):
        if document.get("Version") != "2012-10-17":
            raise ValueError(f"policy Version {document.get('Version')!r}: only 2012-10-17 is evaluated here")
        for index, statement in enumerate(_as_list(document["Statement"])):
            for operator in statement.get("Condition", {}):
                _parse_operator(operator)  # an unknown operator fails every evaluation, not only when reached
            named.append((statement.get("Sid") or f"policy {number} statement {index}", statement))
    return named


def evaluate(policies: Mapping | Iterable[Mapping], action: str, resource: str, context: Context | None = None,
             ) -> Result:
    """The decision of the union of `policies` (e.g. a role's managed and inline policies) on one request."""
    context = context or {}
    applying = [(name, s) for name, s in statements(policies) if _applies(s, action, resource, context)]
    denied = tuple(name for name, s in applying if s["Effect"] == "Deny")
    if denied:
        return Result(Decision.EXPLICIT_DENY, denied)
    allowed = tuple(name for name, s in applying if s["Effect"] == "Allow")
    if allowed:
        return Result(Decision.ALLOW, allowed)
    return Result(Decision.IMPLICIT_DENY, ())
