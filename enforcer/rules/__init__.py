"""The Falco rules language: load upstream rule files unchanged, evaluate events fast.

Entry points:
- `loader.load_rules(paths) -> RuleSet` (raises `enforcer.errors.RuleError`);
- `engine.Engine(ruleset, hostname, rule_matching="all"|"first", append_output=[...])
  .evaluate(event) -> list[Alert]`, `.event_types()`;
- `append_output`: Falco's `append_output` entries (extra output text and fields);
- `fields`: the field registry; `nodes`: the condition AST (`Rule.expr`);
- `partial.reduce(expr, known, pending)`: decide known fields now, keep a residue;
- `selection`: enable/disable by name, wildcard, tag, minimum priority.

Pipeline: yamlsource (YAML nodes with positions) -> reader (items, append/override) ->
loader (lists, macros, exceptions, parse via parser/condition.lark, checks, lint,
evttypes, output) -> codegen (Python source per event type) -> engine.
"""
