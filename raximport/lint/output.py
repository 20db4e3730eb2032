"""`rax lint`'s output formats, as Ruff writes them: concise (`path:row:col: CODE message`), full
(with the source line and carets), json (Ruff's schema), github (workflow annotations) and SARIF
2.1.0 (code-scanning tools). Rows and columns are 1-based here, as editors count them."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from raximport import __version__
from raximport.lint.engine import Outcome
from raximport.lint.fix import applicable
from raximport.lint.registry import RULES, Finding

FORMATS = ("concise", "full", "json", "github", "sarif")


def display(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when inside it."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def _marker(finding: Finding, unsafe: bool) -> str:
    return "[*] " if applicable(finding, unsafe) else ""


def concise_line(name: str, finding: Finding, unsafe: bool = False) -> str:
    return f"{name}:{finding.row}:{finding.col + 1}: {finding.code} {_marker(finding, unsafe)}{finding.message}"


def concise(outcome: Outcome, unsafe: bool) -> str:
    return "".join(
        concise_line(display(f.path), finding, unsafe) + "\n" for f in outcome.files for finding in f.findings
    )


def full(outcome: Outcome, unsafe: bool) -> str:
    blocks = []
    for result in outcome.files:
        lines = result.text.splitlines() if result.findings else []
        for finding in result.findings:
            blocks.append(_snippet(display(result.path), finding, lines, unsafe))
    return "".join(blocks)


def _snippet(name: str, finding: Finding, lines: list[str], unsafe: bool) -> str:
    source = lines[finding.row - 1] if 0 < finding.row <= len(lines) else ""
    width = len(str(finding.row))
    end = finding.end_col if finding.end_row == finding.row else len(source)
    carets = "^" * max(end - finding.col, 1)
    gutter = " " * width
    out = [concise_line(name, finding, unsafe), f"{gutter} |", f"{finding.row} | {source}",
           f"{gutter} | {' ' * finding.col}{carets} {finding.code}", f"{gutter} |"]
    if finding.fix is not None:
        kind = "" if finding.fix.safe else " (unsafe)"
        out.append(f"{gutter} = help: {finding.fix.message}{kind}")
    return "\n".join(out) + "\n\n"


def _location(row: int, col: int) -> dict[str, int]:
    return {"column": col + 1, "row": row}


def as_json(outcome: Outcome, unsafe: bool) -> str:
    """A list of Ruff's diagnostic objects."""
    items = []
    for result in outcome.files:
        for f in result.findings:
            fix = None
            if f.fix is not None:
                edits = [{"content": e.text, "end_location": _location(e.end_row, e.end_col),
                          "location": _location(e.row, e.col)} for e in f.fix.edits]
                fix = {"applicability": "safe" if f.fix.safe else "unsafe", "edits": edits, "message": f.fix.message}
            items.append({"cell": None, "code": f.code, "end_location": _location(f.end_row, f.end_col),
                          "filename": str(result.path.resolve()), "fix": fix, "location": _location(f.row, f.col),
                          "message": f.message, "noqa_row": f.row, "url": None})
    return json.dumps(items, indent=2) + "\n"


def _escape(text: str, property: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property else text


def github(outcome: Outcome, unsafe: bool) -> str:
    """GitHub Actions workflow commands: each finding an error annotation on its lines."""
    lines = []
    for result in outcome.files:
        name = _escape(display(result.path), property=True)
        for f in result.findings:
            lines.append(f"::error title={_escape('rax lint (' + f.code + ')', True)},file={name},line={f.row},"
                         f"col={f.col + 1},endLine={f.end_row},endColumn={f.end_col + 1}::"
                         f"{_escape(f.code + ' ' + f.message)}\n")
    return "".join(lines)


def sarif(outcome: Outcome, unsafe: bool) -> str:
    """A SARIF 2.1.0 log: one run, every registered rule described, one result per finding."""
    codes = sorted(RULES)
    rules = [{"id": code, "name": RULES[code].name,
              "shortDescription": {"text": _summary(RULES[code].doc)},
              "fullDescription": {"text": RULES[code].doc},
              "help": {"text": RULES[code].doc, "markdown": RULES[code].doc},
              "defaultConfiguration": {"level": "error", "enabled": RULES[code].default}} for code in codes]
    results = []
    for result in outcome.files:
        uri = result.path.resolve().as_uri()
        for f in result.findings:
            region = {"startLine": f.row, "startColumn": f.col + 1, "endLine": f.end_row, "endColumn": f.end_col + 1}
            results.append({"ruleId": f.code, "ruleIndex": codes.index(f.code), "level": "error",
                            "message": {"text": f.message},
                            "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}, "region": region}}]})
    log = {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
           "runs": [{"tool": {"driver": {"name": "rax lint", "version": __version__, "rules": rules}},
                     "results": results}]}
    return json.dumps(log, indent=2) + "\n"


def _summary(doc: str) -> str:
    """The gist of a rule's "What it does": its first sentence up to a colon, without parentheses
    (both outside `code`)."""
    body = " ".join(doc.split("## What it does", 1)[-1].strip().split("\n\n")[0].split())
    kept, quoted, depth = [], False, 0
    for i, char in enumerate(body):
        quoted ^= char == "`"
        if not quoted:
            depth += (char == "(") - (char == ")")
            if depth == 0 and body.startswith((": ", ". "), i):
                break
        if depth or char == ")" and not quoted:
            continue
        kept.append(char)
    return " ".join("".join(kept).split()).replace(" ,", ",").rstrip(" .") + "."


WRITERS: dict[str, Callable[[Outcome, bool], str]] = {
    "concise": concise, "full": full, "json": as_json, "github": github, "sarif": sarif,
}


def summary(outcome: Outcome, unsafe: bool, fixing: bool) -> str:
    """Ruff's closing lines: how many found, fixed and remaining, and how many `--fix` would fix."""
    remaining = outcome.findings
    if not remaining and not outcome.fixed:
        return "All checks passed!\n"
    if outcome.fixed:
        text = f"Found {remaining + outcome.fixed} errors ({outcome.fixed} fixed, {remaining} remaining).\n"
    else:
        text = f"Found {remaining} error{'s' if remaining != 1 else ''}.\n"
    fixable = sum(1 for f in outcome.files for finding in f.findings if applicable(finding, unsafe))
    hidden = sum(1 for f in outcome.files for finding in f.findings if finding.fix and not finding.fix.safe) if not unsafe else 0
    more = f"{hidden} hidden fix{'es' if hidden != 1 else ''} can be enabled with the `--unsafe-fixes` option"
    if fixable and not fixing:
        text += f"[*] {fixable} fixable with the `--fix` option" + (f" ({more}).\n" if hidden else ".\n")
    elif hidden:
        text += f"No fixes available ({more}).\n"
    return text


def statistics(outcome: Outcome, unsafe: bool) -> str:
    """Findings per code, most frequent first (`[*]` where all of them are fixable)."""
    counts = Counter(finding.code for f in outcome.files for finding in f.findings)
    fixable = Counter(finding.code for f in outcome.files for finding in f.findings if applicable(finding, unsafe))
    width = len(str(max(counts.values(), default=0)))
    return "".join(f"{n:>{width}}\t{code}\t{'[*]' if fixable[code] == n else '[ ]'} {RULES[code].name}\n"
                   for code, n in counts.most_common())


def rules_markdown() -> str:
    """The README's table of rules (tests check that it matches the registry)."""
    rows = ["| code | name | default | what it flags |", "| --- | --- | --- | --- |"]
    rows += [f"| {code} | {r.name} | {'on' if r.default else 'off'} | {_summary(r.doc)} |"
             for code, r in sorted(RULES.items())]
    return "\n".join(rows) + "\n"


def explain(code: str) -> str:
    rule = RULES[code]
    state = "on by default" if rule.default else "off by default (select it, or ALL)"
    return f"# {rule.name} ({code})\n\n{state}\n\n{rule.doc}\n"
