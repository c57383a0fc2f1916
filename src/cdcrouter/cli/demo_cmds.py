"""`cdcrouter demo`: the README's main job."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        changes: Annotated[int, typer.Option(help="row changes to write into PostgreSQL", min=1)] = 3_000,
        rate: Annotated[
            float, typer.Option(help="changes per second written (0: as fast as possible)")
        ] = 1_000,
        filters: Annotated[
            Path | None, typer.Option(help="routing rules (default: the demo's own filters.yaml)")
        ] = None,
        state_dir: Annotated[
            Path | None, typer.Option(help="local stack state dir", envvar="CDCROUTER_STATE_DIR")
        ] = None,
        keep: Annotated[bool, typer.Option(help="leave the stack running afterwards")] = False,
        two_hop: Annotated[
            bool,
            typer.Option(
                "--two-hop",
                help="a separate router instead of fused mode (capture routing in its transactions)",
            ),
        ] = False,
        timeout: Annotated[float, typer.Option(help="seconds to wait for the pipeline to catch up")] = 180,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log what the engines do")] = False,
    ) -> None:
        """Run the whole pipeline on a local real stack: capture, routing, consumers, summary."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from cdcrouter.demo.report import print_summary
        from cdcrouter.demo.runner import DEMO_SERVICES, DemoOptions, run_demo
        from cdcrouter.observe import logs
        from cdcrouter.stack.manager import Stack

        level = logging.INFO if verbose else logging.WARNING
        logs.configure(level=level, text_format="%(name)s: %(message)s")
        if not verbose:  # librdkafka's transient warnings (coordinator loading, ...) are not the demo's news
            logging.getLogger(logs.KAFKA_LOGGER).setLevel(logging.ERROR)
        console = Console(stderr=False)
        stack = Stack(state_dir)
        console.rule("[bold]cdcrouter demo")
        console.print(f"[bold]1.[/] local stack in {stack.state_dir} ({', '.join(DEMO_SERVICES)})")
        started = stack.up(DEMO_SERVICES, report=lambda name, msg: console.print(f"   {name}: {msg}"))
        conns = stack.connections()
        steps = iter(range(2, 100))
        opts = DemoOptions(
            changes=changes, rate=rate or 0, filters=filters, keep=keep, timeout_s=timeout, fused=not two_hop
        )
        try:
            with Progress(
                TextColumn("   writing changes"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as bar:
                task = bar.add_task("changes", total=changes, start=False)

                def on_step(text: str) -> None:
                    bar.console.print(f"[bold]{next(steps)}.[/] {text}")
                    if text.startswith("writing"):
                        bar.start_task(task)

                result = run_demo(opts, conns, on_step=on_step, on_progress=lambda n: bar.advance(task, n))
            print_summary(console, result)
        finally:
            if keep:
                console.print(
                    "stack left running (--keep); stop it with: "
                    f"cdcrouter stack down --state-dir {stack.state_dir}"
                )
            elif started:
                import gc

                # destroy the engines' Kafka clients before their broker goes away (the engines
                # gc.freeze() while running; unfreeze so the collector sees those clients again)
                gc.unfreeze()
                gc.collect()
                console.print(f"stopping what the demo started: {', '.join(started)}")
                stack.down(started)
        if not result.complete:
            raise typer.Exit(1)
