"""Certify a list of test inputs group by group, with a resumable per-example TSV file.

Inputs are certified in fixed groups (several share a batch when n is small); each group draws
from its own generator, seeded by (seed, first index of the group), so a resumed run gives the
very numbers of an uninterrupted one. The file starts with a `# {json}` line of the parameters
(a rerun with other parameters is refused), then a column line, then one row per input, flushed
as each group ends, as Cohen et al.'s certify output.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustcompress.certification.transforms import parse_scalar
from robustcompress.errors import ConfigError


def group_generator(seed: int, first_index: int, device: torch.device | str) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(first_index)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & ((1 << 63) - 1))


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


def _read(path: Path, header: dict, columns: list[str]) -> dict[int, dict]:
    """Finished rows of an existing file (a torn last line is dropped), refusing other parameters."""
    text = path.read_text()
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is empty or a torn row
    if len(complete) < 2 or not complete[0].startswith("# "):
        raise ConfigError(f"{path} is not a per-example file of robustcompress certify; choose another path")
    try:
        written = json.loads(complete[0][2:])
    except json.JSONDecodeError:
        raise ConfigError(
            f"{path} has an unreadable parameter line; delete it or choose another path"
        ) from None
    header = json.loads(json.dumps(header))
    if written != header:
        diff = sorted(k for k in set(written) | set(header) if written.get(k) != header.get(k))
        raise ConfigError(
            f"{path} was written with other parameters ({', '.join(diff)}); "
            "delete it or choose another --per-example file"
        )
    if complete[1].split("\t") != columns:
        raise ConfigError(f"{path} has other columns than {columns}; choose another path")
    rows = {}
    for line in complete[2:]:
        parts = line.split("\t")
        if len(parts) == len(columns):
            row = dict(zip(columns, (parse_scalar(p) for p in parts)))
            rows[int(row["idx"])] = row
    if lines[-1]:  # drop a torn row so appended rows start on their own line
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(complete) + "\n")
        os.replace(tmp, path)
    return rows


def run_groups(
    indices: Sequence[int],
    group_size: int,
    certify_group: Callable[[list[int], torch.Generator], list[dict]],
    *,
    columns: list[str],
    header: dict,
    seed: int,
    device: torch.device | str,
    per_example: str | Path | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> list[dict]:
    """Rows for every index (in order): read from `per_example` when done, else certified.

    `certify_group(group_indices, generator)` returns one dict per index with every column but
    `idx` and `time`, which are filled in here (time: the group's seconds shared equally).
    """
    indices = list(indices)
    done: dict[int, dict] = {}
    handle = None
    if per_example is not None:
        path = Path(per_example)
        if path.exists() and path.stat().st_size > 0:
            done = _read(path, header, columns)
            if done:
                log(f"resuming from {path}: {sum(i in done for i in indices)} of {len(indices)} inputs done")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# {json.dumps(header, sort_keys=True)}\n" + "\t".join(columns) + "\n")
        handle = path.open("a")
    rows: list[dict] = []
    try:
        for g in range(0, len(indices), group_size):
            group = indices[g : g + group_size]
            if all(i in done for i in group):
                rows.extend(done[i] for i in group)
                continue
            start = time.perf_counter()
            results = certify_group(group, group_generator(seed, group[0], device))
            seconds = (time.perf_counter() - start) / len(group)
            for i, res in zip(group, results):
                row = {"idx": i, **res, "time": round(seconds, 4)}
                if i in done:  # a group torn by an interruption: keep the written row
                    rows.append(done[i])
                    continue
                rows.append(row)
                if handle is not None:
                    handle.write("\t".join(_format(row[c]) for c in columns) + "\n")
            if handle is not None:
                handle.flush()
            log(f"certified {min(g + group_size, len(indices))}/{len(indices)} inputs")
    finally:
        if handle is not None:
            handle.close()
    return rows
