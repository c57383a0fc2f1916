"""Run pytest and refuse to call "no tests collected" (exit code 5) a success."""

from __future__ import annotations

import sys

import pytest


def main(argv: list[str]) -> int:
    code = int(pytest.main(argv))
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("error: pytest collected no tests; refusing to report success", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
