"""CPU of the readings (detectors/normalize.py) on simulate traffic, this tree against a git
revision, interleaved in one run, and which readings each one makes.

    PYTHONPATH=. .venv/bin/python bench/bench_decoders.py [--base REV] [--records 2000] [--rounds 5] [--structure | --transformer]

``--structure`` times the transformer's structure reading (``structured()`` of the normalised
text: JSON strings, code comments, assigned string literals) instead of ``readings()``.
``--transformer`` times what the transformer detector asks for per part, through the module's
own caches as ``detect()`` calls them: ``cached_readings()``, ``structure_reading()`` and
``numbers_reading()`` (the caches are cleared before each round).

Every screened part of ``--records`` simulate records (pipeline.simulate, seed 11) goes through
``readings()`` (uncached) of both modules, round after round, alternating which goes first, so
load changes on a shared machine hit both alike. Prints the median CPU per part and per record
of each, their ratio, and the number of parts that get each kind of extra reading: on benign
traffic every extra reading is backbone tokens spent (and a chance of a false positive).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from detectors import normalize as current  # noqa: E402
from pipeline.simulate import simulate  # noqa: E402


def module_at(rev: str):  # -> module: detectors/normalize.py as it was at ``rev``
    source = subprocess.run(["git", "show", f"{rev}:detectors/normalize.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "normalize_base.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("normalize_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["normalize_base"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="3e7043e", help="git revision to compare with")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--structure", action="store_true",
                      help="time structured() (the transformer's structure reading) instead of readings()")
    mode.add_argument("--transformer", action="store_true",
                      help="time the cached readings, structure and numbers readings the transformer asks for per part")
    args = parser.parse_args()
    base = module_at(args.base)
    texts = [part.text for r in simulate(args.records, seed=11) for part in r.log.screened_parts()]
    modules = {f"base ({args.base})": base, "this tree": current}
    # --structure: the normalised texts are made before the clock starts (the same work in both).
    bases = {name: [m._plain_and_base.__wrapped__(t, m.Limits())[1] for t in texts] for name, m in modules.items()} if args.structure else {}
    cpu: dict[str, list[float]] = {name: [] for name in modules}
    kinds: dict[str, Counter[str]] = {}
    for round_ in range(args.rounds):
        order = list(modules.items()) if round_ % 2 == 0 else list(modules.items())[::-1]
        for name, module in order:
            counts: Counter[str] = Counter()
            started = time.process_time()
            if args.structure:
                for normalised in bases[name]:
                    found = module.structured(normalised)
                    counts.update(found.transforms if found else ())
            elif args.transformer:
                for cached in (module._plain_and_base, module.cached_readings, module.structure_reading,
                               module.numbers_reading):
                    cached.cache_clear()
                started = time.process_time()  # the clearing is not the transformer's work
                for text in texts:
                    for reading in (*module.cached_readings(text), module.structure_reading(text),
                                    module.numbers_reading(text)):
                        counts.update(reading.transforms if reading else ())
            else:
                for text in texts:
                    for reading in module.readings(text):
                        counts.update(reading.transforms)
            cpu[name].append(time.process_time() - started)
            kinds[name] = counts
    console = Console(width=160)
    what = ("structured() of the normalised text" if args.structure else
            "the transformer's cached readings, structure and numbers readings" if args.transformer else "readings()")
    table = Table(title=f"{what} over {len(texts):,} screened parts of {args.records:,} simulate records, "
                        f"{args.rounds} interleaved rounds (median)")
    for column in ("module", "CPU us per part", "CPU us per record", "vs base"):
        table.add_column(column, justify="right")
    first = statistics.median(cpu[next(iter(modules))])
    for name in modules:
        median = statistics.median(cpu[name])
        table.add_row(name, f"{median / len(texts) * 1e6:.1f}", f"{median / args.records * 1e6:.1f}", f"{median / first:.3f}")
    console.print(table)
    names = sorted(set().union(*kinds.values()))
    counts = Table(title="parts with a reading that used each transform")
    counts.add_column("transform")
    for name in modules:
        counts.add_column(name, justify="right")
    for transform in names:
        counts.add_row(transform, *[f"{kinds[name][transform]:,}" for name in modules])
    console.print(counts)


if __name__ == "__main__":
    main()
