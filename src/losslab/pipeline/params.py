"""Compose ``conf/`` into ``params.yaml`` exactly as ``dvc exp run`` does (``make params``).

    python -m losslab.pipeline.params [override ...]      # e.g. model.hidden=512

``dvc repro`` never composes: it replays ``params.yaml``. Running this first (``make repro``
does) makes an edit in ``conf/`` reach the pipeline, and ``dvc repro`` then reruns exactly the
stages whose params changed. The file is rewritten only when its content changes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from losslab.errors import friendly_exit
from losslab.pipeline.common import PARAMS_FILE, dvc_root

DEFAULT_CONFIG_NAME = "pipeline"


def hydra_settings(root: Path) -> dict[str, Any]:
    """The ``[hydra]`` section of ``.dvc/config`` (what ``dvc exp run`` composes with)."""
    from dvc.config import Config

    return dict(Config(dvc_dir=str(root / ".dvc"), validate=False).get("hydra", {}))


def compose(root: Path, output: Path, overrides: list[str]) -> None:
    """Compose with DVC's own function, config dir and config name, so the result is
    byte-for-byte what ``dvc exp run`` would write."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from losslab.errors import ConfigError

    settings = hydra_settings(root)
    config_dir = str(root / settings.get("config_dir", "conf"))
    config_name = settings.get("config_name", DEFAULT_CONFIG_NAME)
    plugins = str(root / settings.get("plugins_path", ""))
    try:
        compose_and_dump(str(output), config_dir, None, config_name, plugins, overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"cannot compose {config_dir}/{config_name}.yaml with {overrides}: {exc}") from None


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    keys: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += changed_keys(a, b, f"{name}.")
        elif a != b:
            keys.append(name)
    return keys


def update_params(root: Path, overrides: list[str], params_file: str = PARAMS_FILE) -> list[str]:
    """Re-compose ``params.yaml``; returns the changed keys (empty: it was up to date)."""
    import yaml

    target = root / params_file
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "params.yaml"
        compose(root, fresh, overrides)
        text = fresh.read_text(encoding="utf-8")
    old_text = target.read_text(encoding="utf-8") if target.is_file() else ""
    if text == old_text:
        return []
    changed = changed_keys(yaml.safe_load(old_text) or {}, yaml.safe_load(text) or {}) or ["(formatting)"]
    target.write_text(text, encoding="utf-8")
    return changed


@friendly_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for dvc exp run -S")
    args = parser.parse_args(argv)
    root = dvc_root()
    changed = update_params(root, args.overrides)
    if changed:
        shown = ", ".join(changed[:12]) + (f" … (+{len(changed) - 12})" if len(changed) > 12 else "")
        print(f"params.yaml: updated from conf/ ({shown})")
    else:
        print("params.yaml: up to date with conf/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
