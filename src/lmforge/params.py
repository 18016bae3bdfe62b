"""Keep ``params.yaml`` equal to DVC's composition of ``conf/``.

``dvc exp run`` recomposes ``conf/`` into ``params.yaml`` itself; plain ``dvc repro`` reads the
file as it is. ``python -m lmforge.params`` rewrites it after a change to ``conf/``;
``--check`` exits 1 when it has drifted. DVC's own composer is used, so both agree byte for byte.
A machine's own ``conf/local/`` is left out: the committed file is the same on every machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from lmforge.core.config import find_root


def compose(output: Path, root: Path, overrides: list[str] | None = None) -> None:
    from dvc.utils.hydra import compose_and_dump

    # Hydra refuses to delete the optional entry when the file is absent.
    local = ["~local"] if (root / "conf" / "local" / "default.yaml").is_file() else []
    compose_and_dump(
        output, str(root / "conf"), None, "config", str(root / ".dvc" / "hydra"), [*local, *(overrides or [])]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmforge.params", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if params.yaml is stale")
    args = parser.parse_args(argv)
    root = find_root()
    target = root / "params.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "params.yaml"
        compose(fresh, root)
        text = fresh.read_text()
    if args.check:
        if not target.is_file() or target.read_text() != text:
            print(
                f"{target} differs from the composition of conf/; "
                "run `python -m lmforge.params` and commit it",
                file=sys.stderr,
            )
            return 1
        print(f"{target} is in sync with conf/")
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
