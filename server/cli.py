"""The daemon's subcommands of the ``specklab`` command.

Imported by the client's CLI only when the server extra is installed; keeps module-level
imports to the standard library so ``specklab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
from pathlib import Path
from types import FrameType


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the specklab daemon")
    serve.add_argument("--config", type=Path, help="TOML settings file (or SPECKLAB_CONFIG)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8765)")
    serve.add_argument("--data-dir", type=Path, help="where models, recordings and the db live")
    serve.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the data dir)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["json", "text"])
    serve.add_argument(
        "--virtual",
        action="append",
        metavar="TYPE=COUNT",
        help="serve virtual devkits, e.g. speck2fdevkit=2 (repeatable; 'none' for none; default: "
        "one speck2fdevkit when no real device is found)",
    )
    serve.set_defaults(handler=_serve)

    from .auth.admin_cli import register as register_admin

    register_admin(commands)
    _register_compile(commands)


def _register_compile(commands: argparse._SubParsersAction) -> None:
    compile_ = commands.add_parser(
        "compile",
        help="compile a model for a Speck chip, offline (exit 0 fits, 1 does not, 2 unreadable)",
    )
    compile_.add_argument("model", type=Path, help="TorchScript, torch.export (.pt2) or NIR file")
    compile_.add_argument("--input-shape", required=True, metavar="C,H,W")
    compile_.add_argument("--chip", choices=["speck2e", "speck2f"], default="speck2f")
    compile_.add_argument("--dvs-input", action="store_true", help="input comes from the DVS")
    layers = {"dest": "chip_layers_ordering", "metavar": "CORES"}
    compile_.add_argument("--layers", help="cores in layer order, e.g. 0,3,5,6,1", **layers)
    # The flag's former name, as the guide spells the option; `specklab deploy` says --layers.
    compile_.add_argument("--chip-layers-ordering", help=argparse.SUPPRESS, **layers)
    compile_.add_argument("--no-spiking-output", action="store_true")
    compile_.add_argument("--spike-threshold", type=float, default=1.0)
    compile_.add_argument("--min-v-mem", default="-1.0", help="a number, or 'none'")
    compile_.add_argument("--no-discretize", action="store_true", help="weights are integers")
    compile_.add_argument("--json", action="store_true", help="print the report as JSON")
    compile_.add_argument("--weights", type=Path, metavar="OUT.npz", help="write int weights")
    compile_.set_defaults(handler=_compile)


def _compile(args: argparse.Namespace) -> int:
    from .compiler.command import run

    return run(args)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from specklab.schemas.frames import MAX_MESSAGE_BYTES

    from .api.streams import stop_streams
    from .app import create_app
    from .draining import begin_shutdown
    from .logs import configure_logging
    from .settings import load_settings
    from .transport import WebSocketProtocol

    settings = load_settings(
        args.config,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        database_url=args.database_url,
        log_level=args.log_level,
        log_format=args.log_format,
        virtual=args.virtual,
    )
    configure_logging(settings.log_level, settings.log_format)
    # `kill -USR1 <pid>` writes every thread's stack to stderr: where a stuck daemon waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        # uvicorn's websockets-sansio, moving large messages with fewer copies (``transport``).
        # Compression costs 8-50x on event frames (docs/chip.md §9); frames are already packed.
        ws=WebSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=MAX_MESSAGE_BYTES,
        timeout_graceful_shutdown=5,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # From the signal on, new requests get 503 daemon_stopping (``draining``).
            begin_shutdown(app.state)
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: list | None = None) -> None:
            # uvicorn closes WebSockets with 1012 first thing: streams say why before that.
            await stop_streams(app)
            await super().shutdown(sockets)

    try:
        Server(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises SIGINT after its graceful shutdown
        return 130
    return 0
