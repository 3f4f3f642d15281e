#!/usr/bin/env bash
# Apply the fixable lint findings and the formatter to the whole tree, then show what is left for a person
# (ruff findings without a safe fix, mypy errors). Run from anywhere, in the project's virtualenv; the
# same paths as .ci/run checks. Exit status: that of the final checks (0 = .ci/run's lint steps pass).
set -uo pipefail
cd "$(dirname "$0")/.."
PATHS=(counterarg sweeps tests .ci docs/gen_cli.py)
ruff check --fix --quiet "${PATHS[@]}"   # import order, pyupgrade, unused imports, ... (safe fixes only)
ruff format --quiet "${PATHS[@]}"        # layout
ruff format --quiet "${PATHS[@]}"        # a second pass settles what the first one's wrapping changed
status=0
echo "== ruff check (left for a person)"
ruff check --statistics "${PATHS[@]}" || status=1
ruff check --output-format concise "${PATHS[@]}" || status=1
echo "== ruff format --check"
ruff format --check "${PATHS[@]}" || status=1
echo "== mutants whose line the formatter changed (rewrite each entry's line as it now reads)"
python - <<'PY' || status=1
import ast, pathlib, sys
tree = ast.parse(pathlib.Path(".ci/mutants.py").read_text(encoding="utf-8"))
M = next(ast.literal_eval(n.value) for n in tree.body
         if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "M")
gone = [(i, m[1], m[0]) for i, m in enumerate(M) if m[2] not in pathlib.Path(m[1]).read_text(encoding="utf-8")]
for i, path, what in gone:
    print(f"  mutant {i} ({what}): its line is no longer in {path}")
sys.exit(1 if gone else 0)
PY
echo "== mypy"
mypy counterarg || status=1
exit $status
