"""Load the agent's configuration file: YAML, checked against its JSON Schema with every
problem located as FILE:LINE:COL (the policies' Located machinery), raised as one
ConfigError. Loaded once at start: a changed file needs a restart (no hot reload)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from enforcer.config.schema import config_schema
from enforcer.errors import ConfigError, Diagnostic
from enforcer.policy.located import Located, load_located, yaml_problem

_JSON_TYPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
               int: "an integer", float: "a number", type(None): "nothing (null)"}
_SCHEMA_TYPES = {"object": "a mapping", "array": "a list", "string": "a string",
                 "boolean": "a boolean (true or false)", "integer": "an integer",
                 "number": "a number"}


def load_config(path: str | Path) -> dict[str, Any]:
    """The settings of the file at `path` (an empty file is no settings). Raises
    ConfigError naming each problem's FILE:LINE:COL."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Diagnostic(name, 1, 1, f"cannot read the config file: "
                                                  f"{exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Diagnostic(name, 1, 1, f"not UTF-8 text: {exc.reason}")]) from None
    try:
        doc = load_located(text)
    except yaml.YAMLError as exc:
        line, col, problem = yaml_problem(exc)
        raise ConfigError([Diagnostic(name, line, col, f"invalid YAML: {problem}")]) from None
    if doc.data is None:
        return {}
    problems = schema_diagnostics(name, doc, config_schema())
    if problems:
        raise ConfigError(problems)
    return doc.data


def schema_diagnostics(name: str, doc: Located, schema: dict[str, Any]) -> list[Diagnostic]:
    """Every JSON Schema violation of `doc`, located and said for a person, in file order."""
    validator = jsonschema.Draft202012Validator(schema)
    found: dict[tuple[int, int, str], Diagnostic] = {}
    for error in validator.iter_errors(doc.data):
        for diagnostic in _explain(name, doc, error):
            found.setdefault((diagnostic.line, diagnostic.column, diagnostic.message),
                             diagnostic)
    return sorted(found.values(), key=lambda d: (d.line, d.column, d.message))


def _dotted(path: Iterable[Any]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")


def _kind(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _explain(name: str, doc: Located, error: jsonschema.ValidationError) -> list[Diagnostic]:
    path = tuple(error.absolute_path)
    where = _dotted(path) or "the config file"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        out = []
        for key in error.instance:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            line, col = doc.where(path + (key,), key=True)
            out.append(Diagnostic(name, line, col, f"unknown key {key!r} in {where}{hint} "
                                                   f"(allowed: {', '.join(allowed)})"))
        return out
    line, col = doc.where(path)
    if error.validator == "type":
        wanted = error.validator_value
        wanted = wanted if isinstance(wanted, list) else [wanted]
        message = (f"{where} must be {' or '.join(_SCHEMA_TYPES.get(w, w) for w in wanted)}, "
                   f"not {_kind(error.instance)}")
    elif error.validator == "enum":
        message = (f"{where} must be one of {', '.join(map(str, error.validator_value))}, "
                   f"not {error.instance!r}")
    elif error.validator == "required":
        message = f"{where}: {error.message}"
    elif "description" in error.schema:
        message = f"{where} must be {error.schema['description']}, not {error.instance!r}"
    else:
        message = f"{where}: {error.message}"
    return [Diagnostic(name, line, col, message)]
