"""The web page in a real browser (headless Chromium driven by Playwright), as a person uses it.

The digits are drawn with mouse strokes along strokes.py's shapes on a page served by serve.py, with a
model trained by the test run on 20,000 real MNIST images (the `reader_run` fixture).
"""

import base64
import io
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import serving
from PIL import Image, ImageDraw
from playwright.sync_api import expect, sync_playwright

import checkpoints
import data
import strokes


def browser_path(playwright):
    """Playwright's own Chromium where `playwright install chromium` put it, else the system's."""
    if Path(playwright.chromium.executable_path).exists():
        return None
    system = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if system is None:
        pytest.fail("no Chromium: install Debian's `chromium` package, or run `playwright install chromium`")
    return system


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path(playwright))
        yield browser
        browser.close()


@contextmanager
def opened(browser, address, script=None):
    """A desktop-sized page at `address`, with `script` run before the page's own, once it is ready."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    if script:
        context.add_init_script(script)
    page = context.new_page()
    page.goto(address)
    expect(page.get_by_text("validation accuracy")).to_be_visible()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser, served):
    with opened(browser, served[0]) as page:
        yield page


def draw(page, digit):
    """Draw the digit with the mouse, stroke by stroke, over about two thirds of the pad."""
    box = page.get_by_label("Drawing pad").bounding_box()
    for stroke in strokes.smooth_strokes(digit):
        points = [(box["x"] + (0.15 + 0.7 * x) * box["width"], box["y"] + (0.15 + 0.7 * y) * box["height"])
                  for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=2)
        page.mouse.up()


def settled(page):
    """Wait until every request the page has made has been answered."""
    expect(page.get_by_label("What the network reads")).to_have_attribute("aria-busy", "false")


def reading(page):
    """The digit the page shows once every request it has made has been answered."""
    settled(page)
    return page.get_by_label("Predicted digit").inner_text()


def pad_is_blank(page, top=1.0):
    """Whether the pad is white all over, or over the `top` fraction of its height."""
    return page.evaluate("""(top) => {
        const pad = document.getElementById('pad');
        return pad.getContext('2d').getImageData(0, 0, pad.width, pad.height * top).data.every(v => v === 255);
    }""", top)


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_drawn_digits_are_read(page):
    read = {}
    for digit in range(10):
        page.get_by_role("button", name="Clear").click()
        draw(page, digit)
        read[digit] = reading(page)
    right = sum(read[d] == str(d) for d in range(10))
    assert right >= 9, f"read {read}"


def test_the_page_shows_probabilities_and_the_networks_input(page):
    answers = []
    page.on("response", lambda response: answers.append(response) if "/api/predict" in response.url else None)
    draw(page, 3)
    assert reading(page) == "3"
    answer = answers[-1].json()  # what the page shows is the answer to its last request
    bars = page.get_by_label("Probability of each digit").get_by_role("listitem")
    expect(bars).to_have_count(10)
    expect(bars.nth(3)).to_have_class("top")
    expect(page.locator("#bars li.top")).to_have_count(1)
    expect(page.locator("#confidence")).to_have_text(f"{answer['probabilities'][3] * 100:.1f}% sure")
    for d, p in enumerate(answer["probabilities"]):  # each bar as long as its digit's probability, and says it
        percent = f"{p * 100:.1f}%"
        expect(bars.nth(d).locator(".bar-value")).to_have_text(percent)
        expect(bars.nth(d)).to_have_attribute("aria-label", f"{d}: {percent}")
        width = bars.nth(d).locator(".bar-fill").evaluate("fill => fill.style.width")  # the browser writes 1.0% as 1%
        assert width.endswith("%") and float(width[:-1]) == pytest.approx(p * 100, abs=0.05)
    about = page.request.get(page.url + "api/health").json()
    expect(page.locator("#model")).to_have_text(
        f"Read by {about['checkpoint']} (epoch {about['epoch']}, validation accuracy {about['val_acc'] * 100:.2f}%; "
        f"confidences not calibrated) on {about['device']}")  # evaluate.py has not run on this checkpoint
    shown = page.evaluate("""() => {  // the 28x28 input as drawn, read at the centre of each cell
        const canvas = document.getElementById('input');
        const cell = (canvas.width - 1) / 28;
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const rows = [];
        for (let y = 0; y < 28; y++) {
            rows.push([]);
            for (let x = 0; x < 28; x++) {
                const i = Math.floor((y + 0.5) * cell + 1) * canvas.width + Math.floor((x + 0.5) * cell + 1);
                rows[y].push(255 - pixels[4 * i]);  // drawn dark on white: ink is 255 minus the grey
            }
        }
        return rows;
    }""")
    assert shown == answer["input"]
    assert 40 < sum(value > 128 for row in shown for value in row) < 400  # a digit's worth of ink out of 784


SLOW_SERVER = """(() => {  // every answer takes 400 ms longer; count the requests, and how many are out at once
    const send = window.fetch;
    Object.assign(window, {sent: 0, out: 0, mostOut: 0});
    window.fetch = async (url, options) => {
        if (!String(url).includes("api/predict")) return send(url, options);
        window.sent++;
        window.mostOut = Math.max(window.mostOut, ++window.out);
        try {
            await new Promise(resolve => setTimeout(resolve, 400));
            return await send(url, options);
        } finally {
            window.out--;
        }
    };
})();"""


def test_a_slow_server_gets_one_request_at_a_time_and_the_newest_drawing_last(browser, served):
    with opened(browser, served[0], SLOW_SERVER) as page:
        draw(page, 8)  # strokes drawn over more than a second: readings are asked for while one is out
        assert reading(page) == "8"  # the answer to the drawing as it ended, not to a part of it
        sent, most_out = page.evaluate("[window.sent, window.mostOut]")
        assert most_out == 1 and sent >= 2


HELD = """(() => {  // each request to api/predict, and each picture being encoded, waits until the test lets it go
    const send = window.fetch;
    const encode = HTMLCanvasElement.prototype.toBlob;
    const base64 = async (blob) => {
        const bytes = new Uint8Array(await blob.arrayBuffer());
        let text = "";
        for (const byte of bytes) text += String.fromCharCode(byte);
        return btoa(text);
    };
    Object.assign(window, {sent: [], answers: [], encodes: [], holdEncodes: false, encoding: 0});
    window.fetch = async (url, options) => {
        if (!String(url).includes("api/predict")) return send(url, options);
        const k = window.sent.push(null) - 1;  // counted at once, filled in once read
        window.sent[k] = options.body.name || await base64(options.body);
        await new Promise(resolve => window.answers.push(resolve));
        return send(url, options);
    };
    HTMLCanvasElement.prototype.toBlob = function (callback, ...options) {
        window.encoding++;
        encode.call(this, (blob) => {
            const done = () => { window.encoding--; callback(blob); };
            window.holdEncodes ? window.encodes.push(done) : done();
        }, ...options);
    };
    window.padAsSent = () => new Promise((resolve) => {  // the pad as the page sends it, 200 px square
        const canvas = document.createElement("canvas");
        canvas.width = canvas.height = 200;
        const context = canvas.getContext("2d");
        context.imageSmoothingQuality = "high";
        context.drawImage(document.getElementById("pad"), 0, 0, 200, 200);
        encode.call(canvas, async (blob) => resolve(await base64(blob)), "image/png");
    });
})();"""


@pytest.fixture
def held_page(browser, served):
    """A page whose requests are answered, and whose pictures are encoded, only when the test says."""
    with opened(browser, served[0], HELD) as page:
        yield page


def stroke(page, start, end):
    """One straight stroke of the mouse between two points given as fractions of the pad."""
    box = page.get_by_label("Drawing pad").bounding_box()
    page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=5)
    page.mouse.up()
    page.wait_for_function("window.encoding === 0")  # the strokes' pictures have reached send()


def answer_one(page):
    """Let the oldest request waiting for the server go on to it."""
    page.wait_for_function("window.answers.length > 0")
    page.evaluate("window.answers.shift()()")


def test_pictures_drawn_while_one_is_read_wait_and_only_the_newest_is_sent(held_page):
    stroke(held_page, (0.5, 0.2), (0.5, 0.8))
    held_page.wait_for_function("window.answers.length === 1")
    stroke(held_page, (0.3, 0.3), (0.7, 0.3))  # each stroke's end is read, and must wait
    stroke(held_page, (0.3, 0.7), (0.7, 0.7))
    assert held_page.evaluate("window.sent.length") == 1  # one request at a time
    answer_one(held_page)
    answer_one(held_page)
    settled(held_page)
    sent, pad = held_page.evaluate("async () => [window.sent, await window.padAsSent()]")
    assert len(sent) == 2 and sent[1] == pad  # then the pad as it is now, not a picture from before the last stroke


def test_clear_drops_the_picture_waiting_to_be_sent(held_page):
    stroke(held_page, (0.5, 0.2), (0.5, 0.8))
    stroke(held_page, (0.3, 0.3), (0.7, 0.3))
    held_page.get_by_role("button", name="Clear").click()
    answer_one(held_page)
    settled(held_page)
    assert held_page.evaluate("window.sent.length") == 1
    expect(held_page.get_by_label("Predicted digit")).to_have_text("?")  # nor is the answer to the first shown


def test_clear_drops_a_picture_still_being_encoded(held_page):
    held_page.evaluate("window.holdEncodes = true")
    box = held_page.get_by_label("Drawing pad").bounding_box()
    held_page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    held_page.wait_for_function("window.encodes.length === 1")
    held_page.keyboard.press("Escape")
    held_page.evaluate("window.encodes.shift()()")
    settled(held_page)
    assert held_page.evaluate("window.sent") == []


def test_a_chosen_file_replaces_the_drawing_and_its_reading(held_page, tmp_path):
    stroke(held_page, (0.1, 0.1), (0.9, 0.1))  # along the top, where a wide picture leaves the pad bare
    stroke(held_page, (0.1, 0.2), (0.9, 0.2))  # waiting behind the first
    wide = Image.new("L", (600, 200), 255)
    wide.paste(strokes.render(8, size=200), (200, 0))
    (tmp_path / "eight.png").write_bytes(png_bytes(wide))
    held_page.get_by_text("Choose an image").set_input_files(tmp_path / "eight.png")
    held_page.wait_for_function("""() => {  // the picture is on the pad, in its middle band
        const pad = document.getElementById('pad');
        return pad.getContext('2d').getImageData(0, 100, pad.width, 80).data.some(v => v < 128);
    }""")
    assert pad_is_blank(held_page, top=0.25)  # and the strokes are gone from above it
    answer_one(held_page)  # the first stroke's reading comes back, and is not shown
    held_page.wait_for_function("window.answers.length === 1")  # the picture's request is out
    expect(held_page.get_by_label("Predicted digit")).to_have_text("?")
    answer_one(held_page)
    assert reading(held_page) == "8"
    assert held_page.evaluate("window.sent.length") == 2 and held_page.evaluate("window.sent[1]") == "eight.png"


def test_clear_clears_by_button_and_by_key(page):
    draw(page, 7)
    reading(page)
    assert not pad_is_blank(page)
    page.get_by_role("button", name="Clear").click()
    assert pad_is_blank(page)
    expect(page.get_by_label("Predicted digit")).to_have_text("?")
    for key in ("Escape", "Delete", "Backspace"):
        draw(page, 1)
        reading(page)
        page.keyboard.press(key)
        assert pad_is_blank(page), key
        expect(page.get_by_label("Predicted digit")).to_have_text("?")


def test_a_dropped_photo_is_read(page):
    # A grey, photo-like picture: a dark-grey 5 on light-grey paper, larger than the pad.
    photo = strokes.render(5, size=600, ink=60, paper=200)
    transfer = page.evaluate_handle("""(encoded) => {
        const bytes = Uint8Array.from(atob(encoded), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'five.png', {type: 'image/png'}));
        return transfer;
    }""", base64.b64encode(png_bytes(photo)).decode())
    page.get_by_label("Drawing pad").dispatch_event("drop", {"dataTransfer": transfer})
    assert reading(page) == "5"
    assert not pad_is_blank(page)  # the photo is shown where it was dropped


def test_clear_right_after_a_drop_leaves_the_pad_blank(page):
    photo = strokes.render(3, size=1500, ink=60, paper=200)
    # The drop and Escape in one task: Clear comes before the photo has been decoded to be shown.
    with page.expect_response("**/api/predict"):  # the photo was sent, and its answer came back
        page.evaluate("""(encoded) => {
            const bytes = Uint8Array.from(atob(encoded), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], 'three.png', {type: 'image/png'}));
            document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: transfer}));
            document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}));
        }""", base64.b64encode(png_bytes(photo)).decode())
    settled(page)
    page.wait_for_timeout(300)  # and the page has had time to paint the photo, were it still going to
    assert pad_is_blank(page)
    expect(page.get_by_label("Predicted digit")).to_have_text("?")  # the answer about the photo was dropped


def test_a_tap_is_said_to_be_no_digit(page):
    pad = page.get_by_label("Drawing pad").bounding_box()
    page.mouse.click(pad["x"] + pad["width"] / 2, pad["y"] + pad["height"] / 2)
    expect(page.get_by_role("alert")).to_have_text("no digit found: only a dot; draw the whole digit")
    expect(page.get_by_label("Predicted digit")).to_have_text("?")
    draw(page, 2)  # and the next drawing is read, the error gone
    assert reading(page) == "2"
    expect(page.get_by_role("alert")).to_be_hidden()


def test_no_digit_is_no_error_while_the_stroke_goes_on(page):
    # Read every 100 ms while drawing, the first bit of a stroke is no digit yet: that is said only once it ends.
    page.route("**/api/predict", lambda route: route.fulfill(
        status=422, json={"error": "no digit found: only a dot; draw the whole digit"}))
    box = page.get_by_label("Drawing pad").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 3)
    page.mouse.down()
    with page.expect_response("**/api/predict"):
        for step in range(1, 6):
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * (1 / 3 + step / 20))
            page.wait_for_timeout(60)
    expect(page.get_by_role("alert")).to_be_hidden()
    page.mouse.up()
    expect(page.get_by_role("alert")).to_have_text("no digit found: only a dot; draw the whole digit")


def test_a_dropped_file_that_is_no_picture_is_refused_on_the_page(page):
    sent = []
    page.on("request", lambda request: sent.append(request.url) if "/api/predict" in request.url else None)
    transfer = page.evaluate_handle("""() => {
        const transfer = new DataTransfer();
        transfer.items.add(new File(['my notes'], 'notes.txt', {type: 'text/plain'}));
        return transfer;
    }""")
    page.get_by_label("Drawing pad").dispatch_event("drop", {"dataTransfer": transfer})
    expect(page.get_by_role("alert")).to_have_text("notes.txt is not an image")
    assert sent == []  # refused on the page, not sent for the server to refuse


def test_a_calibrated_checkpoint_is_said_to_be(browser, reader_run, tmp_path):
    (tmp_path / "run").mkdir()
    best = shutil.copy(reader_run / "best.pt", tmp_path / "run")
    checkpoints.save_temperature(best, checkpoints.load(best), 1.5, "a test")  # as evaluate.py would
    with serving(tmp_path / "run") as address, opened(browser, address) as page:
        expect(page.locator("#model")).to_contain_text("; calibrated, temperature 1.50) on ")


def test_a_server_that_is_gone_is_said_to_be(page):
    page.route("**/api/predict", lambda route: route.abort())
    draw(page, 4)
    expect(page.get_by_role("alert")).to_have_text("The server is not answering: is serve.py still running?")


def test_a_chosen_file_is_read_and_a_bad_one_is_explained(page, tmp_path):
    (tmp_path / "eight.png").write_bytes(png_bytes(strokes.render(8)))
    page.get_by_text("Choose an image").set_input_files(tmp_path / "eight.png")
    assert reading(page) == "8"
    (tmp_path / "blank.png").write_bytes(png_bytes(strokes.render(8, ink=255)))
    page.get_by_text("Choose an image").set_input_files(tmp_path / "blank.png")
    expect(page.get_by_role("alert")).to_contain_text("no digit found")


@pytest.mark.parametrize("width, height", [(390, 844), (360, 640)])
def test_the_page_fits_a_phone(browser, served, width, height):
    address, _ = served
    context = browser.new_context(viewport={"width": width, "height": height}, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.goto(address)
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    pad = page.get_by_label("Drawing pad").bounding_box()
    assert 0.8 * width <= pad["width"] <= width and pad["width"] == pytest.approx(pad["height"], abs=1)
    bars = page.get_by_label("Probability of each digit").bounding_box()
    assert bars["x"] >= 0 and bars["x"] + bars["width"] <= width
    answer = page.get_by_label("Predicted digit").bounding_box()
    assert answer["y"] + answer["height"] <= height  # on screen while you draw: the pad cannot scroll the page
    context.close()


def test_a_fashion_checkpoint_gets_a_page_about_clothes(browser, fashion_run, tmp_path):
    with serving(fashion_run) as address, opened(browser, address) as page:
        expect(page.get_by_role("heading")).to_have_text("Draw a piece of clothing")
        expect(page).to_have_title("Fashion-MNIST reader")
        expect(page.get_by_label("Drawing pad")).to_have_attribute("aria-label", re.compile("garment"))
        expect(page.get_by_label("Probability of each class")).to_contain_text("Ankle boot")
        photo = Image.new("L", (300, 400), 255)  # trousers, dark on white as a product photo
        ImageDraw.Draw(photo).polygon([(90, 40), (210, 40), (230, 370), (165, 370), (150, 150), (135, 370),
                                       (70, 370)], fill=30)
        photo.save(tmp_path / "trousers.png")
        page.get_by_text("Choose an image").set_input_files(tmp_path / "trousers.png")
        settled(page)
        assert page.get_by_label("Predicted class").inner_text() in data.FASHION_MNIST.classes
