"""Templates: peak RSS of a fresh process rendering hostile sidecar templates (SPEC: memory stays flat).

.venv/bin/python benchmarks/templates.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MACHINE, SOURCE, figure  # noqa: E402

TEMPLATE_ATTACKS = (
    "{{ 'a' * 3000000000 }}",
    "{{ '%999999999s'|format(1) }}",
    "{{ 'a'|center(10**9) }}",
    "{{ range(60000)|join('x' * 1000) }}",
    "{% set x = 'a' * 60000 %}{{ x ~ x ~ x ~ x }}",
    "{% set ns = namespace(x='a') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% else %}aaaaaaaa{% endif %}{% endmacro %}{{ f(30) }}",
    "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}x",
)
_CHILD = """
import sys, time
from i2vd.config.profiles import ProfileError, render
def peak_kb():  # VmHWM, this process's own: ru_maxrss carries the parent's high-water mark over exec
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
base = peak_kb()
started = time.monotonic()
for template in sys.argv[1:]:
    try:
        render(template, {}, "bench")
    except ProfileError:
        pass
else:
    elapsed = time.monotonic() - started
    print(base / 1024, peak_kb() / 1024, elapsed)
"""


def bench_templates() -> float:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, *TEMPLATE_ATTACKS], cwd=SOURCE, capture_output=True, text=True, check=True
    )
    before, peak, elapsed = (float(word) for word in result.stdout.split())
    refused = f"{len(TEMPLATE_ATTACKS)} refused in {elapsed:.2f} s"
    figure(
        "templates: hostile sidecars",
        f"peak RSS {peak:.0f} MB ({peak - before:+.0f} MB; {refused})",
        "flat (< 50 MB growth)",
        peak - before < 50,
    )
    return peak


def main() -> int:
    print(f"# templates on {MACHINE}")
    bench_templates()
    return 0


if __name__ == "__main__":
    sys.exit(main())
