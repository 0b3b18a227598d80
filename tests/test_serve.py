"""serve.py: every API route and every bad input, concurrent requests, and the script as a user runs it."""

import asyncio
import io
import json
import shutil
import signal
import socket
import threading

import httpx2 as httpx
import numpy as np
import pytest
import torch
from conftest import damaged_palette_bmp, one_line_error, run_script, start_server
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

import checkpoints
import images
import serve
import strokes
from model import CNN


def png(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=options.pop("format", "PNG"), **options)
    return buffer.getvalue()


TEMPERATURE = 0.5


@pytest.fixture(scope="module")
def calibrated(trained_run, tmp_path_factory):
    """A copy of the shared run's best.pt with a temperature of its own, which the answers must apply."""
    path = tmp_path_factory.mktemp("served") / "best.pt"
    shutil.copy(trained_run[0] / "best.pt", path)
    checkpoints.save_temperature(path, checkpoints.load(path), TEMPERATURE, "a test")
    return path


@pytest.fixture(scope="module")
def app(calibrated):
    return serve.create_app(calibrated)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as client:
        yield client


def post_image(client, body, content_type="image/png"):
    return client.post("/api/predict", content=body, headers={"Content-Type": content_type})


def test_health_names_the_checkpoint(client, calibrated):
    answer = client.get("/api/health").json()
    best = torch.load(calibrated, weights_only=True)
    assert answer["status"] == "ok" and answer["checkpoint"] == str(calibrated)
    assert answer["epoch"] == best["epoch"] and answer["val_acc"] == pytest.approx(best["val_acc"])
    assert answer["dataset"] == "mnist" and answer["classes"] == [str(d) for d in range(10)]
    assert (answer["device"], answer["precision"], answer["temperature"]) == ("cpu", "fp32", TEMPERATURE)


def test_predict_answers_with_what_the_network_saw(client, app):
    body = png(strokes.render(7))
    answer = post_image(client, body).json()
    assert set(answer) == {"class", "name", "probabilities", "input", "ms"}
    assert len(answer["probabilities"]) == 10 and sum(answer["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert answer["class"] == max(range(10), key=answer["probabilities"].__getitem__)
    assert answer["name"] == str(answer["class"])  # an MNIST checkpoint's classes are the digits
    assert answer["ms"] > 0
    # The input is predict.py's preprocessing of these very bytes, as 0-255 ink.
    assert answer["input"] == serve.as_pixels(images.image_to_mnist(body))
    assert len(answer["input"]) == 28 and all(len(row) == 28 for row in answer["input"])
    assert max(map(max, answer["input"])) == 255 and answer["input"][0] == [0] * 28


def test_the_probabilities_are_the_checkpoints(client, calibrated):
    model = checkpoints.load_model(checkpoints.load(calibrated))
    body = png(strokes.render(3))
    with torch.inference_mode():  # calibrated with the temperature kept beside the checkpoint
        expected = (model(images.image_to_mnist(body)[None]) / TEMPERATURE).softmax(1)[0]
    got = torch.tensor(post_image(client, body).json()["probabilities"])
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["JPEG", "WEBP"])
def test_photo_formats_are_read(client, kind):
    body = png(strokes.render(4).convert("RGB"), format=kind, quality=85)
    response = post_image(client, body, f"image/{kind.lower()}")
    assert response.status_code == 200, response.text
    assert response.json()["input"] == serve.as_pixels(images.image_to_mnist(body))


def truncated_png():
    body = png(strokes.render(2))
    return body[: len(body) // 2]


def decompression_bomb():
    """A PNG of a few kilobytes that declares 64 million pixels."""
    return png(Image.new("1", (8000, 8000)), optimize=True)


BAD_INPUTS = {
    "empty body": (b"", "image/png", 400, "empty"),
    "not an image": (b"hello, I am text", "image/png", 422, "not an image"),
    "truncated PNG": (truncated_png(), "image/png", 422, "cannot read image"),
    "decompression bomb": (decompression_bomb(), "image/png", 422, "too large"),
    "damaged BMP": (damaged_palette_bmp(), "image/bmp", 422, "it is damaged"),
    "blank canvas": (png(Image.new("L", (280, 280), 255)), "image/png", 422, "no digit found"),
    "wrong content type": (png(strokes.render(1)), "text/plain", 415, "expected an image"),
    "form upload": (b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x", 415, "expected an image"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gets_a_4xx_json_error_and_the_server_goes_on(client, name):
    body, content_type, status, words = BAD_INPUTS[name]
    response = post_image(client, body, content_type)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and words in response.json()["error"]
    assert "Traceback" not in response.text
    assert post_image(client, png(strokes.render(5))).status_code == 200


def test_an_upload_over_the_limit_is_refused(client):
    response = post_image(client, b"\0" * (serve.MAX_UPLOAD_BYTES + 1))
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_unknown_routes_and_methods_get_json_errors(client):
    for method, path in [("GET", "/api/nothing"), ("POST", "/api/predict/"), ("DELETE", "/api/health/x")]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json() == {"error": f"no such endpoint: {path}; there are POST /api/predict and GET "
                                            "/api/health"}
    assert client.head("/api/health").status_code == 200  # as a monitor may ask
    response = client.get("/api/predict")  # as a browser's address bar sends it
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert "with POST" in response.json()["error"]


def test_the_page_and_the_api_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and 'src="app.js"' in page.text
    for asset in ("app.js", "style.css"):
        assert client.get(f"/{asset}").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "image/png" in spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    # Nothing in a request names a file outside web/.
    assert client.get("/../serve.py").status_code == 404
    assert client.get("/%2e%2e/serve.py").status_code == 404


def test_concurrent_requests_each_get_their_own_answer(app):
    bodies = [png(strokes.render(d % 10, width=14 + d)) for d in range(40)]

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async def ask(body):
                response = await client.post("/api/predict", content=body, headers={"Content-Type": "image/png"})
                return response.json()["input"], response.json()["probabilities"]

            alone = [await ask(body) for body in bodies]
            together = await asyncio.gather(*(ask(body) for body in bodies))
            return alone, together

    alone, together = asyncio.run(run())
    for (input_alone, p_alone), (input_together, p_together) in zip(alone, together):
        assert input_together == input_alone
        assert p_together == pytest.approx(p_alone, abs=1e-5)  # a batch of many sums in another order


def test_requests_that_wait_together_share_one_forward_pass(trained_run):
    run_dir, _ = trained_run
    model = checkpoints.load_model(checkpoints.load(run_dir / "best.pt"))
    batch_sizes = []
    model.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))
    reader = serve.BatchedReader(model, serve.prepare)
    bodies = [png(strokes.render(d)) for d in range(10)] + [b"not an image"]

    async def run():
        return await asyncio.gather(*(reader.read(body) for body in bodies), return_exceptions=True)

    results = asyncio.run(run())
    assert batch_sizes == [10]  # all eleven waited together; the one that is no image was left out
    assert isinstance(results[-1], serve.HTTPException) and results[-1].status_code == 422
    for body, (x, probabilities) in zip(bodies[:-1], results[:-1]):
        assert torch.equal(x, images.image_to_mnist(body)) and probabilities.shape == (10,)


def test_only_small_pictures_are_prepared_on_the_event_loop(trained_run):
    # A 1-bit PNG of 6,000 x 6,000 pixels is a few KB, but takes a fifth of a second to prepare: on the
    # event loop it would hold up every other client. So would a large file of few pixels.
    model = checkpoints.load_model(checkpoints.load(trained_run[0] / "best.pt"))
    on_the_loop = []

    def prepare(body):
        on_the_loop.append(threading.current_thread() is threading.main_thread())
        return serve.prepare(body)

    wide = Image.new("1", (6000, 6000), 1)
    ImageDraw.Draw(wide).line([(3000, 1000), (3000, 5000)], fill=0, width=400)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    bodies = [png(strokes.render(7)), png(wide, optimize=True), png(noise)]
    assert len(bodies[1]) <= serve.PREPARED_ON_THE_LOOP < len(bodies[2])

    async def run():
        return await asyncio.gather(*(serve.BatchedReader(model, prepare).read(body) for body in bodies))

    asyncio.run(run())
    assert on_the_loop == [True, False, False]


def test_more_requests_than_one_batch_are_all_answered():
    model = CNN().eval()  # any weights: what is checked is that every request gets its answer
    batch_sizes = []
    model.register_forward_hook(lambda module, inputs, output: batch_sizes.append(len(inputs[0])))
    reader = serve.BatchedReader(model, serve.prepare)
    body = png(strokes.render(3))

    async def run():
        return await asyncio.wait_for(asyncio.gather(*(reader.read(body) for _ in range(2 * serve.MAX_BATCH + 1))), 30)

    assert len(asyncio.run(run())) == 2 * serve.MAX_BATCH + 1
    assert batch_sizes == [serve.MAX_BATCH, serve.MAX_BATCH, 1]


def test_a_client_that_goes_away_leaves_the_others_answered():
    reader = serve.BatchedReader(CNN().eval(), serve.prepare)
    bodies = [png(strokes.render(d)) for d in range(5)]

    async def run():
        tasks = [asyncio.create_task(reader.read(body)) for body in bodies]
        await asyncio.sleep(0)  # all five wait in one batch, which the worker has begun
        tasks[0].cancel()  # as when a browser closes its connection
        answered = await asyncio.wait_for(asyncio.gather(*tasks[1:]), 30)
        return tasks[0].cancelled(), answered

    cancelled, answered = asyncio.run(run())
    assert cancelled and len(answered) == 4


def test_a_content_length_that_is_no_number_is_refused_by_serve_itself():
    # uvicorn refuses it first (test below); under another server serve.py must, not fail with a 500.
    class Request:
        headers = {"content-length": "12x"}

    with pytest.raises(serve.HTTPException) as refused:
        asyncio.run(serve.read_body(Request()))
    assert refused.value.status_code == 400 and "'12x'" in refused.value.detail


def test_an_ipv6_host_gets_an_ipv6_socket():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    with serve.open_socket("::1", 0) as sock:
        assert sock.family == socket.AF_INET6 and sock.getsockname()[0] == "::1"


# --- serve.py as a user runs it ---------------------------------------------------------------


def test_no_checkpoint_is_one_line_saying_how_to_train(tmp_path):
    line = one_line_error(run_script("serve.py", "--run-dir", tmp_path / "none", timeout=60))
    assert "python train.py" in line


def test_a_busy_port_is_one_line(trained_run):
    run_dir, _ = trained_run
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(run_script("serve.py", "--run-dir", run_dir, "--port", port, timeout=60))
    assert f"127.0.0.1:{port}" in line and "--port" in line


def raw_request(address, head, body_part):
    """Send a request's head and only part of its body; return the status line and the JSON answer."""
    host, port = address.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body_part)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    return status.decode(), json.loads(rest.split(b"\r\n\r\n", 1)[1])


def test_a_50_mb_upload_is_refused_before_it_is_read(served):
    address, _ = served
    declared = (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 52428800\r\n\r\n")
    status, answer = raw_request(address, declared, b"\0" * 65536)  # 64 KB of the promised 50 MB
    assert " 413 " in status and "limit" in answer["error"]
    # Chunked, with no length declared: refused once the limit is passed, not at the end.
    chunked = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n" % (1 << 20) + b"\0" * (1 << 20) + b"\r\n"
    status, answer = raw_request(address, chunked, chunk * 11)  # 11 MB sent of an endless body
    assert " 413 " in status and "limit" in answer["error"]
    assert httpx.get(f"{address}/api/health").json()["status"] == "ok"


def test_a_content_length_that_is_no_number_is_refused(served):
    address, _ = served
    host, port = address.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 12x\r\n\r\n")
        status = sock.recv(65536).partition(b"\r\n")[0].decode()
    assert " 400 " in status  # uvicorn refuses it before serve.py sees it; serve.py would too (another server)
    assert httpx.get(f"{address}/api/health").json()["status"] == "ok"


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_ctrl_c_or_sigterm_stops_the_server_cleanly(trained_run, sig, code, said):
    run_dir, _ = trained_run
    process, address = start_server(run_dir, "--host", "0.0.0.0")
    assert address.startswith("http://0.0.0.0:")
    process.send_signal(sig)
    out, err = process.communicate(timeout=30)
    assert process.returncode == code and "Traceback" not in err, err
    assert "warning" in err and "network" in err
    assert err.strip().splitlines()[-1] == f"stopped by {said}"
