"""Which files a data folder reaches outside the data roots (DATA_ROOTS): symlinks that would let a job
submitted from the web read any file the worker can. `leukemia check` warns of them; a web job and a
folder's registration are refused.

`inside_roots` is the one test of containment: the links below a folder (here), a path typed for
registration and each file the web reads from a folder (core.service.data_folders.path_under_roots) ask it."""

from __future__ import annotations

import os
from pathlib import Path

from core.common.errors import UserInputError
from core.engine.settings import engine_settings


def inside_roots(path: Path, roots: list[Path]) -> bool:
    """Does this path (absolute, normalised or resolved by the caller) lie under one of the resolved data roots?"""
    return any(path.is_relative_to(root) for root in roots)


def links_outside_roots(folder: Path, roots: list[Path] | None = None) -> list[tuple[Path, Path]]:
    """(link, real target) of every symlink below `folder` that leads outside the data roots (DATA_ROOTS),
    looked for as the readers reach files: symlinked folders inside the roots are followed (each real folder
    once); one leading out is reported, not entered.

    The folder itself was checked against the roots when it was registered; a link below it, even one in a
    folder that a link inside the roots leads to, would let a web job read any file the worker can."""
    roots = [root.resolve() for root in (roots or engine_settings().data_root_paths)]
    found: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for directory, subfolders, files in os.walk(folder, followlinks=True):
        real_directory = os.path.realpath(directory)
        if real_directory in seen:  # a second link to one folder, or a loop: its entries were looked at
            subfolders[:] = []
            continue
        seen.add(real_directory)
        entered = []
        for name in sorted(subfolders + files):
            path = Path(directory) / name
            target = Path(os.path.realpath(path)) if path.is_symlink() else None  # realpath: loops do not raise
            if target is not None and not inside_roots(target, roots):
                found.append((path, target))
            elif name in subfolders:
                entered.append(name)
        subfolders[:] = entered
    return found


def link_warning(link: Path, target: Path) -> str:
    return (
        f"{link} is a symlink to {target}, outside DATA_ROOTS; jobs submitted from the web read only files inside the data roots"
    )


def require_inside_data_roots(folder: Path, roots: list[Path] | None = None, *, field: str = "data_dir") -> None:
    """Refuse, naming the first one, a folder any file or folder of which leads out of the data roots: a job
    submitted from the web (field data_dir) and a folder's registration (field path) read none of them."""
    outside = links_outside_roots(folder, roots) if folder.is_dir() else []
    if outside:
        raise UserInputError(f"{field}: {link_warning(*outside[0])}", field=field)
