"""Every test in the suite can fail: each test function checks something (an AST scan of the test tree).

A test checks something when its body holds an ``assert``, a ``pytest.raises`` / ``warns`` / ``fail``, or a call
of a checking function: ``np.testing.assert_*``, any ``assert_*`` / ``check_*`` / ``verify_*`` name, or a helper of
the same module whose own body checks something (followed through helpers of helpers).
"""

from __future__ import annotations

import ast
from pathlib import Path

TEST_ROOT = Path(__file__).resolve().parents[1]
CHECKING_PREFIXES = ("assert", "check", "verify", "expect")
PYTEST_CHECKS = {"raises", "warns", "fail", "deprecated_call"}


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _checks_directly(node: ast.AST) -> bool:
    for child in ast.walk(node):
        if isinstance(child, ast.Assert):
            return True
        if isinstance(child, ast.Call):
            name = _called_name(child)
            if name.startswith(CHECKING_PREFIXES):
                return True
            if isinstance(child.func, ast.Attribute) and isinstance(child.func.value, ast.Name) \
                    and child.func.value.id == "pytest" and name in PYTEST_CHECKS:
                return True
    return False


def _local_calls(node: ast.AST) -> set[str]:
    return {_called_name(c) for c in ast.walk(node) if isinstance(c, ast.Call)} - {""}


def unchecked_tests(source: str) -> list[str]:
    """Names of the test functions in ``source`` that check nothing."""
    tree = ast.parse(source)
    functions: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.setdefault(node.name, node)

    checking: dict[str, bool] = {}

    def checks(name: str, seen: frozenset[str]) -> bool:
        if name in checking:
            return checking[name]
        node = functions[name]
        result = _checks_directly(node) or any(
            checks(callee, seen | {name}) for callee in _local_calls(node)
            if callee in functions and callee not in seen and callee != name)
        checking[name] = result
        return result

    return [name for name in functions if name.startswith("test") and not checks(name, frozenset())]


def test_the_scan_flags_a_test_without_a_check():
    source = (
        "def helper(x):\n    assert x\n"
        "def silent(x):\n    return x\n"
        "def test_ok():\n    helper(1)\n"
        "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n"
        "def test_numpy():\n    np.testing.assert_array_equal(1, 1)\n"
        "def test_nothing():\n    silent(1)\n"
    )
    assert unchecked_tests(source) == ["test_nothing"]


def test_every_test_function_checks_something():
    offenders = []
    for path in sorted(TEST_ROOT.rglob("test_*.py")):
        for name in unchecked_tests(path.read_text()):
            offenders.append(f"{path.relative_to(TEST_ROOT)}::{name}")
    assert not offenders, "tests without any check:\n" + "\n".join(offenders)
