"""Extracts server.py and client.py from the seed document, byte for byte.

    python python/tests/seed/extract.py SEED.txt OUTDIR

The seed shows each file in a ```python fence after the heading "### Beispiel `NAME`";
the file is the fence's content. tests/test_seed.py uses this to check that the copies
in this folder are still the seed's.
"""

import sys
from pathlib import Path


def extract(seed_text: str, name: str) -> str:
    heading = f"### Beispiel `{name}`"
    start = seed_text.index(heading)
    fence = seed_text.index("```python\n", start) + len("```python\n")
    end = seed_text.index("\n```", fence)
    return seed_text[fence:end] + "\n"


if __name__ == "__main__":
    text = Path(sys.argv[1]).read_text(encoding="utf-8")
    for name in ("server.py", "client.py"):
        Path(sys.argv[2], name).write_text(extract(text, name), encoding="utf-8")
