"""Load the agent's configuration file: YAML, checked against its JSON Schema with every
problem located as FILE:LINE:COL (the policies' Located machinery), raised as one
ConfigError. The file may be ours or Falco's falco.yaml (enforcer.config.falco_schema):
`config_files`, `${ENV}` and `-o KEY=VALUE` behave as in Falco. Loaded once at start: a
changed file needs a restart (no hot reload)."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from enforcer.config.falco_schema import NOT_APPLICABLE
from enforcer.config.overrides import Key, OverrideError, apply_override, parse_override
from enforcer.config.schema import config_schema
from enforcer.errors import ConfigError, Diagnostic
from enforcer.policy.located import Located, load_located, yaml_problem

_ENV = re.compile(r"(\$?)\$\{([^}]*)\}")
_JSON_TYPES = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
               int: "an integer", float: "a number", type(None): "nothing (null)"}
_SCHEMA_TYPES = {"object": "a mapping", "array": "a list", "string": "a string",
                 "boolean": "a boolean (true or false)", "integer": "an integer",
                 "number": "a number"}


@dataclass
class LoadedConfig:
    """A configuration after its `config_files`, `${ENV}` expansion and `-o` overrides:
    `data` is the merged settings, `warnings` the Falco keys that do not apply here (one
    each, located), `files` every file read, in order."""

    data: dict[str, Any]
    warnings: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def load_config(path: str | Path) -> dict[str, Any]:
    """The settings of the file at `path` (an empty file is no settings). Raises
    ConfigError naming each problem's FILE:LINE:COL."""
    return read_config(path).data


def read_config(path: str | Path | None, overrides: Sequence[str] = ()) -> LoadedConfig:
    """The file at `path` (or none), then the files its `config_files` names (Falco's
    append / override / add-only strategies, a directory's *.yaml in name order, a missing
    path skipped as Falco does), then each `-o KEY=VALUE` in order. Raises ConfigError with
    every problem located: FILE:LINE:COL in a file, `-o:N:COL` for the Nth override."""
    result = LoadedConfig({})
    origin: dict[str, tuple[str, Located]] = {}  # top-level key -> where it was written
    if path is not None:
        name = str(path)
        doc = _read_located(name)
        result.files.append(name)
        result.data = dict(doc.data or {})
        origin.update({k: (name, doc) for k in result.data})
        for include, strategy in _includes(name, doc):
            sub = _read_located(include)
            result.files.append(include)
            _merge(result.data, dict(sub.data or {}), strategy, origin, (include, sub))
    problems: list[Diagnostic] = []
    touched: list[tuple[int, Key, str]] = []
    for number, text in enumerate(overrides, 1):
        try:
            key, value = parse_override(text)
            touched.append((number, apply_override(result.data, key, value), text))
        except OverrideError as exc:
            problems.append(Diagnostic("-o", number, exc.column, f"{text!r}: {exc}"))
    if problems:
        raise ConfigError(problems)
    if touched:
        problems = _override_problems(result.data, touched)
        if problems:
            raise ConfigError(problems)
    for key in result.data:
        if key in NOT_APPLICABLE:
            file, doc = origin.get(key, ("-o", Located(None)))
            line, col = doc.where((key,), key=True)
            result.warnings.append(Diagnostic(
                file, line, col, f"Falco's {key!r} does not apply to enforcer and is "
                                 f"ignored: {NOT_APPLICABLE[key]}", severity="warning"))
    return result


def _read_located(name: str) -> Located:
    """One file, parsed with positions, `${ENV}` expanded and checked against the schema."""
    try:
        text = Path(name).read_text(encoding="utf-8")
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
        return doc
    doc.data = expand_env(doc.data)
    problems = schema_diagnostics(name, doc, config_schema())
    if problems:
        raise ConfigError(problems)
    return doc


def expand_env(value: Any) -> Any:
    """Falco's `${VAR}` in string values: replaced by the variable (an unset one by
    nothing), `$${VAR}` kept as the literal `${VAR}`. A whole value such as `${PORT}` that
    becomes `8765` or `true` is read as that number or boolean, as Falco converts it."""
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    out = _ENV.sub(lambda m: "${" + m.group(2) + "}" if m.group(1) else
                   os.environ.get(m.group(2), ""), value)
    if _ENV.fullmatch(value.strip()):
        try:
            typed = yaml.safe_load(out)
        except yaml.YAMLError:
            return out
        if isinstance(typed, bool | int | float):
            return typed
    return out


def _includes(name: str, doc: Located) -> list[tuple[str, str]]:
    """(file, strategy) of each file `config_files` names, in Falco's order."""
    out: list[tuple[str, str]] = []
    for index, entry in enumerate((doc.data or {}).get("config_files") or []):
        target, strategy = ((entry, "append") if isinstance(entry, str)
                            else (entry["path"], entry.get("strategy", "append")))
        where = Path(target)
        if where.resolve() == Path(name).resolve():
            line, col = doc.where(("config_files", index))
            raise ConfigError([Diagnostic(name, line, col, "config_files includes this file "
                                                           "itself; remove that entry")])
        if where.is_file():
            out.append((str(where), strategy))
        elif where.is_dir():
            out.extend((str(f), strategy) for f in sorted(where.iterdir()) if f.is_file())
    return out


def _merge(data: dict[str, Any], extra: dict[str, Any], strategy: str,
           origin: dict[str, tuple[str, Located]], source: tuple[str, Located]) -> None:
    """Falco's include strategies, on top-level keys: append extends lists and replaces
    the rest, override replaces everything, add-only adds keys not set yet."""
    extra.pop("config_files", None)  # as Falco: includes are not followed recursively
    for key, value in extra.items():
        if key in data and strategy == "add-only":
            continue
        if key in data and strategy == "append" and isinstance(data[key], list) \
                and isinstance(value, list):
            data[key] = [*data[key], *value]
        else:
            data[key] = value
        origin[key] = source


def _override_problems(data: dict[str, Any],
                       touched: list[tuple[int, Key, str]]) -> list[Diagnostic]:
    """Schema problems of the merged settings, each blamed on the `-o` that set its key."""
    validator = jsonschema.Draft202012Validator(config_schema())
    out: list[Diagnostic] = []
    for error in validator.iter_errors(data):
        for diagnostic in _explain("-o", Located(data), error):
            path = tuple(error.absolute_path)
            blame = next(((n, text) for n, key, text in reversed(touched)
                          if path[:len(key)] == key or key[:len(path)] == path), None)
            number, text = blame if blame else (0, "")
            message = f"{text!r}: {diagnostic.message}" if text else diagnostic.message
            out.append(Diagnostic("-o", number, 1, message))
    return out


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
