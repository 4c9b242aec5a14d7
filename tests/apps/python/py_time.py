"""time and datetime: only relations between readings are printed, and formatting of fixed instants."""

import datetime
import itertools
import time


def main() -> None:
    now = time.time()
    print("after 2020:", now > 1577836800)
    t0 = time.monotonic()
    time.sleep(0.05)
    elapsed = time.monotonic() - t0
    print("slept at least 50 ms:", elapsed >= 0.05)
    print("perf_counter moves:", time.perf_counter() > 0)
    readings = [time.monotonic_ns() for _ in range(1000)]
    print("monotonic:", all(a <= b for a, b in itertools.pairwise(readings)))
    print("gmtime:", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(1700000000)))
    epoch = datetime.datetime.fromtimestamp(0, tz=datetime.UTC)
    print("epoch:", epoch.isoformat())
    print("delta:", datetime.timedelta(days=1, seconds=3661))
    print("today is a date:", isinstance(datetime.date.today(), datetime.date))


main()
