"""`# noqa` comments, as Ruff reads them: a bare `# noqa` silences every finding on its line;
`# noqa: RAX201, RAX3` silences those codes (or code prefixes), and any text after the codes is a
reason. A RAX code that silenced nothing is reported as RAX100, with a fix that removes it.
Codes of other tools (`E501`) are left to them.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass

from raximport.lint.registry import Edit, Finding, Fix

_DIRECTIVE = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)
_CODE = re.compile(r"[A-Z]+[0-9]+")


@dataclass
class Directive:
    """One `# noqa` comment: `codes` None for a bare one; `start`/`end` its columns in its line;
    `reason` the text after the codes (why the finding is not a problem here)."""

    row: int
    start: int
    end: int
    codes: tuple[str, ...] | None
    reason: str
    used: set[str]

    def silences(self, code: str) -> str | None:
        """The code or prefix of this directive that silences `code` ("*" for a bare one), or None."""
        if self.codes is None:
            return "*"
        return next((c for c in self.codes if code.startswith(c)), None)


def candidate_rows(text: str) -> set[int]:
    """Rows where a `# noqa` may be (a cheap search; `directives` tells comments from strings)."""
    rows, row, last = set(), 1, 0
    for match in _DIRECTIVE.finditer(text):
        row += text.count("\n", last, match.start())
        last = match.start()
        rows.add(row)
    return rows


def directives(text: str) -> dict[int, Directive]:
    """The `# noqa` directives of a file, by row; only real comments count (not text in strings)."""
    if "noqa" not in text.lower():
        return {}
    found: dict[int, Directive] = {}
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return {}
    for token in tokens:
        if token.type != tokenize.COMMENT:
            continue
        match = _DIRECTIVE.search(token.string)
        if match is None:
            continue
        row, col = token.start
        codes = tuple(_CODE.findall(match["codes"].upper())) if match["codes"] else None
        reason = token.string[match.end() :].strip(" \t,:;-")
        found[row] = Directive(row, col + match.start(), col + match.end(), codes, reason, set())
    return found


def apply(findings: list[Finding], found: dict[int, Directive]) -> list[Finding]:
    """The findings no directive silences; each directive records the codes it used."""
    kept = []
    for finding in findings:
        directive = found.get(finding.row)
        by = directive.silences(finding.code) if directive else None
        if by is None:
            kept.append(finding)
        else:
            directive.used.add(by)  # type: ignore[union-attr]
    return kept


def unused(found: dict[int, Directive], selected: frozenset[str], known: frozenset[str], line: dict[int, str]) -> list[Finding]:
    """RAX100 for each RAX code of a directive that silenced nothing: codes of rules that ran
    (`selected`) or that name no rule at all (`known` are the registered codes)."""
    findings = []
    for directive in found.values():
        if directive.codes is None:
            continue
        stale = [
            code
            for code in directive.codes
            if code.startswith("RAX")
            and code not in directive.used
            and (any(s.startswith(code) for s in selected) or not any(k.startswith(code) for k in known))
        ]
        if not stale:
            continue
        unknown = [c for c in stale if not any(k.startswith(c) for k in known)]
        kinds = f"unknown: {', '.join(unknown)}" if unknown else f"unused: {', '.join(stale)}"
        message = f"Unused `noqa` directive ({kinds}); remove it"
        findings.append(
            Finding("RAX100", message, directive.row, directive.start, directive.row, directive.end,
                    _removal(directive, stale, line.get(directive.row, "")))
        )
    return findings


def _removal(directive: Directive, stale: list[str], text: str) -> Fix:
    """Remove the stale codes; if none is left, the directive with its reason, to the end of the
    comment (and the spaces before it)."""
    keep = [c for c in directive.codes or () if c not in stale]
    if keep:
        return Fix("Remove unused codes", (Edit(directive.row, directive.start, directive.row, directive.end,
                                                  f"# noqa: {', '.join(keep)}"),), safe=True)
    start = len(text[: directive.start].rstrip())
    return Fix("Remove the `noqa` directive", (Edit(directive.row, start, directive.row, len(text), ""),), safe=True)
