"""Every rule the SNAP adapter can put in an exchange row has a description in
the conformance report's rule table, so that no report prints a rule as its
own meaning ("customer-no  customer-no"). No database: the rules are read
from routes.py's source, wherever it names one."""

from __future__ import annotations

import ast
import inspect

from bank_adapters.snap import routes
from gateway.callbacks import conformance

DESCRIBED = {**conformance.PROTOCOL_RULES, **conformance.BUSINESS_RULES, **conformance.GATEWAY_RULES}


def _snap_rules() -> set[str]:
    """Each rule string routes.py can emit: Refusal(case, RULE, ...),
    field_refusal(case, field, reason, RULE), `exchange.rule = RULE` and the
    rules of its business outcome tables (_PAY_CASES, _INQUIRY_CASES)."""
    tree = ast.parse(inspect.getsource(routes))
    rules: set[str] = set()

    def constant(node: ast.AST | None) -> None:
        if isinstance(node, ast.IfExp):  # "body-mandatory" if problem.missing else "body-format"
            constant(node.body)
            constant(node.orelse)
            return
        assert isinstance(node, ast.Constant) and isinstance(node.value, str), ast.dump(node) if node else node
        if node.value:  # "" is the success row of an outcome table
            rules.add(node.value)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "Refusal" and len(node.args) >= 2:
                if not (isinstance(node.args[1], ast.Name) and node.args[1].id == "rule"):  # field_refusal's own call
                    constant(node.args[1])
            elif node.func.id == "field_refusal":
                constant(node.args[3] if len(node.args) >= 4 else next(k.value for k in node.keywords if k.arg == "rule"))
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Attribute) and target.attr == "rule" for target in node.targets
        ):
            if isinstance(node.value, ast.Constant):
                constant(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id.endswith("_CASES"):
            assert isinstance(node.value, ast.Dict)
            for value in node.value.values:
                assert isinstance(value, ast.Tuple)
                constant(value.elts[1])
    return rules


def test_every_rule_the_snap_adapter_emits_has_a_description():
    rules = _snap_rules()
    # The reader found the rules: the ones named in the audit among them.
    assert {"customer-no", "header-mandatory", "token-format", "amount", "payment-request-id-reused", "internal"} <= rules
    missing = sorted(rule for rule in rules if not DESCRIBED.get(rule))
    assert missing == [], f"rules without a description in gateway/callbacks/conformance.py: {missing}"
    for rule in rules:
        assert conformance.describe(rule) != rule


def test_customer_no_is_a_failed_rule_with_its_meaning():
    assert conformance.verdict("customer-no", None) == "fail"
    assert "customerNo" in conformance.describe("customer-no")
