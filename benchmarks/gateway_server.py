"""Run the real gateway server (`gateway.server.run_server`) for the HTTP benchmark.

The settings are those ``gpu-gateway serve`` builds, with the store's ``synchronous``
pragma selectable (the CLI keeps the production default, FULL). Run as
``python3 -m benchmarks.gateway_server --port 18080 --state /tmp/x/state.db``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.config import PolicySettings, ServerSettings, Settings, StoreSettings
from gateway.server import run_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--policy-dir", type=Path)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--synchronous", default=StoreSettings.synchronous)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    settings = Settings(
        server=ServerSettings(host=args.host, port=args.port, insecure_http=args.cert is None,
                              cert_file=args.cert, key_file=args.key),
        store=StoreSettings(path=args.state, synchronous=args.synchronous),
        policy=PolicySettings(directory=args.policy_dir),
    )
    run_server(settings, log_level=args.log_level.upper())


if __name__ == "__main__":
    main()
