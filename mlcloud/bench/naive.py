"""The naive server: what a user would write instead of mlcloud, run as its own process.

One aiohttp process; ``PUT /{model}/matches`` runs decode + preprocess + onnxruntime + top-5 in
the event loop's default thread pool and answers the same JSON as the lattice. onnxruntime is
opened with one of the bench's set-ups (``--setup``, :data:`~mlcloud.bench.workload.ORT_SETUPS`):
the bench runs one naive server per set-up and counts the best, as a user who copies best
practice would have it. Started by the bench as
``python -m mlcloud.bench.naive --port N --build-dir DIR --setup NAME``; it prints
``listening on URL`` once the model is loaded and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from aiohttp import web

from mlcloud.bench.workload import ORT_SETUPS, Pipeline, labels, model_path, ort_setup_infer


def create_app(pipeline: Pipeline) -> web.Application:
    async def matches(request: web.Request) -> web.Response:
        body = await request.read()
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(None, pipeline.classify, body)
        except Exception as exc:  # the naive server still answers JSON on a bad image
            return web.json_response({"error": {"kind": type(exc).__name__, "message": str(exc)}}, status=400)
        return web.Response(body=json.dumps(found).encode(), content_type="application/json")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("PUT", "/{model}/matches", matches)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--build-dir", type=Path, required=True)
    parser.add_argument("--setup", choices=list(ORT_SETUPS), default="default")
    args = parser.parse_args()
    pipeline = Pipeline(ort_setup_infer(model_path(args.build_dir), args.setup), labels(args.build_dir))

    def ready(_runner: object = None) -> None:
        print(f"listening on http://{args.host}:{args.port}", flush=True)

    web.run_app(create_app(pipeline), host=args.host, port=args.port, access_log=None,
                print=lambda *_: ready(), handle_signals=True)


if __name__ == "__main__":
    main()
