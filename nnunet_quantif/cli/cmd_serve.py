"""``quantif serve``: the session server (HTTP API and browser viewer) over one model set.

Needs the ``server`` extra (``pip install 'nnunet-quantif[server]'``). The model options are those of
``quantif predict``; the server options are its host, port, keys, limits and data root. ``--demo [DIR]`` serves
the models of a finished ``quantif demo`` run and opens one of its held-out phantoms.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import ConfigError
from .argtypes import positive_float, positive_int
from .cmd_predict import add_model_arguments
from .prediction_options import pipeline_options

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
DEFAULT_MAX_SESSIONS = 4
DEFAULT_IDLE_TIMEOUT_S = 1800.0
DEFAULT_MAX_UPLOAD_MB = 2048.0
DEFAULT_DEMO_DIR = "demo_out"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve live click sessions over HTTP (API and browser viewer at /) with an API key",
        description="Start the session server (needs pip install 'nnunet-quantif[server]'): clients open a case "
                    "(upload, DICOM zip, or a path under --data-root), click, undo and reset, and get the changed "
                    "box of the mask per click. The browser viewer is at http://HOST:PORT/. Every call but "
                    "/health needs the X-API-Key header. Without --api-key-file the server binds to loopback "
                    "only and uses the key in ~/.config/quantif/server.key (made on first use, mode 0600). "
                    "docs/INTERACTIVE.md, section Server, describes the API.",
    )
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1; any other needs --api-key-file)")
    s.add_argument("--port", type=positive_int, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT})")
    s.add_argument("--api-key-file", metavar="FILE",
                   help="accepted API keys, one per line (default: loopback only, with the key of "
                        "~/.config/quantif/server.key, created with mode 0600 on first use)")
    s.add_argument("--max-sessions", type=positive_int, default=DEFAULT_MAX_SESSIONS,
                   help=f"open sessions at most; one more gets 503 with Retry-After (default: {DEFAULT_MAX_SESSIONS})")
    s.add_argument("--idle-timeout", type=positive_float, default=DEFAULT_IDLE_TIMEOUT_S, metavar="S",
                   help="close a session unused for S seconds and free its memory (default: "
                        f"{DEFAULT_IDLE_TIMEOUT_S:g})")
    s.add_argument("--max-upload-mb", type=positive_float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                   help="largest upload, and largest extracted DICOM zip, in MiB (default: "
                        f"{DEFAULT_MAX_UPLOAD_MB:g}); more gets 413")
    s.add_argument("--data-root", metavar="DIR",
                   help="folder whose cases may be opened by a relative path (nothing outside it, symbolic links "
                        "included; default: open by upload only)")
    s.add_argument("--demo", nargs="?", const=DEFAULT_DEMO_DIR, default=None, metavar="DIR",
                   help=f"serve the model set of a finished 'quantif demo' run (default DIR: {DEFAULT_DEMO_DIR}), "
                        "with its held-out phantoms as --data-root, and open one of them")
    add_model_arguments(p)
    p.set_defaults(func=run)


def _demo(args: argparse.Namespace) -> tuple[Path, Path, str]:
    """The demo's model set, its held-out phantom folder and the first phantom's name."""
    from ..layout import IMAGES_DIR, case_names

    out = Path(args.demo)
    model_set = out / "model_set"
    if not (model_set / "models.json").is_file():
        raise ConfigError(f"{out}: no finished demo run here ({model_set / 'models.json'} is missing); run "
                          f"'quantif demo --out {out}' first")
    if args.model or args.models or args.model_fdg or args.model_psma or args.results:
        raise ConfigError("--demo serves the demo's model set; leave out --model/--models/--model-fdg/"
                          "--model-psma/--results")
    test = out / "phantoms" / "test"
    names = case_names(test / IMAGES_DIR) if (test / IMAGES_DIR).is_dir() else []
    if not names:
        raise ConfigError(f"{test / IMAGES_DIR}: the demo's held-out phantoms are missing")
    return model_set, test, names[0]


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server.app import create_app
    except ImportError as e:
        raise ConfigError(f"quantif serve needs the server extra: pip install 'nnunet-quantif[server]' ({e})") \
            from None
    from ..layout import CT_CHANNEL, IMAGES_DIR, PET_CHANNEL, find_channel
    from ..model_set import build_pipeline, read_model_set
    from ..server import KEY_HEADER
    from ..server.sessions import CaseSource
    from ..server.settings import ServerSettings, ensure_default_key, is_loopback, read_key_file

    demo_case = None
    data_root = args.data_root
    tracer = args.tracer
    if args.demo is not None:
        model_set, test, name = _demo(args)
        args.models = str(model_set)
        data_root = data_root or str(test)
        demo_case = (name, test / IMAGES_DIR)
        if read_model_set(model_set).router == "given" and tracer == "auto":
            tracer = "name"  # the demo's phantoms are named by tracer
    if args.api_key_file:
        key_file, keys = Path(args.api_key_file), read_key_file(args.api_key_file)
    else:
        if not is_loopback(args.host):
            raise ConfigError(f"--host {args.host} is not a loopback address: give the accepted keys with "
                              "--api-key-file (one per line) to serve other machines")
        key_file, keys = ensure_default_key()
    options = pipeline_options(args)
    settings = ServerSettings(api_keys=keys, pipeline_factory=lambda: build_pipeline(options),
                              max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout,
                              max_upload_mb=args.max_upload_mb,
                              data_root=Path(data_root) if data_root else None, default_tracer=tracer)
    app = create_app(settings)
    if demo_case is not None:
        name, images = demo_case
        source = CaseSource(name, ct=find_channel(images, name, CT_CHANNEL),
                            pet=find_channel(images, name, PET_CHANNEL))
        app.state.manager.create(keys[0], source, tracer)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"quantif serve: http://{host}:{args.port}/#key={keys[0]}" if not args.api_key_file else
          f"quantif serve: http://{host}:{args.port}/", flush=True)
    print(f"API key file: {key_file} (send a key in the {KEY_HEADER} header)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
