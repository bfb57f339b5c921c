"""What the benchmark scripts share: the clocks and the option that picks one."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def add_clock_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall (perf_counter) or cpu (process_time: less hurt by other busy processes)",
    )
