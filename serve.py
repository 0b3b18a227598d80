"""Serve a trained checkpoint on a web page: draw a digit and watch the network read it.

    python serve.py                                   # best.pt of runs/default, at http://127.0.0.1:8000
    python serve.py --checkpoint runs/x/best.pt --port 8080

The page (web/) posts the canvas as a PNG to POST /api/predict; a dropped or chosen photo goes the same
way. Pictures are prepared exactly as predict.py prepares them (images.to_input). The API is
documented at /docs. Ctrl-C stops the server.
"""

import asyncio
import contextlib
import functools
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import checkpoints
import cli
import data
import images
import runtime

WEB_DIR = Path(__file__).resolve().parent / "web"
MAX_UPLOAD_BYTES = 10 << 20  # a phone photo fits; larger bodies are refused before they are read whole
MAX_PIXELS = 40_000_000  # a 40-megapixel photo; a "decompression bomb" declares far more
MAX_BATCH = 64
# A canvas PNG (3-8 KB, 200x200 pixels) takes about a millisecond to prepare; a PNG of a few KB may still hold
# 36 million pixels of one colour, and take a fifth of a second.
PREPARED_ON_THE_LOOP = 64 << 10  # bytes
PIXELS_PREPARED_ON_THE_LOOP = 512 * 512
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


class BatchedReader:
    """The network, shared by every request: the images that wait together are read as one batch.

    One worker thread at a time runs the waiting images through the network in one forward pass, while
    the event loop goes on taking requests; those that arrive meanwhile form the next batch. A small
    image (a canvas) is prepared on the event loop as it arrives, which costs less than a hop to another
    thread; a large one (a photo, or any image of many pixels) is prepared in the worker, so that it never
    holds up the others.
    """

    def __init__(self, model, prepare, precision="fp32", temperature=1.0):
        self.model, self.prepare, self.precision, self.temperature = model, prepare, precision, temperature
        self.waiting = []
        self.worker = None

    async def read(self, body):
        """(input [1, 28, 28], probabilities [10]) for one image's bytes; raises what `prepare` raises."""
        future = asyncio.get_running_loop().create_future()
        small = len(body) <= PREPARED_ON_THE_LOOP and images.declared_pixels(body) <= PIXELS_PREPARED_ON_THE_LOOP
        self.waiting.append((self.prepare(body) if small else body, future))
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self):
        while self.waiting:
            batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
            try:
                results = await asyncio.to_thread(self._read_batch, [item for item, _ in batch])
            except Exception as e:  # noqa: BLE001  (each waiting request gets the failure)
                results = [e] * len(batch)
            for (_, future), result in zip(batch, results):
                if future.done():  # the client went away
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _read_batch(self, items):
        """Each item's (input, probabilities), or the exception that refused it; an item is an input
        already prepared, or the bytes of an image."""
        results = []
        for item in items:
            try:
                results.append(item if isinstance(item, torch.Tensor) else self.prepare(item))
            except Exception as e:  # noqa: BLE001  (it belongs to that one request)
                results.append(e)
        inputs = [x for x in results if not isinstance(x, Exception)]
        if inputs:
            probabilities = iter(runtime.probabilities(self.model, torch.stack(inputs), self.precision,
                                                       self.temperature))
            results = [x if isinstance(x, Exception) else (x, next(probabilities)) for x in results]
        return results


def error_response(status, message, headers=None):
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request):
    """The request body, refused with 413 as soon as it is known to be over MAX_UPLOAD_BYTES."""
    too_large = f"the upload is over the {MAX_UPLOAD_BYTES >> 20} MB limit; send a smaller image"
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, f"Content-Length is not a number: {declared!r}")
        if int(declared) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, too_large)
    if not body:
        raise HTTPException(400, "the request body is empty; send the image's bytes as the body")
    return bytes(body)


def check_content_type(request):
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (content_type.startswith("image/") or content_type == "application/octet-stream"):
        raise HTTPException(415, f"expected an image body (Content-Type image/png, image/jpeg or image/webp), "
                                 f"got {content_type or 'no Content-Type'}")


def prepare(body, dataset=data.MNIST):
    """Bytes of any image -> the network's input [1, 28, 28]; HTTP 422 when nothing can be read from it."""
    try:
        return images.to_input(body, dataset, max_pixels=MAX_PIXELS)
    except images.ImageError as e:
        raise HTTPException(422, str(e)) from None


def as_pixels(x, dataset=data.MNIST):
    """The normalized input as the 28 rows of 0-255 ink values the page draws."""
    return np.clip(np.rint(data.denormalize(x[0].numpy(), dataset) * 255), 0, 255).astype(np.uint8).tolist()


def create_app(path, device="cpu", precision="fp32", on_ready=None):
    """The FastAPI app serving the checkpoint at `path` (loaded once, here) and the page in web/;
    `device` and `precision` as the options name them.

    `on_ready()` is called once the server is up and answering.
    """
    trained = checkpoints.open_trained(path, device, precision)
    dataset, checkpoint = trained.dataset, trained.checkpoint
    reader = BatchedReader(trained.model, functools.partial(prepare, dataset=dataset), trained.precision,
                           trained.temperature or 1.0)
    about = {"status": "ok", "checkpoint": str(path), "epoch": int(checkpoint["epoch"]),
             "val_acc": float(checkpoint["val_acc"]), "dataset": dataset.name, "classes": dataset.classes,
             "device": str(trained.device), "precision": trained.precision, "temperature": trained.temperature}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if on_ready is not None:
            on_ready()
        yield

    app = FastAPI(title="MNIST digit reader", description=__doc__, lifespan=lifespan)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error_response(422, "; ".join(error["msg"] for error in exc.errors()))

    @app.exception_handler(Exception)
    async def unexpected_error(request, exc):
        return error_response(500, f"the server failed on this request ({type(exc).__name__})")

    @app.head("/api/health", include_in_schema=False)  # as a monitor may ask
    @app.get("/api/health")
    async def health():
        """Whether the model is loaded, and which checkpoint answers."""
        return about

    binary = {"schema": {"type": "string", "format": "binary"}}
    image_body = {"requestBody": {"required": True, "content": {kind: binary for kind in IMAGE_TYPES}}}

    @app.post("/api/predict", openapi_extra=image_body)
    async def predict(request: Request):
        """Read the digit (or the garment) in an image sent as the request body (PNG, JPEG, WebP, ...)."""
        started = time.perf_counter()
        check_content_type(request)
        body = await read_body(request)
        x, probabilities = await reader.read(body)
        # A JSONResponse as it is: FastAPI's encoder would walk the 784 pixels one by one.
        best = int(probabilities.argmax())
        return JSONResponse({"class": best, "name": dataset.classes[best],
                             "probabilities": [round(p, 6) for p in probabilities.tolist()],
                             "input": as_pixels(x, dataset), "ms": round((time.perf_counter() - started) * 1000, 2)})

    @app.get("/api/predict", include_in_schema=False)
    async def predict_by_get():
        # Else the page's folder, mounted at /, would answer a browser's GET with a bare 404.
        raise HTTPException(405, "send the image with POST, its bytes as the body, e.g. curl --data-binary "
                                 "@digit.png -H 'Content-Type: image/png' URL", headers={"Allow": "POST"})

    @app.api_route("/api/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                   include_in_schema=False)
    async def no_such_endpoint(rest: str):
        # Else the page's folder would answer, with a 405 for a POST to /api/predict/, say.
        raise HTTPException(404, f"no such endpoint: /api/{rest}; there are POST /api/predict and GET /api/health")

    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def parse_args(argv=None):
    p = cli.Parser(__doc__)
    cli.add_checkpoint_options(p, "serve")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for the network)")
    p.add_argument("--port", type=cli.port, default=8000, help="port to listen on (default: 8000; 0 picks a free one)")
    cli.add_device_option(p)
    cli.add_precision_option(p)
    return p.parse_args(argv)


def open_socket(host, port):
    """Bind the listening socket here, so that a busy port is one clear line rather than a server log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the queue from now on, so the printed address answers
    except OSError as e:
        sock.close()
        raise cli.RunError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port or --host") from None
    return sock


def main(argv=None):
    args = parse_args(argv)
    path = cli.checkpoint_path(args)
    try:
        sock = open_socket(args.host, args.port)
        host, port = sock.getsockname()[:2]
        address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        app = create_app(path, args.device, args.precision,
                         on_ready=lambda: print(f"serving {path} at {address}  (Ctrl-C to stop)", flush=True))
    except cli.RunError as e:
        sys.exit(f"error: {e}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: the model is reachable from the network by anyone who can "
              "reach this machine", file=sys.stderr)
    # The network gets half the cores: the event loop, which prepares the pictures, needs the rest.
    torch.set_num_threads(max(1, torch.get_num_threads() // 2))
    # On Ctrl-C or SIGTERM uvicorn finishes the requests in flight, then raises the signal again for cli.run.
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


if __name__ == "__main__":
    cli.run(main)
