"""``generate``: write the procedural domain-shift driving benchmark.

    python -m vlt_training.cli.generate --out data/synth --num-train 200 --num-val 50 --height 256 --width 512
"""

from __future__ import annotations

import argparse
import sys
import time

from vlt_training.synthetic.benchmark import generate_benchmark
from vlt_training.synthetic.conditions import list_conditions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="generate", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    p.add_argument("--out", required=True, help="output folder (gets cityscapes/, acdc/, benchmark.json)")
    p.add_argument("--num-train", type=int, default=8, help="source-domain training images")
    p.add_argument("--num-val", type=int, default=4, help="validation scenes (each also rendered per condition)")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conditions", default=",".join(list_conditions()),
                   help=f"comma-separated target conditions, '' for none (default: {','.join(list_conditions())})")
    p.add_argument("--strength", action="append", default=[], metavar="COND=S",
                   help="override a condition's strength in [0, 1], e.g. --strength fog=0.9 (repeatable)")
    p.add_argument("--workers", type=int, default=1, help="processes (output is identical for any value)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous benchmark in --out (otherwise --out must be empty or absent)")
    return p


def _parse_strengths(items: list[str], parser: argparse.ArgumentParser) -> dict[str, float]:
    strengths = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            strengths[name] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            parser.error(f"--strength expects COND=VALUE, got {item!r}")
    return strengths


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = [c for c in conditions if c not in list_conditions()]
    if unknown:
        parser.error(f"unknown condition(s) {', '.join(unknown)}; known: {', '.join(list_conditions())}")
    if args.height < 16 or args.width < 16:
        parser.error("--height and --width must be at least 16")
    if args.num_train < 0 or args.num_val < 0:
        parser.error("--num-train and --num-val must be >= 0")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    strengths = _parse_strengths(args.strength, parser)
    bad = [c for c, s in strengths.items() if c not in conditions or not 0 <= s <= 1]
    if bad:
        parser.error(f"--strength for {', '.join(bad)}: condition not selected or value outside [0, 1]")
    start = time.perf_counter()
    try:
        manifest = generate_benchmark(args.out, args.num_train, args.num_val, args.height, args.width, args.seed,
                                      conditions, strengths, workers=args.workers, overwrite=args.overwrite)
    except (FileExistsError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = manifest["num_train"] + manifest["num_val"] * (1 + len(conditions))
    print(f"wrote {n} images ({manifest['num_train']} train, {manifest['num_val']} val x "
          f"(source + {len(conditions)} conditions)) to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
