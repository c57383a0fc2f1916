"""Running the status view: once, or refreshed in place (rich Live) until Ctrl-C."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from cdcrouter.errors import CdcrouterError
from cdcrouter.observe.collect import StatusOptions, collect_status
from cdcrouter.observe.targets import Targets, resolve_targets
from cdcrouter.observe.trend import LagTrend


def _default(path: Path | None, name: str) -> Path | None:
    """An explicit path must exist (the loaders say so); the default is used only when present."""
    if path is not None:
        return path
    return Path(name) if Path(name).is_file() else None


def load_inputs(
    pipeline: Path | None,
    filters: Path | None,
    raw_topic: str | None,
    group: str,
    config: Path | None,
    state_dir: Path | None = None,
) -> tuple[Targets, Any]:
    """Targets and connections, found the way ``capture`` and ``run`` find them."""
    from cdcrouter.config import load_connections

    pipeline = _default(pipeline, "pipeline.yaml")
    pipe = None
    if pipeline is not None:
        from cdcrouter.capture import load_pipeline

        pipe = load_pipeline(pipeline)
        if config is None and pipe.connections:  # as `capture run` honours it
            config = pipeline
    targets = resolve_targets(_default(filters, "filters.yaml"), pipe, raw_topic, group)
    return targets, load_connections(config_file=config, state_dir=state_dir)


def run_status(
    *,
    pipeline: Path | None,
    filters: Path | None,
    raw_topic: str | None,
    group: str,
    config: Path | None,
    interval: float,
    latency_records: int,
    deploy_target: str | None,
    deploy_name: str | None,
    watch: bool,
    state_dir: Path | None = None,
    router_metrics: tuple[str, ...] = (),
    as_json: bool,
) -> bool:
    """Print the status (JSON: one document per line when watching); True when healthy."""
    from rich.console import Console

    from cdcrouter.config.connections import DEFAULT_STATE_DIR
    from cdcrouter.observe.render import render_status

    targets, conns = load_inputs(pipeline, filters, raw_topic, group, config, state_dir)
    opts = StatusOptions(
        interval_s=interval,
        latency_records=latency_records,
        state_dir=Path(state_dir or os.environ.get("CDCROUTER_STATE_DIR", DEFAULT_STATE_DIR)),
        deploy_target=deploy_target,
        deploy_name=deploy_name,
        router_metrics=router_metrics,
    )
    console = Console()
    if not watch:
        doc = collect_status(targets, conns, opts)
        if as_json:
            sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        else:
            console.print(render_status(doc))
        return bool(doc["healthy"])

    trend = LagTrend()

    def refresh() -> dict[str, Any]:
        """One view; a refresh that cannot be read (PostgreSQL restarting, Kafka away) is shown as
        such and the watch goes on: on call, the outage is exactly when the view is wanted."""
        try:
            return trend.apply(collect_status(targets, conns, opts))
        except CdcrouterError as exc:
            time.sleep(interval)  # not a busy loop while the outage lasts
            return error_document(exc)

    healthy = True
    try:
        if as_json:
            while True:
                doc = refresh()
                healthy = bool(doc["healthy"])
                sys.stdout.write(json.dumps(doc, default=str) + "\n")
                sys.stdout.flush()
        from rich.live import Live

        doc = refresh()
        with Live(_render(doc), console=console, auto_refresh=False) as live:
            while True:
                healthy = bool(doc["healthy"])
                doc = refresh()
                live.update(_render(doc), refresh=True)
    except KeyboardInterrupt:
        pass
    return healthy


def error_document(exc: CdcrouterError) -> dict[str, Any]:
    """What ``--watch`` shows for a refresh that failed (documented beside the status keys)."""
    from cdcrouter.observe.collect import SCHEMA_VERSION, now_iso

    return {
        "version": SCHEMA_VERSION,
        "generated_at": now_iso(),
        "healthy": False,
        "error": {"message": exc.message, "hint": exc.hint},
    }


def _render(doc: dict[str, Any]) -> Any:
    from rich.text import Text

    from cdcrouter.observe.render import render_status

    if "error" in doc:
        text = Text(
            f"cdcrouter status at {doc['generated_at']}: cannot read the pipeline: ", style="bold red"
        )
        text.append(
            doc["error"]["message"] + (f"\n  hint: {doc['error']['hint']}" if doc["error"]["hint"] else "")
        )
        return text
    return render_status(doc)
