"""The walkthrough's results as one table.

  e2e_summary.py record TSV MODE STEP SECONDS BEFORE_STATS AFTER_STATS [NOTE]
      appends one row: the consumer's /stats (JSON) before and after a step give its calls,
      failures and retries
  e2e_summary.py render TSV MARKDOWN [TITLE]
      prints the table and writes it as Markdown (so a run can be compared with the last one)

Exit 1 with a message on unreadable input; never a traceback for bad data."""
import datetime
import json
import sys

COLUMNS = ("mode", "step", "calls", "failed", "retries", "seconds", "note")


def delta(before, after, key):
    return int(after.get(key, 0)) - int(before.get(key, 0))


def record(path, mode, step, seconds, before, after, note=""):
    try:
        b, a = json.loads(before or "{}"), json.loads(after or "{}")
    except json.JSONDecodeError as e:
        sys.exit(f"e2e_summary: the consumer's /stats is not JSON ({e}); step {mode}/{step} not recorded")
    failed = delta(b, a, "failed")
    calls = delta(b, a, "ok") + failed
    row = (mode, step, str(calls), str(failed), str(delta(b, a, "retries")), str(int(float(seconds))), note)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\t".join(c.replace("\t", " ").replace("\n", " ") for c in row) + "\n")


def rows(path):
    try:
        with open(path, encoding="utf-8") as f:
            lines = [l.rstrip("\n") for l in f if l.strip()]
    except FileNotFoundError:
        return []
    out = []
    for n, line in enumerate(lines, 1):
        cells = line.split("\t")
        if len(cells) < 6:
            sys.exit(f"e2e_summary: {path}:{n} has {len(cells)} columns, expected at least 6")
        out.append((cells + [""])[: len(COLUMNS)])
    return out


def render(path, markdown, title="Walkthrough"):
    table = rows(path)
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(COLUMNS)]
    line = "  ".join(c.ljust(widths[i]) for i, c in enumerate(COLUMNS))
    print(line)
    for r in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)))
    calls = sum(int(r[2]) for r in table)
    failed = sum(int(r[3]) for r in table)
    total = f"{len(table)} steps, {calls} calls, {failed} failed"
    print(total)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with open(markdown, "w", encoding="utf-8") as f:
        f.write(f"# {title}\n\n{stamp}: {total}.\n\n")
        f.write("| " + " | ".join(COLUMNS) + " |\n")
        f.write("|" + "---|" * len(COLUMNS) + "\n")
        for r in table:
            f.write("| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |\n")
    return failed


def main(argv):
    if len(argv) >= 7 and argv[1] == "record":
        record(*argv[2:9])
        return 0
    if len(argv) in (4, 5) and argv[1] == "render":
        render(*argv[2:])
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
