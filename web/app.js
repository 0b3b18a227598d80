// The drawing pad: pointer strokes on a canvas, sent as a PNG to /api/predict while you draw
// (at most every READ_EVERY_MS, never more than one request in flight) and after each stroke.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const inputCanvas = document.getElementById("input");
const inputCtx = inputCanvas.getContext("2d");
const digitOut = document.getElementById("digit");
const confidenceOut = document.getElementById("confidence");
const timingOut = document.getElementById("timing");
const errorOut = document.getElementById("error");
const hint = document.getElementById("hint");
const bars = document.getElementById("bars");
const dropZone = document.getElementById("drop-zone");
const resultPanel = document.querySelector(".result-panel");

// MNIST digits are about 20 px tall with strokes 2-3 px wide: the same proportion on a digit drawn
// across most of the pad.
const STROKE_WIDTH = pad.width / 13;
const READ_EVERY_MS = 100;
// The pad is sent at 200x200: ten times the 20-pixel box MNIST fits a digit into, and half the
// pixels of the pad itself for the server to decode.
const SEND_SIZE = 200;
const sendCanvas = document.createElement("canvas");
sendCanvas.width = sendCanvas.height = SEND_SIZE;
const sendCtx = sendCanvas.getContext("2d");
sendCtx.imageSmoothingQuality = "high";

let drawing = false;
let hasInk = false;
let scheduledRead = null;  // a reading due while drawing
let encoding = 0;       // canvas snapshots being turned into PNGs
let inFlight = false;
let pending = null;     // the next image to send once the request in flight returns
let generation = 0;     // bumped by Clear, so that answers about an earlier drawing are dropped
let classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];  // the checkpoint's, once /api/health answers

// How the page speaks of a checkpoint trained on another dataset than MNIST, whose words index.html has.
const WORDING = {
  "fashion-mnist": {title: "Fashion-MNIST reader", heading: "Draw a piece of clothing", thing: "garment",
                    hint: "Draw a garment here,<br>or drop a photo of one"},
};

// aria-busy tells assistive technology (and the tests) that a newer reading is on its way.
function updateBusy() {
  const busy = drawing || scheduledRead !== null || encoding > 0 || inFlight || pending !== null;
  resultPanel.setAttribute("aria-busy", String(busy));
}

function blankPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#000";
  ctx.fillStyle = "#000";
  ctx.lineWidth = STROKE_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
}

function makeBars() {
  bars.replaceChildren();
  bars.classList.toggle("named", classes.some((name) => name.length > 2));
  classes.forEach((name) => {
    const li = document.createElement("li");
    li.innerHTML = '<span class="bar-label"></span>' +
      '<span class="bar-track"><span class="bar-fill"></span></span><span class="bar-value">–</span>';
    li.querySelector(".bar-label").textContent = name;
    li.setAttribute("aria-label", `${name}: no reading yet`);
    bars.appendChild(li);
  });
}

function clearAll() {
  blankPad();
  hasInk = false;
  generation++;
  pending = null;
  clearTimeout(scheduledRead);
  scheduledRead = null;
  updateBusy();
  hint.hidden = false;
  digitOut.textContent = "?";
  confidenceOut.innerHTML = "&nbsp;";
  timingOut.innerHTML = "&nbsp;";
  drawInput(null);
  showError(null);
  bars.querySelectorAll("li").forEach((li, k) => {
    li.classList.remove("top");
    li.querySelector(".bar-fill").style.width = "0%";
    li.querySelector(".bar-value").textContent = "–";
    li.setAttribute("aria-label", `${classes[k]}: no reading yet`);
  });
}

function showError(message) {
  errorOut.hidden = !message;
  errorOut.textContent = message || "";
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

function startStroke(event) {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  hasInk = true;
  hint.hidden = true;
  const [x, y] = point(event);
  ctx.beginPath();
  ctx.arc(x, y, STROKE_WIDTH / 2, 0, 2 * Math.PI);  // a tap leaves a dot
  ctx.fill();
  ctx.beginPath();
  ctx.moveTo(x, y);
  updateBusy();
}

function continueStroke(event) {
  if (!drawing) return;
  event.preventDefault();
  // Pens and fast mice deliver several points per frame; draw them all for a smooth line.
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const [x, y] = point(e);
    ctx.lineTo(x, y);
  }
  ctx.stroke();
  const [x, y] = point(event);
  ctx.beginPath();
  ctx.moveTo(x, y);
  if (scheduledRead === null) scheduledRead = setTimeout(readPad, READ_EVERY_MS);
}

function endStroke(event) {
  if (!drawing) return;
  drawing = false;
  readPad();
}

function readPad() {
  clearTimeout(scheduledRead);
  scheduledRead = null;
  if (hasInk) {
    encoding++;
    const mine = generation;
    sendCtx.drawImage(pad, 0, 0, SEND_SIZE, SEND_SIZE);
    sendCanvas.toBlob((blob) => {
      encoding--;
      if (mine === generation) send(blob);
      updateBusy();
    }, "image/png");
  }
  updateBusy();
}

async function send(blob) {
  if (inFlight) {
    pending = blob;  // only the newest picture matters
    updateBusy();
    return;
  }
  inFlight = true;
  updateBusy();
  const mine = generation;
  try {
    const response = await fetch("api/predict", {method: "POST", body: blob,
                                                  headers: {"Content-Type": blob.type || "image/png"}})
      .catch(() => { throw new Error("The server is not answering: is serve.py still running?"); });
    const answer = await response.json().catch(() => ({}));  // a proxy's error page, say
    if (!response.ok) {
      throw Object.assign(new Error(answer.error || `the server answered ${response.status}`),
                          {status: response.status});
    }
    if (mine === generation) show(answer);
  } catch (error) {
    // "No digit found" is no news while a stroke is still being drawn: a digit begins as a dot.
    if (mine === generation && !(drawing && error.status === 422)) showError(error.message);
  } finally {
    inFlight = false;
    const next = pending;
    pending = null;
    if (next) send(next);
    updateBusy();
  }
}

function show(answer) {
  showError(null);
  const p = answer.probabilities;
  digitOut.textContent = answer.name;
  digitOut.classList.toggle("long", answer.name.length > 2);
  confidenceOut.textContent = `${(p[answer.class] * 100).toFixed(1)}% sure`;
  timingOut.textContent = `read in ${answer.ms.toFixed(1)} ms`;
  bars.querySelectorAll("li").forEach((li, d) => {
    li.classList.toggle("top", d === answer.class);
    li.querySelector(".bar-fill").style.width = `${(p[d] * 100).toFixed(1)}%`;
    li.querySelector(".bar-value").textContent = `${(p[d] * 100).toFixed(1)}%`;
    li.setAttribute("aria-label", `${classes[d]}: ${(p[d] * 100).toFixed(1)}%`);
  });
  drawInput(answer.input);
}

// The network's 28x28 input, each pixel a square of its own with a hairline between them.
function drawInput(rows) {
  const cell = (inputCanvas.width - 1) / 28;
  inputCtx.fillStyle = "#e3e7eb";
  inputCtx.fillRect(0, 0, inputCanvas.width, inputCanvas.height);
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const shade = rows ? 255 - rows[y][x] : 255;  // dark ink on white, as on the pad
      inputCtx.fillStyle = `rgb(${shade},${shade},${shade})`;
      inputCtx.fillRect(x * cell + 1, y * cell + 1, cell - 1, cell - 1);
    }
  }
}

function readFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showError(`${file.name} is not an image`);
    return;
  }
  clearAll();
  hint.hidden = true;
  const mine = generation;
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {  // show the picture on the pad, scaled to fit, unless Clear came first
    URL.revokeObjectURL(url);
    if (mine !== generation) return;
    const scale = Math.min(pad.width / image.width, pad.height / image.height);
    const w = image.width * scale, h = image.height * scale;
    ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  };
  image.onerror = () => URL.revokeObjectURL(url);
  image.src = url;
  send(file);  // the original file, not the scaled copy: full resolution for the preprocessing
}

function useWording(words) {
  if (!words) return;
  document.title = words.title;
  document.querySelector("h1").textContent = words.heading;
  hint.innerHTML = words.hint;
  pad.setAttribute("aria-label", `Drawing pad: draw one ${words.thing}, or drop an image of one here`);
  digitOut.setAttribute("aria-label", "Predicted class");
  bars.setAttribute("aria-label", "Probability of each class");
}

async function loadModelInfo() {
  const model = document.getElementById("model");
  try {
    const response = await fetch("api/health");
    const about = await response.json();
    classes = about.classes;
    makeBars();
    useWording(WORDING[about.dataset]);
    const calibration = about.temperature ? `calibrated, temperature ${about.temperature.toFixed(2)}` :
      "confidences not calibrated";
    model.textContent = `Read by ${about.checkpoint} (epoch ${about.epoch}, ` +
      `validation accuracy ${(about.val_acc * 100).toFixed(2)}%; ${calibration}) on ${about.device}`;
  } catch (error) {
    model.textContent = "The server is not answering.";
  }
}

pad.addEventListener("pointerdown", startStroke);
pad.addEventListener("pointermove", continueStroke);
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
document.getElementById("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" || event.key === "Delete" || event.key === "Backspace") clearAll();
});
document.getElementById("file").addEventListener("change", (event) => {
  readFile(event.target.files[0]);
  event.target.value = "";  // choosing the same file again still fires
});
dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  readFile(event.dataTransfer.files[0]);
});

makeBars();
clearAll();
loadModelInfo();
