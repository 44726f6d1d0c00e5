// The page of `trompe serve`: it talks only to the JSON API of docs/web.md. No framework.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  image: null, // {file} or {sample}
  labels: {}, // model -> [{index, name, synonyms, key}]
  attacks: [],
  target: null, // {index, name}
  job: null,
  source: null, // EventSource
  poll: 0,
};
const pct = (p) => (100 * p).toFixed(p > 0.999 || p < 0.001 ? 2 : 1) + "%";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  node.append(...children);
  return node;
}

// -- errors: the API's one sentence, next to its field when it names one ---------------------

function clearErrors() {
  $("error").hidden = true;
  $("error").replaceChildren();
  document.querySelectorAll(".field-error").forEach((n) => n.remove());
  document.querySelectorAll("[aria-invalid]").forEach((n) => n.removeAttribute("aria-invalid"));
}

function showError(message, field) {
  const box = $("error");
  const input = field && document.querySelector(`[data-field="${field}"]`);
  if (input) {
    const details = input.closest("details");
    if (details) details.open = true;
    input.setAttribute("aria-invalid", "true");
    const note = el("span", { className: "field-error", textContent: message });
    (input.closest("label, .combo, .eps, .drop") || input).after(note);
  }
  // One line per error: a 422 may name several fields.
  box.append(el("span", { textContent: field && !message.startsWith(field) ? `${field}: ${message}` : message }));
  box.hidden = false;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new Error("the server cannot be reached; is `trompe serve` still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON */
  }
  if (!response.ok) {
    const error = new Error(`the server answered HTTP ${response.status}`);
    const detail = body && body.detail;
    if (typeof detail === "string") error.message = detail;
    else if (Array.isArray(detail)) error.fields = detail;
    if (response.status === 429) {
      const wait = response.headers.get("Retry-After");
      if (wait && typeof detail === "string") error.message += ` (retry in ${wait} s)`;
    }
    throw error;
  }
  return body;
}

function report(error) {
  clearErrors();
  if (error.fields) {
    for (const item of error.fields) {
      const loc = item.loc || [];
      showError(item.msg, loc.length > 1 ? String(loc[loc.length - 1]) : null);
    }
  } else showError(error.message);
}

// -- bars of a top-k --------------------------------------------------------------------------

function bars(list, top, highlight) {
  list.replaceChildren(
    ...top.map((row) => {
      const item = el("li", { className: row.index === highlight ? "goal" : "" });
      const bar = el("span", { className: "bar" });
      bar.style.setProperty("--p", row.prob);
      item.append(el("span", { className: "name", textContent: row.label }), el("span", { className: "prob", textContent: pct(row.prob) }), bar);
      return item;
    })
  );
}

// -- the photo --------------------------------------------------------------------------------

function imageForm() {
  const form = new FormData();
  if (state.image.file) form.append("image", state.image.file);
  else form.append("sample", state.image.sample);
  form.append("model", $("model").value);
  return form;
}

let classifying = 0;
async function classify() {
  if (!state.image) return;
  const mine = ++classifying; // a newer photo or model wins over a slower answer
  clearErrors();
  const form = imageForm();
  form.append("k", "5");
  const list = $("top-now");
  list.setAttribute("aria-busy", "true");
  try {
    const out = await api("/api/classify", { method: "POST", body: form });
    if (mine !== classifying) return;
    $("clf-model").textContent = `(${out.model}, ${out.width}×${out.height})`;
    bars(list, out.top);
    $("classified").hidden = false;
  } catch (error) {
    if (mine !== classifying) return;
    $("classified").hidden = true;
    report(error);
  } finally {
    list.removeAttribute("aria-busy");
  }
}

function choose(image, url) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = image.file ? url : null;
  state.image = image;
  pixelated($("preview"), url);
  classify();
}

function chooseFile(file) {
  if (file) choose({ file }, URL.createObjectURL(file));
}

function pixelated(img, url) {
  img.onload = () => img.classList.toggle("pixelated", img.naturalWidth < 96);
  img.src = url;
}

// -- the target search (a combobox over the model's labels) ------------------------------------

const norm = (s) => s.toLowerCase().replace(/['.]/g, "").split(/[^\p{L}\p{N}]+/u).filter(Boolean).join(" ");

function loadLabels(model) {
  // Once per model; the promise is kept, so that keystrokes during the load share it.
  if (!state.labels[model]) {
    state.labels[model] = api(`/api/labels?model=${encodeURIComponent(model)}`).then((out) =>
      out.labels.map((l) => ({ ...l, keys: [l.name, ...l.synonyms].map(norm) }))
    );
    state.labels[model].catch(() => delete state.labels[model]);
  }
  return state.labels[model];
}

function rank(labels, query) {
  // As trompe.labels.Labels.search: equal, whole words, word start, anywhere (typos: the server).
  const key = norm(query);
  const hits = [];
  for (const label of labels) {
    let best = 9;
    label.keys.forEach((term, i) => {
      let tier = term === key ? 0 : ` ${term} `.includes(` ${key} `) ? 1 : ` ${term}`.includes(` ${key}`) ? 2 : term.includes(key) ? 3 : 9;
      if (tier < 9) best = Math.min(best, tier * 2 + (i > 0 ? 1 : 0));
    });
    if (/^\d+$/.test(query.trim()) && label.index === +query.trim()) best = -1;
    if (best < 9) hits.push([best, label.index, label]);
  }
  hits.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return hits.map((h) => h[2]);
}

let searchTimer = 0;
async function search() {
  const input = $("target");
  const query = input.value;
  document.querySelector('input[name="goal"][value="target"]').checked = true;
  if (!query.trim()) return closeList();
  const model = $("model").value;
  let found;
  try {
    found = rank(await loadLabels(model), query).slice(0, 12);
  } catch (error) {
    return report(error);
  }
  if (input.value !== query) return; // a later keystroke has its own search
  showList(found);
  clearTimeout(searchTimer);
  if (found.length < 3 && norm(query).length >= 3) {
    // Typos: the server's fuzzy search ("pelcan" -> pelican).
    searchTimer = setTimeout(async () => {
      try {
        const out = await api(`/api/labels?model=${encodeURIComponent(model)}&q=${encodeURIComponent(query)}&limit=8`);
        if (input.value !== query || state.target) return; // typed on, or chosen meanwhile
        const seen = new Set(found.map((l) => l.index));
        showList(found.concat(out.labels.filter((l) => !seen.has(l.index))));
      } catch {
        /* suggestions are a bonus */
      }
    }, 150);
  }
}

function showList(found) {
  const list = $("target-list");
  const input = $("target");
  list.replaceChildren(
    ...found.map((label, i) => {
      const item = el("li", { id: `target-opt-${i}`, textContent: label.name });
      item.setAttribute("role", "option");
      item.dataset.index = label.index;
      item.dataset.name = label.name;
      const others = label.synonyms.filter((s) => norm(s) !== norm(label.name)).slice(0, 3);
      if (others.length) item.append(el("small", { textContent: " " + others.join(", ") }));
      item.addEventListener("mousedown", (e) => {
        e.preventDefault();
        pick(item);
      });
      return item;
    })
  );
  if (!found.length) list.append(el("li", { className: "none", textContent: "no class matches; check the spelling" }));
  list.hidden = false;
  input.setAttribute("aria-expanded", "true");
  move(found.length ? 0 : -1);
}

function closeList() {
  $("target-list").hidden = true;
  $("target").setAttribute("aria-expanded", "false");
  $("target").removeAttribute("aria-activedescendant");
}

function move(to) {
  const options = [...$("target-list").querySelectorAll('[role="option"]')];
  options.forEach((o, i) => o.setAttribute("aria-selected", String(i === to)));
  if (to >= 0 && options[to]) {
    $("target").setAttribute("aria-activedescendant", options[to].id);
    options[to].scrollIntoView({ block: "nearest" });
  }
}

function pick(option) {
  clearTimeout(searchTimer);
  state.target = { index: +option.dataset.index, name: option.dataset.name };
  $("target").value = option.dataset.name;
  $("target-chosen").textContent = `target: ${option.dataset.name} (class ${option.dataset.index})`;
  closeList();
}

function onSearchKey(event) {
  const list = $("target-list");
  const options = [...list.querySelectorAll('[role="option"]')];
  const current = options.findIndex((o) => o.getAttribute("aria-selected") === "true");
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    if (list.hidden) return search();
    const step = event.key === "ArrowDown" ? 1 : -1;
    move(Math.max(0, Math.min(options.length - 1, current + step)));
  } else if (event.key === "Enter" && !list.hidden) {
    event.preventDefault();
    if (current >= 0) pick(options[current]);
  } else if (event.key === "Escape") closeList();
}

// -- model, attack and its options ------------------------------------------------------------

function group(attack) {
  if (attack.access === "labels") return "Black-box: labels only";
  if (attack.access === "scores") return "Black-box: scores";
  if (attack.norms.length === 1 && attack.norms[0] === "l0") return "Sparse: a few pixels";
  if (attack.minimum_norm) return "Smallest change (no budget)";
  return "Gradient, within a budget";
}

function firstSentence(text) {
  // Up to the first "." or ";" outside parentheses: "(default 0.01, the paper's)" stays whole.
  const flat = (text || "").replace(/``/g, "").replace(/\s+/g, " ").trim();
  let depth = 0;
  for (let i = 0; i < flat.length; i++) {
    const c = flat[i];
    depth += c === "(" ? 1 : c === ")" && depth > 0 ? -1 : 0;
    if (!depth && (c === "." || c === ";") && (i + 1 === flat.length || flat[i + 1] === " ")) return flat.slice(0, i) + ".";
  }
  return flat;
}

function currentAttack() {
  return state.attacks.find((a) => a.name === $("attack").value);
}

function setAttack() {
  const attack = currentAttack();
  if (!attack) return;
  const blackBox = attack.access !== "gradients";
  const queries = attack.options.find((o) => o.name === "queries");
  $("attack-about").textContent =
    attack.summary +
    (blackBox ? `. Black-box: it only asks the model${queries && queries.default ? `, up to ${queries.default} queries` : ""}.` : ".");
  const normSelect = $("norm");
  normSelect.replaceChildren(...attack.norms.map((n) => el("option", { value: n, textContent: { linf: "L-inf", l2: "L2", l1: "L1", l0: "L0 (pixels)" }[n] })));
  $("norm-box").hidden = attack.norms.length < 2;
  setNorm();
  const box = $("options");
  box.replaceChildren();
  for (const option of attack.options) {
    const type = option.type;
    if (/tensor/i.test(type)) continue;
    const id = `o-${option.name}`;
    let input;
    const choices = type.match(/'[^']*'/g);
    if (type === "bool") {
      input = el("input", { type: "checkbox", id, checked: !!option.default });
    } else if (choices) {
      input = el("select", { id }, ...choices.map((c) => el("option", { textContent: c.slice(1, -1) })));
      input.value = option.default;
    } else if (!/int|float/.test(type)) {
      input = el("input", { type: "text", id, value: option.default ?? "" });
    } else {
      input = el("input", { type: "number", id, step: /^int/.test(type) ? "1" : "any" });
      if (option.max != null) input.max = option.max; // the server's cap (steps, queries)
      if (option.default !== null) input.value = option.default;
      else input.placeholder = "default";
    }
    input.dataset.field = option.name;
    input.dataset.option = type;
    input.dataset.default = JSON.stringify(option.default);
    const label = el("label", { className: type === "bool" ? "inline" : "" });
    if (type === "bool") label.append(input, " " + option.name);
    else label.append(option.name + " ", input);
    let line = firstSentence(option.help);
    if (line.length > 140) line = line.slice(0, line.lastIndexOf(" ", 139)) + "…";
    input.setAttribute("aria-describedby", `${id}-help`);
    box.append(label, el("small", { id: `${id}-help`, textContent: line, title: option.help || "" }));
  }
}

function setNorm() {
  const attack = currentAttack();
  const n = $("norm").value;
  const box = $("eps-box");
  box.hidden = attack.minimum_norm;
  const byNorm = attack.default_eps_by_norm || {};
  const eps = n in byNorm ? byNorm[n] : attack.default_eps; // API units; null: the server's
  const input = $("eps");
  const range = $("eps-range");
  input.placeholder = "default";
  if (eps == null) {
    input.value = "";
  } else if (n === "l0") {
    input.value = Math.round(eps);
  } else input.value = +(eps * 255).toFixed(2);
  if (n === "l0") {
    input.step = "1";
    input.max = "";
    $("eps-unit").textContent = "pixels changed at most";
  } else {
    input.step = "any";
    input.max = n === "linf" ? "255" : "";
    $("eps-unit").textContent = n === "linf" ? "pixel levels of 255, per value" : `${n.toUpperCase()} norm, in pixel levels of 255`;
  }
  range.hidden = n !== "linf";
  range.value = input.value;
}

// -- running a job ----------------------------------------------------------------------------

function jobForm() {
  const form = imageForm();
  const attack = currentAttack();
  form.append("attack", attack.name);
  if (attack.norms.length > 1) form.append("norm", $("norm").value);
  const goal = document.querySelector('input[name="goal"]:checked').value;
  state.goalName = "true class"; // untargeted: its probability falls
  if (goal === "target") {
    if (!state.target || state.target.name !== $("target").value) {
      const typed = $("target").value.trim();
      if (!typed) throw new Error("choose a target class in the search box, or choose 'any other class'");
      form.append("target", typed); // the server resolves names and synonyms, or says why not
      state.goalName = typed;
    } else {
      form.append("target", String(state.target.index));
      state.goalName = state.target.name;
    }
  }
  if (!attack.minimum_norm) {
    const value = $("eps").value.trim();
    const levels = $("norm").value === "linf";
    if (value !== "" && (!(+value >= 0) || (levels && +value > 255)))
      throw Object.assign(new Error(`eps must be a number from 0${levels ? " to 255 (pixel levels)" : ""}; change it and run again`), { field: "eps" });
    if (value !== "") form.append("eps", String($("norm").value === "l0" ? +value : +value / 255));
  }
  if ($("confidence").value !== "") form.append("confidence", $("confidence").value);
  if ($("min-eps").checked) form.append("min_eps", "true");
  form.append("resolution", $("resolution").value);
  const options = {};
  for (const input of $("options").querySelectorAll("[data-option]")) {
    const fallback = JSON.parse(input.dataset.default);
    let value = input.type === "checkbox" ? input.checked : input.value;
    if (input.type !== "checkbox" && value === "" && fallback === null) continue;
    if (input.type === "number") {
      if (value === "") continue;
      value = +value;
    }
    if (value !== fallback) options[input.dataset.field] = value;
  }
  form.append("options", JSON.stringify(options));
  return form;
}

async function run(event) {
  event.preventDefault();
  clearErrors();
  if (!state.image) return showError("choose a photo first (or a sample)");
  let form;
  try {
    form = jobForm();
  } catch (error) {
    return showError(error.message, error.field);
  }
  $("run").disabled = true;
  $("result").hidden = true;
  state.blackBox = currentAttack().access !== "gradients";
  try {
    const job = await api("/api/jobs", { method: "POST", body: form });
    follow(job);
  } catch (error) {
    $("run").disabled = false;
    report(error);
  }
}

function follow(job) {
  state.job = job;
  $("progress-box").dataset.job = job.id;
  $("cancel").hidden = false;
  $("cancel").disabled = false;
  $("progress-box").hidden = false;
  update(job);
  if (window.EventSource) {
    const source = new EventSource(job.urls.events);
    state.source = source;
    source.addEventListener("progress", (e) => update(JSON.parse(e.data)));
    source.addEventListener("end", (e) => {
      source.close();
      const end = JSON.parse(e.data);
      finish(end.id ? end : { ...job, status: "failed", error: "the job is no longer on the server (it expired); run it again" });
    });
    source.onerror = () => {
      // A proxy that buffers, or a dropped connection: ask every half second instead.
      source.close();
      if (state.job && state.job.id === job.id) pollJob(job);
    };
  } else pollJob(job);
}

function pollJob(job) {
  clearTimeout(state.poll);
  state.poll = setTimeout(async () => {
    if (!state.job || state.job.id !== job.id) return;
    try {
      const now = await api(job.urls.self);
      if (["done", "failed", "cancelled"].includes(now.status)) finish(now);
      else {
        update(now);
        pollJob(now);
      }
    } catch (error) {
      report(error);
      stopped();
    }
  }, 500);
}

function update(job) {
  const p = job.progress || {};
  const bar = $("progress");
  let text;
  if (job.status === "queued") {
    bar.removeAttribute("value");
    text = job.position ? `waiting: ${job.position} job${job.position > 1 ? "s" : ""} ahead` : "starting…";
  } else {
    const steps = p.steps || 0;
    if (steps) {
      bar.max = steps;
      bar.value = Math.min(p.step || 0, steps);
    } else bar.removeAttribute("value");
    const goal = `${state.goalName || "goal"} `;
    text = [
      job.status,
      steps ? `step ${p.step || 0}/${steps}` : "",
      p.goal_prob != null ? `${goal}${pct(p.goal_prob)}` : "",
      p.total ? `images ${p.done || 0}/${p.total}` : "",
    ].filter(Boolean).join(" · ");
  }
  say(text, job.status);
}

let spoken = { at: 0, status: "" };
function say(text, status) {
  // Every step on screen; for a screen reader, changes of status and at most one line in 3 s.
  $("progress-text").textContent = text;
  const now = Date.now();
  if (status !== spoken.status || now - spoken.at > 3000) {
    $("progress-live").textContent = text;
    spoken = { at: now, status };
  }
}

function stopped() {
  clearTimeout(state.poll);
  if (state.source) state.source.close();
  state.source = null;
  state.job = null;
  $("run").disabled = false;
  $("cancel").hidden = true;
}

function finish(job) {
  stopped();
  const bar = $("progress");
  bar.max = 1;
  bar.value = job.status === "done" ? 1 : 0;
  if (job.status === "done") {
    const took = job.seconds != null ? ` in ${job.seconds.toFixed(1)} s` : "";
    say(`done${took}: the attack, its files and the check of the saved PNG`, "done");
    showResult(job);
  } else if (job.status === "cancelled") {
    say("cancelled", "cancelled");
  } else {
    say("failed", "failed");
    showError(job.error || "the attack failed");
  }
}

async function cancel() {
  const job = state.job;
  if (!job) return;
  $("cancel").disabled = true;
  say("cancelling…", "cancelling");
  try {
    const now = await api(job.urls.self, { method: "DELETE" });
    if (["done", "failed", "cancelled"].includes(now.status)) finish(now);
    else if (!state.source) pollJob(now); // the stream, if open, ends with the cancelled job
  } catch (error) {
    report(error);
  }
}

// -- the result -------------------------------------------------------------------------------

const loadImage = (url) =>
  new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`the image ${url} could not be loaded`));
    img.src = url;
  });

async function showResult(job) {
  const r = job.result;
  const files = job.files;
  const goal = r.goal.class;
  $("verdict").textContent = r.success
    ? `${r.goal.targeted ? "the model now sees " + r.goal.class_name : "the model changed its mind"}`
    : "the goal was not reached";
  $("verdict").className = r.success ? "ok" : "bad";
  bars($("top-before"), r.before.top5, goal);
  bars($("top-after"), r.after.top5, r.goal.targeted ? goal : -1);
  const n = r.norms;
  const rows = [
    ["L-inf", `${n.linf_255.toFixed(0)} / 255`],
    ["L2 (0-255)", n.l2_255.toFixed(1)],
    ["PSNR", n.psnr_db == null ? "∞" : `${n.psnr_db.toFixed(1)} dB`],
    ["pixels changed", String(n.l0_pixels)],
    ["steps", String(r.steps)],
    ["attack time", `${r.seconds.toFixed(2)} s`],
  ];
  if (state.blackBox) rows.push(["queries", String(r.queries)]);
  $("metrics").replaceChildren(...rows.map(([k, v]) => el("div", {}, el("dt", { textContent: k }), el("dd", { textContent: v }))));
  const v = r.verified_on_png;
  $("verified").textContent = v
    ? `Checked on the saved PNG: top-1 ${v.top1.label} (${pct(v.top1.prob)}), ${v.success ? "goal met" : "goal not met"}${v.agrees_with_result ? "" : " (differs from the attack's own check)"}.`
    : "";
  $("verified").className = v && v.success ? "ok" : "";
  $("dl-adv").href = files["adversarial.png"] + "?download=1";
  $("dl-report").href = files["report.png"] + "?download=1";
  $("dl-json").href = files["result.json"] + "?download=1";
  try {
    const [orig, adv] = await Promise.all([loadImage(files["original.png"]), loadImage(files["adversarial.png"])]);
    state.pair = { orig, adv };
    for (const [id, url] of [["r-original", orig.src], ["r-adversarial", adv.src]]) pixelated($(id), url);
    setFlip(false);
    perturbation();
  } catch (error) {
    showError(error.message);
  }
  $("result").hidden = false;
  const still = matchMedia("(prefers-reduced-motion: reduce)").matches;
  $("result").scrollIntoView({ behavior: still ? "auto" : "smooth", block: "start" });
}

function pixels(img, width, height) {
  const canvas = el("canvas", { width, height });
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, width, height);
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

function perturbation() {
  if (!state.pair) return;
  const k = +$("amp").value;
  $("amp-value").textContent = k;
  const { orig, adv } = state.pair;
  if (!state.pair.data) state.pair.data = [orig, adv].map((img) => pixels(img, adv.naturalWidth, adv.naturalHeight));
  const [a, b] = state.pair.data;
  const canvas = $("r-perturbation");
  canvas.width = a.width;
  canvas.height = a.height;
  canvas.classList.toggle("pixelated", a.width < 96);
  const out = new ImageData(a.width, a.height);
  for (let i = 0; i < a.data.length; i += 4) {
    for (let c = 0; c < 3; c++) out.data[i + c] = 128 + k * (b.data[i + c] - a.data[i + c]); // clamped
    out.data[i + 3] = 255;
  }
  canvas.getContext("2d").putImageData(out, 0, 0);
}

function setFlip(showOriginal) {
  if (!state.pair) return;
  $("r-adversarial").src = (showOriginal ? state.pair.orig : state.pair.adv).src;
  $("adv-caption").textContent = showOriginal ? "original (flipped)" : "adversarial";
  $("flip").setAttribute("aria-pressed", String(showOriginal));
}

// -- start ------------------------------------------------------------------------------------

async function changeModel() {
  state.target = null;
  $("target-chosen").textContent = "";
  closeList();
  classify();
  try {
    await loadLabels($("model").value);
    if ($("target").value) search();
  } catch (error) {
    report(error);
  }
}

async function start() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    chooseFile(e.dataTransfer.files[0]);
  });
  $("target").addEventListener("input", () => {
    state.target = null;
    $("target-chosen").textContent = "";
    search();
  });
  $("target").addEventListener("keydown", onSearchKey);
  $("target").addEventListener("blur", () => setTimeout(closeList, 100));
  $("model").addEventListener("change", changeModel);
  $("attack").addEventListener("change", setAttack);
  $("norm").addEventListener("change", setNorm);
  $("eps-range").addEventListener("input", () => ($("eps").value = $("eps-range").value));
  $("eps").addEventListener("input", () => ($("eps-range").value = $("eps").value));
  $("form").addEventListener("submit", run);
  $("cancel").addEventListener("click", cancel);
  $("amp").addEventListener("input", perturbation);
  $("flip").addEventListener("click", () => setFlip($("flip").getAttribute("aria-pressed") !== "true"));
  const adv = $("r-adversarial");
  adv.addEventListener("pointerdown", () => setFlip(true));
  for (const name of ["pointerup", "pointerleave", "pointercancel"]) adv.addEventListener(name, () => setFlip(false));

  try {
    const [models, attacks, samples] = await Promise.all([api("/api/models"), api("/api/attacks"), api("/api/samples")]);
    $("model").replaceChildren(
      ...models.models.map((m) => el("option", { value: m.name, textContent: m.name + (m.installed === false ? " (not installed)" : ""), disabled: m.installed === false, title: m.description || "" }))
    );
    $("model").value = models.default;
    state.attacks = attacks.attacks;
    const groups = new Map();
    for (const a of attacks.attacks) {
      const name = group(a);
      if (!groups.has(name)) groups.set(name, el("optgroup", { label: name }));
      groups.get(name).append(el("option", { value: a.name, textContent: `${a.name}: ${a.summary.split(/[,:(]/)[0].trim()}` }));
    }
    $("attack").replaceChildren(...groups.values());
    $("attack").value = attacks.default;
    setAttack();
    $("samples").replaceChildren(
      ...samples.samples.map((s) => {
        // Text, not thumbnails: the samples are whole photos (700 kB for two), fetched on a click.
        const button = el("button", { type: "button", className: "sample", textContent: s.name });
        button.addEventListener("click", () => choose({ sample: s.name }, s.url));
        return button;
      })
    );
    await loadLabels(models.default);
  } catch (error) {
    report(error);
  }
  document.body.dataset.ready = "true";
}

start();
