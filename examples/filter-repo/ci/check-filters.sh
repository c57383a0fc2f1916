#!/bin/sh
# Check a cdcrouter filter repository: the same steps on any CI system (GitHub Actions calls this
# script too, so both stay one).
#
#   1. cdcrouter validate --format json   every problem with file:line:column (JSON kept for tools)
#   2. cdcrouter test                     the rule tests in rules-tests.yaml
#   3. cdcrouter generate --check         the SQL committed in sql/ matches filters.yaml
#   4. SQL diff (when a base ref is given) the SQL generated from the base commit's filters.yaml
#      against the SQL from the working tree, so a reviewer sees what the change does to routing.
#
# Usage: ci/check-filters.sh [BASE_REF]     (e.g. origin/main on a pull request)
# Environment:
#   CDCROUTER           the cdcrouter command (default: cdcrouter)
#   CDCROUTER_TARGETS   SQL targets kept in sql/ (default: "flink confluent-cloud")
#   CDCROUTER_CI_OUT    where validate.json and sql.diff are written (default: a temp directory)
# Exit status: 0 all checks pass, 1 a check failed (validation, a rule test, or stale SQL).
set -eu

cd "$(dirname "$0")/.."
CDCROUTER=${CDCROUTER:-cdcrouter}
TARGETS=${CDCROUTER_TARGETS:-flink confluent-cloud}
BASE_REF=${1:-}
OUT=${CDCROUTER_CI_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
failed=0

echo "== validate filters.yaml"
if $CDCROUTER validate --format json filters.yaml >"$OUT/validate.json"; then
    echo "filters.yaml: valid"
else
    # The JSON stays in $OUT for annotations; the log gets the readable file:line:column lines.
    $CDCROUTER validate filters.yaml || true
    echo "FAILED: filters.yaml is invalid; fix it first (the other checks need valid filters)"
    exit 1
fi

echo "== rule tests (rules-tests.yaml)"
if ! $CDCROUTER test rules-tests.yaml; then
    echo "FAILED: a rule test failed"
    failed=1
fi

echo "== generated SQL is up to date (sql/)"
for target in $TARGETS; do
    if ! $CDCROUTER generate --target "$target" --filters filters.yaml --out sql --check; then
        echo "FAILED: sql/routing.$target.sql is stale; run" \
            "\`cdcrouter generate --target $target --out sql\` and commit the result"
        failed=1
    fi
done

if [ -n "$BASE_REF" ]; then
    echo "== SQL diff: $BASE_REF -> working tree"
    work=$(mktemp -d)
    mkdir -p "$work/base/sql" "$work/head/sql"
    # ./ makes the path relative to this directory, wherever it sits in the git repository.
    if git show "$BASE_REF:./filters.yaml" >"$work/base/filters.yaml" 2>/dev/null; then
        for target in $TARGETS; do
            (cd "$work/base" && $CDCROUTER generate --target "$target" --filters filters.yaml --out sql \
                >/dev/null) || echo "(filters.yaml at $BASE_REF does not compile for $target)"
        done
    else
        echo "(no filters.yaml at $BASE_REF: every statement is new)"
    fi
    cp filters.yaml "$work/head/filters.yaml"
    for target in $TARGETS; do
        (cd "$work/head" && $CDCROUTER generate --target "$target" --filters filters.yaml --out sql >/dev/null)
    done
    : >"$OUT/sql.diff"
    for target in $TARGETS; do
        sql="sql/routing.$target.sql"
        [ -f "$work/base/$sql" ] || : >"$work/base/$sql"
        (cd "$work" && diff -u "base/$sql" "head/$sql") >>"$OUT/sql.diff" || true
    done
    if [ -s "$OUT/sql.diff" ]; then
        cat "$OUT/sql.diff"
    else
        echo "(no change to the generated SQL)"
    fi
    rm -rf "$work"
fi

echo "== outputs in $OUT"
if [ "$failed" -ne 0 ]; then
    echo "FAILED: see above"
    exit 1
fi
echo "all filter checks passed"
