"""``python -m VoCoStudio``: start the VoCo Studio web server (127.0.0.1 by default; any other address needs the
access token printed at start)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from vococore.utils.errors import VoCoError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The server's options."""
    parser = argparse.ArgumentParser(prog="python -m VoCoStudio", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    parser.add_argument("--sample", default="TotalSegCTSmall",
                        help="registered CT sample loaded at start ('' for none)")
    parser.add_argument("--work-dir", default=None, help="folder for exported inputs and run outputs")
    parser.add_argument("--models-dir", default=None,
                        help="folder of downloaded and imported models (default: vococore's model cache)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the studio, print its URL (with the token when one is needed) and serve until stopped."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # offscreen: no display needed
    args = parse_args(argv)
    sample = None  # checked before the (slow) scene is built
    if args.sample:
        from vococore.io.sampledata import fetch

        try:
            sample = fetch(args.sample)
        except VoCoError as error:
            print(f"VoCo Studio: {error}", file=sys.stderr)
            return 2
    from trame.app import get_server
    from trame_slicer import module as trame_slicer_module

    from VoCoStudio import access
    from VoCoStudio.app import POLL_S, Studio
    from VoCoStudio.ui import build_ui

    server = get_server(client_type="vue3")
    server.enable_module(trame_slicer_module)
    studio = Studio(server, work_dir=args.work_dir, models_dir=args.models_dir)
    build_ui(studio)
    studio.start_layout()
    token = access.new_token() if access.needs_token(args.host) else None

    def bind(wslink_server) -> None:
        if token is not None:
            wslink_server.app.middlewares.append(access.token_middleware(token))

    async def poll_forever() -> None:
        while True:
            with server.state:
                studio.poll()
            await asyncio.sleep(POLL_S)

    def ready(**_) -> None:
        port = server.port
        query = f"?token={token}" if token else ""
        print(f"VoCo Studio: http://{args.host}:{port}/{query}", flush=True)
        asyncio.get_event_loop().create_task(poll_forever())

    def connected(**_) -> None:
        # the views stream only once a page is connected: loading earlier leaves them blank
        if sample is not None and studio.module.inputVolume is None:
            with server.state:
                studio.load_file(sample)

    server.controller.on_server_bind.add(bind)
    server.controller.on_server_ready.add(ready)
    server.controller.on_client_connected.add(connected)
    try:
        server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False)
    finally:
        studio.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
