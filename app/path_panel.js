// The Interpolate page's path panel (app/path_panel.py): the path's settings and its decoded frames in one
// browser element. Streamlit calls the default export on every rerun that brings new data; the controls are
// built once and kept (so focus and keyboard moves survive a rerun), the pictures are swapped in place.
//
// Protocol: a change of any setting sends the whole settings object, numbered, as the trigger "settings";
// the server echoes the number of the last settings it applied (data.seq). Settings in data older than what
// was sent are not written back into the controls, so a quick run of key presses never snaps back. When the
// controls have been still for data.settle_ms, the trigger "settled" asks the server to put the settings in
// the page's link: one history entry per gesture, and no address-bar update in the way of each picture.

const el = (tag, attrs = {}, text = "") => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
};

const fmt = (w) => String(Math.round(w * 100) / 100);

function build(host, data) {
  const root = el("div", { class: "nvp-panel" });
  const settings = el("div", { class: "nvp-settings" });
  const ui = { root, seq: 0, acked: 0, timer: null, frame: -1 };

  // Path: two radio buttons in a labelled group.
  const path = el("fieldset", { class: "nvp-path", role: "radiogroup", "aria-label": "Path" });
  path.append(el("legend", {}, "Path"));
  ui.methods = data.methods.map((m) => {
    const input = el("input", { type: "radio", name: `${host.id || "nvp"}-path`, value: m });
    const label = el("label");
    label.append(input, document.createTextNode(" " + m));
    path.append(label);
    return input;
  });
  path.title = data.help.method;

  // Frames: a range with its value beside the label.
  const frames = el("div", { class: "nvp-field" });
  ui.steps = el("input", {
    type: "range", min: data.limits.steps[0], max: data.limits.steps[1], step: 1, "aria-label": "Frames",
  });
  ui.stepsOut = el("output");
  const fl = el("label", {}, "Frames ");
  fl.append(ui.stepsOut);
  frames.append(fl, ui.steps);

  // Weights: one range per level, and the presets that set them all.
  const weights = el("div", { class: "nvp-weights" });
  weights.append(el("div", { class: "nvp-heading" }, data.help.weights));
  const presets = el("div", { class: "nvp-presets" });
  for (const [name, values] of data.presets) {
    const b = el("button", { type: "button", title: `weights ${values.map(fmt).join(", ")}` }, name);
    b.addEventListener("click", () => {
      ui.weights.forEach((input, i) => { input.value = values[i]; });
      show(ui);
      send(ui);
    });
    presets.append(b);
  }
  const row = el("div", { class: "nvp-row" });
  ui.weightOuts = [];
  ui.weights = data.levels.map((name, i) => {
    const field = el("div", { class: "nvp-field" });
    const input = el("input", { type: "range", min: 0, max: 1, step: data.limits.weight_step, "aria-label": name });
    const out = el("output");
    const label = el("label", {}, name + " ");
    label.append(out);
    field.append(label, input);
    row.append(field);
    ui.weightOuts[i] = out;
    return input;
  });
  weights.append(presets, row);
  settings.append(path, frames, weights);

  // Every control: its value is shown while it moves, and sent when it settles (a key press, a release).
  for (const input of [ui.steps, ...ui.weights]) {
    input.addEventListener("input", () => show(ui));
    input.addEventListener("change", () => send(ui));
  }
  for (const input of ui.methods) input.addEventListener("change", () => send(ui));

  // Results: the strip (every frame side by side), one frame with a slider to browse, the frames looping.
  const player = el("div", { class: "nvp-player" });
  const strip = el("figure", { class: "nvp-strip" });
  ui.stripImg = el("img", { class: "nvp-strip-img", alt: "all frames side by side" });
  ui.stripCap = el("figcaption", { class: "nvp-strip-caption" });
  strip.append(ui.stripImg, ui.stripCap);
  const one = el("figure");
  ui.frameImg = el("img", { class: "nvp-frame", alt: "decoded frame" });
  ui.frameCap = el("figcaption", { class: "nvp-frame-caption" });
  ui.browse = el("input", { type: "range", min: 0, step: 1, "aria-label": "Frame" });
  one.append(ui.frameImg, ui.frameCap, el("label", {}, "Frame"), ui.browse);
  const loop = el("figure");
  ui.anim = el("img", { class: "nvp-anim", alt: "looping animation" });
  ui.play = el("button", { type: "button" });
  loop.append(ui.anim, el("figcaption", {}, "looping animation: A → B → A"), ui.play);
  player.append(strip, one, loop);
  ui.figures = [one, loop];
  ui.browse.addEventListener("input", () => showFrame(ui, Number(ui.browse.value)));
  // The loop plays unless the reader asks for reduced motion (also when that setting changes later).
  const motion = matchMedia("(prefers-reduced-motion: reduce)");
  const label = () => { ui.play.textContent = ui.playing ? "pause" : "play"; };
  ui.playing = !motion.matches;
  motion.addEventListener("change", () => { ui.playing = !motion.matches; label(); });
  ui.play.addEventListener("click", () => { ui.playing = !ui.playing; label(); });
  label();

  root.append(settings, player);
  host.append(root);
  return ui;
}

function current(ui) {
  return {
    method: (ui.methods.find((m) => m.checked) || ui.methods[0]).value,
    steps: Number(ui.steps.value),
    weights: ui.weights.map((w) => Number(w.value)),
  };
}

function show(ui) {
  ui.stepsOut.textContent = ui.steps.value;
  ui.weights.forEach((w, i) => { ui.weightOuts[i].textContent = fmt(Number(w.value)); });
}

function send(ui) {
  ui.seq += 1;
  ui.setTrigger("settings", { ...current(ui), seq: ui.seq });
  clearTimeout(ui.settle);
  ui.settle = setTimeout(() => {
    if (ui.root.isConnected) ui.setTrigger("settled", { seq: ui.seq });
  }, ui.settleMs);
}

function setControls(ui, s) {
  ui.methods.forEach((m) => { m.checked = m.value === s.method; });
  ui.steps.value = s.steps;
  ui.weights.forEach((w, i) => { w.value = s.weights[i]; });
  show(ui);
}

function showFrame(ui, k) {
  ui.frame = k;
  ui.frameImg.src = ui.src[k];
  ui.frameCap.textContent = ui.cap[k];
  ui.browse.value = k;
  ui.browse.setAttribute("aria-valuetext", ui.cap[k]);
}

function update(ui, data) {
  // The server's settings win unless this page has sent newer ones that it has not answered yet.
  if (data.seq >= ui.seq) setControls(ui, data.settings);
  ui.seq = Math.max(ui.seq, data.seq);
  ui.src = data.frames;
  ui.cap = data.captions;
  const n = ui.src.length;
  ui.stripImg.src = data.strip.src;
  ui.stripImg.width = data.strip.width;
  ui.stripCap.textContent = data.strip.caption;
  for (const img of [ui.frameImg, ui.anim]) img.width = data.width;
  for (const f of ui.figures) f.style.width = `${data.width}px`;
  ui.browse.max = n - 1;
  // Browsing keeps its place when the path keeps its length; a new length starts in the middle.
  showFrame(ui, ui.frame >= 0 && ui.frame < n && n === ui.shownFrames ? ui.frame : Math.floor(n / 2));
  ui.shownFrames = n;
  const order = [...Array(n).keys()].concat([...Array(n).keys()].slice(1, -1).reverse());
  let i = 0;
  ui.anim.src = ui.src[0];
  clearInterval(ui.timer);
  ui.timer = setInterval(() => {
    if (!ui.root.isConnected) { clearInterval(ui.timer); return; }
    if (ui.playing) { i = (i + 1) % order.length; ui.anim.src = ui.src[order[i]]; }
  }, data.ms);
}

export default function ({ data, parentElement, setTriggerValue }) {
  let ui = parentElement.__nvpPanel;
  if (!ui || !ui.root.isConnected) {
    ui = parentElement.__nvpPanel = build(parentElement, data);
  }
  ui.setTrigger = setTriggerValue;
  ui.settleMs = data.settle_ms;
  update(ui, data);
  return () => clearInterval(ui.timer);
}
