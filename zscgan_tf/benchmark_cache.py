"""The benchmark's row cache, `<work_dir>/<teacher>/rows.json`: each row's result under the key
of the settings it depends on, with their digest; which cached rows are current, and how far
they moved from an earlier work directory's (`--compare_to`)."""

import json
import os
from typing import Optional, Tuple

from zscgan_tf.benchmark_report import REPRODUCIBILITY_POINTS
from zscgan_tf.files import bytes_digest, read_json

ROWS_FILE = "rows.json"


def row_key(row_id: str, settings: dict) -> str:
    """The cache key of a row: its id and every setting its result depends on."""
    return json.dumps({"row": row_id, **settings}, sort_keys=True)


def read_row_cache(path: str) -> dict:
    """The row cache in `path`: {row id: {"key": its settings' key, "result": {...}, "sha256": ...}}.
    Missing, unreadable or of another shape than the benchmark writes (a hand's edit, a file from
    elsewhere), it reads as empty, and an entry of another shape, or whose key and result are not
    those its digest was taken of, as absent: those rows are computed again. An entry an earlier
    version wrote, without a digest, is taken where its result has a row's label and a numeric
    top-1 (if any), and given its digest."""
    return _checked_entries(read_json(path, {}))


def _checked_entries(cache) -> dict:
    """The entries of a row cache as read from JSON that `read_row_cache` takes."""
    if not isinstance(cache, dict):
        return {}
    return {row_id: cache_entry(entry["key"], entry["result"]) for row_id, entry in cache.items()
            if isinstance(entry, dict) and isinstance(entry.get("key"), str) and isinstance(entry.get("result"), dict)
            and (entry["sha256"] == _entry_digest(entry["key"], entry["result"]) if "sha256" in entry
                 else _is_result_as_written(entry["result"]))}


def read_earlier_row_cache(path: str) -> Tuple[dict, Optional[str]]:
    """The row cache in `path` of an earlier work directory (`--compare_to`), as `read_row_cache`
    reads it, and why it could not be read where it could not (missing, unreadable, not JSON or
    not an object): a comparison without it said only that no row there had the same settings."""
    try:
        with open(path) as cache_file:
            cache = json.load(cache_file)
    except OSError as error:  # A file missing is said by `compare_with_earlier`; here, a link to nothing.
        return {}, error.strerror or str(error)
    except ValueError as error:  # UnicodeDecodeError too.
        return {}, f"not JSON: {error}"
    if not isinstance(cache, dict):
        return {}, f"not a row cache but a JSON {type(cache).__name__}"
    return _checked_entries(cache), None


def _is_result_as_written(result: dict) -> bool:
    """Whether a result without a digest has what every table reads of a row: a label, and a
    numeric top-1 where it has one. Its other figures are taken as they are."""
    top1 = result.get("top1", 0.0)
    return isinstance(result.get("label"), str) and isinstance(top1, (int, float)) and not isinstance(top1, bool)


def cache_entry(key: str, result: dict) -> dict:
    """A row's entry in the row cache: its settings' key, its result and their digest."""
    return {"key": key, "result": result, "sha256": _entry_digest(key, result)}


def _entry_digest(key: str, result: dict) -> str:
    """The SHA-256 of a row's key and result as JSON writes them: an edited figure, label or key no
    longer matches it (rows whose figures went through a hand ended in tracebacks as the table was made)."""
    return bytes_digest(json.dumps({"key": key, "result": result}, sort_keys=True).encode())


def current_rows(cache: dict, rows: list) -> dict:
    """The cached results of `rows` computed with their present settings: a row cached under other
    settings (a rerun with changed flags, not yet recomputed) is left out, not shown as current."""
    return {row_id: cache[row_id]["result"] for row_id, _, _, settings in rows
            if row_id in cache and cache[row_id]["key"] == row_key(row_id, settings)}


def compare_with_earlier(cache: dict, earlier_dir: str, teacher_name: str) -> dict:
    """`compare_rows` against the rows an earlier work directory `earlier_dir` cached for the
    teacher `teacher_name`, saying why they could not be read where they could not."""
    path = os.path.join(earlier_dir, teacher_name, ROWS_FILE)
    if not os.path.lexists(path):  # Said as a file that "could not be read (there is none …)".
        return compare_rows(cache, {}, earlier_dir, unreadable=f"{earlier_dir} did not measure the teacher "
                            f"{teacher_name!r} (it has no {os.path.join(teacher_name, ROWS_FILE)})")
    earlier_cache, problem = read_earlier_row_cache(path)
    return compare_rows(cache, earlier_cache, earlier_dir,
                        unreadable=problem and f"{path} could not be read ({problem})")


def compare_rows(cache: dict, earlier_cache: dict, earlier_dir: str, unreadable: Optional[str] = None) -> dict:
    """How far each accuracy row moved from an earlier run with the same settings (same cache key);
    `unreadable`, why the earlier run's row cache could not be read, if it could not."""
    compared = []
    for row_id, entry in cache.items():
        earlier = earlier_cache.get(row_id)
        if "top1" not in entry["result"] or not earlier or earlier["key"] != entry["key"]:
            continue
        difference = 100 * (entry["result"]["top1"] - earlier["result"]["top1"])
        compared.append({"id": row_id, "label": entry["result"]["label"], "top1": entry["result"]["top1"],
                         "earlier_top1": earlier["result"]["top1"], "difference_points": round(difference, 4)})
    largest = max((abs(row["difference_points"]) for row in compared), default=None)
    comparison = {"compared_to": earlier_dir, "rows": compared, "max_difference_points": largest,
                  "met": largest is not None and largest <= REPRODUCIBILITY_POINTS}
    return {**comparison, "unreadable": unreadable} if unreadable else comparison
