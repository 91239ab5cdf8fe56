"""Re-hash every object of DVC's local cache, to find those whose bytes changed on disk.

DVC trusts the hash it recorded for a cache file while the file's size and modification
time stay the same, so a byte that rots on disk without touching them is checked out
silently and survives ``dvc repro -f``; DVC has no command that re-hashes its cache
(iterative/dvc#9561). Each object is named by the md5 of its bytes, so re-hashing finds
it. Each corrupt object is named with the outputs of dvc.lock that hold it:

    python -m tools.check_cache            # status 1 if any object is corrupt
    python -m tools.check_cache --remove   # removes them, then says which stages to rerun
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dvc.repo import Repo
from ruamel.yaml import YAML

from cifar10.archive import file_md5

LOCK_FILE = Path("dvc.lock")


def cache_objects(cache: Path) -> dict[str, Path]:
    """Every object of a DVC 3 cache folder (ab/cdef...), by the md5 it is named by."""
    return {
        path.parent.name + path.name: path for path in sorted(cache.glob("*/*")) if path.is_file()
    }


def content_md5(path: Path) -> str:
    """Return the md5 of a file's bytes, as DVC names its objects (a listing's + .dir)."""
    return file_md5(path) + (".dir" if path.name.endswith(".dir") else "")


def owners(lock: dict, objects: dict[str, Path]) -> dict[str, list[tuple[str, str]]]:
    """For each md5 that dvc.lock's outputs hold: the (output path, stage) pairs holding it.

    A directory output holds its listing (``<md5>.dir``) and each of its files.
    """
    held: dict[str, list[tuple[str, str]]] = {}
    for stage, record in (lock.get("stages") or {}).items():
        for output in record.get("outs") or []:
            md5, path = output.get("md5"), output["path"]
            held.setdefault(md5, []).append((path, stage))
            if md5 and md5.endswith(".dir") and md5 in objects:
                try:
                    listing = json.loads(objects[md5].read_bytes())
                except ValueError:
                    continue  # a corrupt listing: itself reported
                for entry in listing:
                    held.setdefault(entry["md5"], []).append((f"{path}/{entry['relpath']}", stage))
    return held


def main(argv: Sequence[str] | None = None) -> int:
    """Report every corrupt object; with --remove, remove them and name the stages to rerun."""
    parser = argparse.ArgumentParser(prog="python -m tools.check_cache", description=__doc__)
    parser.add_argument("--remove", action="store_true", help="remove the corrupt objects")
    arguments = parser.parse_args(argv)
    with Repo() as repo:
        cache = Path(repo.cache.local.path)  # files/md5 of the repository's cache
    if cache.is_relative_to(Path.cwd()):
        cache = cache.relative_to(Path.cwd())
    objects = cache_objects(cache)
    lock = YAML(typ="safe").load(LOCK_FILE.read_text()) if LOCK_FILE.exists() else {}
    held = owners(lock or {}, objects)
    corrupt = [(md5, path) for md5, path in objects.items() if content_md5(path) != md5]
    stages: set[str] = set()
    for md5, path in corrupt:
        where = held.get(md5, [])
        stages.update(stage for _, stage in where)
        shown = ", ".join(f"{output} (stage {stage})" for output, stage in where)
        print(f"corrupt: {path}: {shown or 'no output of dvc.lock holds it'}")
        if arguments.remove:
            path.unlink()
    if not corrupt:
        print(f"every one of the {len(objects)} objects in {cache} matches its md5")
        return 0
    if arguments.remove:
        print(f"removed {len(corrupt)} corrupt object{'s' * (len(corrupt) > 1)}", end="")
        print(f"; run `dvc repro -f -s {' '.join(sorted(stages))}` to write them again" if stages
              else "")  # fmt: skip
    return 1


if __name__ == "__main__":
    sys.exit(main())
