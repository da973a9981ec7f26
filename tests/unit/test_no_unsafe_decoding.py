"""Nothing turns payload bytes into code: no pickle, eval or imports named by data, and the codec
hands handlers plain JSON types only, whatever the bytes claim to be."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dotmac.events
from dotmac.events import Event
from dotmac.events.codec import JsonCodec

PACKAGE = Path(dotmac.events.__file__).parent
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
# import_module is allowed only where the name cannot come from a message:
DYNAMIC_IMPORTS = {
    "__init__.py": "an extra's adapter class, named in the constant _LAZY table",
    "cli/worker.py": "the operator's app module, named on the command line",
}
PLAIN = (dict, list, str, int, float, bool, type(None))


def _sources() -> list[Path]:
    found = sorted(PACKAGE.rglob("*.py"))
    assert len(found) > 40  # the whole package, not an empty glob
    return found


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_unsafe_deserialisation_or_code_from_data(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    where = str(path.relative_to(PACKAGE))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
            assert not names & UNSAFE_MODULES, f"{where}:{node.lineno} imports {names}"
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            assert module not in UNSAFE_MODULES, f"{where}:{node.lineno} imports {module}"
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                assert func.id not in UNSAFE_CALLS, f"{where}:{node.lineno} calls {func.id}"
            if isinstance(func, ast.Attribute) and func.attr == "import_module":
                assert where in DYNAMIC_IMPORTS, f"{where}:{node.lineno} imports by name"
            if isinstance(func, ast.Attribute) and func.attr in {"load", "loads"}:
                owner = func.value
                assert not (isinstance(owner, ast.Name) and owner.id == "yaml"), where


def _only_plain(value: Any) -> None:
    assert isinstance(value, PLAIN), type(value)
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _only_plain(item)
    elif isinstance(value, list):
        for item in value:
            _only_plain(item)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(payload=json_values, headers=st.dictionaries(st.text(min_size=1), st.text(), max_size=3))
def test_the_codec_gives_back_plain_json_types(payload: Any, headers: dict[str, str]) -> None:
    codec = JsonCodec()
    data = codec.encode(Event("plain", payload, headers=headers))
    assert json.loads(data)["payload"] == json.loads(json.dumps(payload))  # plain JSON text
    decoded = codec.decode(data)
    _only_plain(decoded.payload)
    assert all(type(k) is str and type(v) is str for k, v in decoded.headers.items())


@pytest.mark.parametrize(
    "payload",
    [
        {"__class__": "os.system", "args": ["echo pwned"]},
        {"py/object": "subprocess.Popen", "py/reduce": [{"py/type": "os.system"}]},
        {"$type": "System.Diagnostics.Process", "__reduce__": "builtins.eval"},
        "cos\nsystem\n(S'echo pwned'\ntR.",  # a pickle program, as text
    ],
)
def test_payloads_that_name_code_stay_data(payload: Any) -> None:
    decoded = JsonCodec().decode(JsonCodec().encode(Event("plain", payload)))
    assert decoded.payload == payload
    _only_plain(decoded.payload)
