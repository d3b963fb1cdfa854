"""The one run-folder layout every method writes, so ``flare-vlp report`` can compare any runs.

```
RUN_DIR/
  config.yaml      the resolved experiment config (+ method settings)
  metrics.jsonl    one JSON object per event: {"event": "train"|"round"|"eval"|..., "site": ..., ...}
  summary.json     {"method", "mode", "summary": headline numbers, "floor": untrained-model numbers, "eval": all}
  summary.md       the headline numbers as a markdown table
  models/          final weights (safetensors), one file per model (global / centralized / per-site)
  plots/           PNGs
```
The folder is built under a temp name beside RUN_DIR and renamed into place only when the run succeeded.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from flare_vlp.config import ExperimentConfig
from flare_vlp.utils.io import atomic_write_text

__all__ = ["RunFolder", "load_summary", "json_safe", "read_events"]


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (strict JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    return obj


class RunFolder:
    """Writer of one run folder (``root`` is the working folder, usually a temp folder renamed at the end)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "models").mkdir(parents=True, exist_ok=True)
        (self.root / "plots").mkdir(exist_ok=True)
        self._metrics = open(self.root / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write_config(self, cfg: ExperimentConfig, **extra: Any) -> None:
        from flare_vlp.experiments.builders import resolved_config_dict  # torch + models: only when writing

        data = {**resolved_config_dict(cfg), **extra}
        atomic_write_text(self.root / "config.yaml", yaml.safe_dump(json_safe(data), sort_keys=False))

    def log(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._metrics.write(json.dumps(json_safe(record)) + "\n")
        self._metrics.flush()

    def save_model(self, name: str, state: dict[str, torch.Tensor]) -> Path:
        path = self.root / "models" / f"{name}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))
        return path

    def write_summary(self, method: str, mode: str, summary: dict, **extra: Any) -> None:
        data = {"method": method, "mode": mode, "summary": summary, **extra}
        atomic_write_text(self.root / "summary.json", json.dumps(json_safe(data), indent=2) + "\n")
        atomic_write_text(self.root / "summary.md", summary_markdown(method, summary, extra.get("floor")))

    def close(self) -> None:
        self._metrics.close()


def summary_markdown(method: str, summary: dict, floor: dict | None = None) -> str:
    lines = [f"# {method}", "", "| metric | value |" + (" untrained floor |" if floor else ""), "|---|---|"]
    lines[-1] += "---|" if floor else ""
    for key, value in summary.items():
        row = f"| {key} | {_fmt(value)} |"
        if floor:
            row += f" {_fmt(floor.get(key))} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def load_summary(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no summary.json)")
    return json.loads(path.read_text())


def read_events(metrics: str | Path, kind: str | None = None) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (those of ``event == kind`` when given); none when it is missing."""
    path = Path(metrics)
    if not path.is_file():
        return []
    events = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [e for e in events if kind is None or e.get("event") == kind]
