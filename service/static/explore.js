// The embedding explorer: one column's categories as points of a 2-D projection, drawn on a canvas.
//
// Data: GET metadata (the embedded columns), GET explore/data/{column} (points: category, kind, count,
// x, y), GET embeddings/{column}/{value}/neighbors (the neighbours listed on a click). URLs are relative
// to the page, so it also works behind a path prefix. With an API key, the page sends it as X-API-Key:
// it comes from the key field, or once from the address (#key=...), and is kept for the browser tab only.
"use strict";

(() => {
  const KEY_STORE = "embedkit.apiKey";
  const RAMP = ["#c6dbef", "#6baed6", "#2171b5", "#08306b"]; // the legend's gradient, light to dark
  const N_BINS = 24; // colour classes: one canvas path each, so 10,000 points are 24 fills
  const R_MIN = 1.8, R_MAX = 6.5; // point radius in CSS pixels, by count
  const HIT_SLOP = 4; // pixels around a point that still hover it
  const N_TOP_LABELS = 12; // the most frequent categories are labelled (when "labels" is on)
  const COLORS = {
    missing: "#d9480f", unknown: "#ae3ec9", selected: "#111111", neighbor: "#e8590c",
    link: "rgba(232, 89, 12, 0.35)", label: "#1f2328",
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    model: $("model"), keyForm: $("key-form"), key: $("key"), keyMessage: $("key-message"),
    column: $("column"), columnInfo: $("column-info"), search: $("search"), matches: $("matches"),
    selected: $("selected"), selectedInfo: $("selected-info"), k: $("k"), neighbors: $("neighbors"),
    countMin: $("count-min"), countMax: $("count-max"), plot: $("plot"), points: $("points"),
    overlay: $("overlay"), tooltip: $("tooltip"), labels: $("labels"), reset: $("reset"),
    status: $("status"), message: $("message"),
  };
  const fmt = new Intl.NumberFormat("en-US");
  const pct = new Intl.NumberFormat("en-US", { style: "percent", maximumFractionDigits: 1 });

  // ---- state --------------------------------------------------------------------------------------
  let apiKey = sessionStorage.getItem(KEY_STORE) || "";
  let columns = []; // [{name, dim, rows}]
  let d = null; // the column's points (see loadColumn)
  let view = { scale: 1, tx: 0, ty: 0 }; // screen = (x * scale + tx, -y * scale + ty), CSS pixels
  let size = { w: 0, h: 0, dpr: 1 };
  let hover = -1, selected = -1, neighbors = []; // neighbors: [{category, similarity, index}]
  let selectToken = 0;
  let lastDrawMs = 0;

  // ---- requests -----------------------------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(path) {
    const headers = apiKey ? { "X-API-Key": apiKey } : {};
    const r = await fetch(path, { headers });
    if (r.ok) return r.json();
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
    if (r.status === 401) askForKey(apiKey ? "that key was refused" : "");
    throw new HttpError(r.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }

  function askForKey(why) {
    el.keyForm.hidden = false;
    el.keyMessage.textContent = why;
    el.key.focus();
  }

  function takeKeyFromAddress() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (params.has("key")) {
      apiKey = params.get("key");
      sessionStorage.setItem(KEY_STORE, apiKey);
      params.delete("key");
      history.replaceState(null, "", location.pathname + location.search + (params.toString() ? "#" + params : ""));
    }
    return params;
  }

  function remember() {
    const params = new URLSearchParams();
    if (d) params.set("column", d.column);
    if (d && selected >= 0 && d.kind[selected] === "value") params.set("value", d.label[selected]);
    history.replaceState(null, "", location.pathname + location.search + (params.toString() ? "#" + params : ""));
  }

  function showMessage(text) {
    el.message.textContent = text;
    el.message.hidden = !text;
  }

  // ---- start --------------------------------------------------------------------------------------
  async function start() {
    const wanted = takeKeyFromAddress();
    let meta;
    try {
      meta = await api("metadata");
    } catch (e) {
      if (e.status === 503) {
        showMessage("The model is loading; trying again in a few seconds…");
        setTimeout(start, 2000);
      } else {
        showMessage(e.status === 401 ? "This service needs its API key: enter it above." : "Cannot read the model: " + e.message);
      }
      return;
    }
    el.keyForm.hidden = true;
    el.model.textContent = `${meta.model.name} · version ${meta.model.version}`;
    columns = meta.embeddings;
    if (!columns.length) {
      showMessage("This model has no embedding tables.");
      return;
    }
    el.column.replaceChildren(...columns.map((c) => new Option(`${c.name}  (${fmt.format(c.rows - 2)})`, c.name)));
    el.column.disabled = false;
    const first = columns.find((c) => c.name === wanted.get("column")) || columns[0];
    el.column.value = first.name;
    await loadColumn(first.name, wanted.get("value"));
  }

  async function loadColumn(name, value) {
    showMessage(`Loading ${name}…`);
    let r;
    try {
      r = await api(`explore/data/${encodeURIComponent(name)}`);
    } catch (e) {
      showMessage(`Cannot load ${name}: ${e.message}`);
      return;
    }
    const n = r.x.length;
    const x = Float64Array.from(r.x), y = Float64Array.from(r.y);
    const label = r.category.map((c, i) => (c === null ? r.kind[i] : String(c)));
    let maxCount = 1, minCount = Infinity;
    for (let i = 0; i < n; i++) {
      if (r.kind[i] !== "value") continue;
      maxCount = Math.max(maxCount, r.count[i]);
      minCount = Math.min(minCount, r.count[i]);
    }
    // colour and size follow log(count), from the rarest category shown to the most frequent (the legend)
    if (!Number.isFinite(minCount)) minCount = 0;
    const t = new Float64Array(n), radius = new Float64Array(n), bin = new Int32Array(n);
    const lmin = Math.log1p(minCount), span = Math.log1p(maxCount) - lmin;
    for (let i = 0; i < n; i++) {
      t[i] = span > 0 ? Math.min(1, Math.max(0, (Math.log1p(r.count[i]) - lmin) / span)) : 0.5;
      radius[i] = R_MIN + (R_MAX - R_MIN) * Math.sqrt(t[i]);
      bin[i] = Math.min(N_BINS - 1, Math.floor(t[i] * N_BINS));
    }
    const values = [];
    for (let i = 0; i < n; i++) if (r.kind[i] === "value") values.push(i);
    const byCount = values.slice().sort((a, b) => r.count[b] - r.count[a] || a - b);
    const rank = new Int32Array(n);
    byCount.forEach((i, pos) => { rank[i] = pos + 1; });
    // paint order: rare first, so that frequent categories stay on top
    const order = values.slice().sort((a, b) => bin[a] - bin[b] || a - b);
    d = {
      column: r.column, dim: r.dim, categories: r.categories, shown: r.shown, explained: r.explained_variance,
      n, x, y, label, lower: label.map((s) => s.toLowerCase()), kind: r.kind, count: r.count,
      radius, bin, rank, order, byCount, index: new Map(values.map((i) => [label[i], i])),
      minCount, maxCount,
    };
    buildGrid();
    hover = -1; selected = -1; neighbors = [];
    el.countMin.textContent = fmt.format(d.minCount);
    el.countMax.textContent = fmt.format(d.maxCount);
    el.columnInfo.textContent =
      `${fmt.format(d.categories)} categories` +
      (d.shown < d.categories ? ` (the ${fmt.format(d.shown)} most frequent shown)` : "") +
      ` · ${d.dim} dimensions`;
    el.status.textContent =
      `PCA of the category vectors: x explains ${pct.format(d.explained[0])}, y ${pct.format(d.explained[1])} ` +
      "of the variance · scroll to zoom, drag to pan";
    el.search.disabled = false;
    el.search.value = "";
    showMatches();
    clearSelection();
    showMessage("");
    fitView();
    if (value && d.index.has(value)) select(d.index.get(value), { center: true });
    else remember();
  }

  // ---- geometry -----------------------------------------------------------------------------------
  function resize() {
    const rect = el.plot.getBoundingClientRect();
    size = { w: rect.width, h: rect.height, dpr: window.devicePixelRatio || 1 };
    for (const c of [el.points, el.overlay]) {
      c.width = Math.max(1, Math.round(size.w * size.dpr));
      c.height = Math.max(1, Math.round(size.h * size.dpr));
    }
    if (d && !d.fitted) fitView();
    else draw();
  }

  function fitView() {
    if (!d) return;
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < d.n; i++) {
      x0 = Math.min(x0, d.x[i]); x1 = Math.max(x1, d.x[i]);
      y0 = Math.min(y0, d.y[i]); y1 = Math.max(y1, d.y[i]);
    }
    const pad = 28;
    const sx = (size.w - 2 * pad) / Math.max(x1 - x0, 1e-12);
    const sy = (size.h - 2 * pad) / Math.max(y1 - y0, 1e-12);
    const scale = Math.max(Math.min(sx, sy), 1e-12);
    view = { scale, tx: size.w / 2 - scale * (x0 + x1) / 2, ty: size.h / 2 + scale * (y0 + y1) / 2 };
    d.fitted = size.w > 0 && size.h > 0; // else the first resize fits it
    draw();
  }

  const sx = (i) => d.x[i] * view.scale + view.tx;
  const sy = (i) => -d.y[i] * view.scale + view.ty;

  // A uniform grid over the data bounds: hover and click look only at the cells near the pointer.
  function buildGrid() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < d.n; i++) {
      x0 = Math.min(x0, d.x[i]); x1 = Math.max(x1, d.x[i]);
      y0 = Math.min(y0, d.y[i]); y1 = Math.max(y1, d.y[i]);
    }
    const g = Math.max(1, Math.ceil(Math.sqrt(d.n / 4)));
    const cw = Math.max(x1 - x0, 1e-12) / g, ch = Math.max(y1 - y0, 1e-12) / g;
    const cells = Array.from({ length: g * g }, () => []);
    const cell = (v, lo, w) => Math.min(g - 1, Math.max(0, Math.floor((v - lo) / w)));
    for (let i = 0; i < d.n; i++) cells[cell(d.y[i], y0, ch) * g + cell(d.x[i], x0, cw)].push(i);
    d.grid = { g, x0, y0, cw, ch, cells, cell };
  }

  function pick(px, py) {
    if (!d) return -1;
    const { g, x0, y0, cw, ch, cells, cell } = d.grid;
    const reach = (R_MAX + HIT_SLOP) / view.scale; // in data units
    const dx = (px - view.tx) / view.scale, dy = -(py - view.ty) / view.scale;
    const cx0 = cell(dx - reach, x0, cw), cx1 = cell(dx + reach, x0, cw);
    const cy0 = cell(dy - reach, y0, ch), cy1 = cell(dy + reach, y0, ch);
    let best = -1, bestD = Infinity;
    for (let cy = cy0; cy <= cy1; cy++) {
      for (let cx = cx0; cx <= cx1; cx++) {
        for (const i of cells[cy * g + cx]) {
          const dist = Math.hypot(sx(i) - px, sy(i) - py);
          if (dist <= d.radius[i] + HIT_SLOP && dist < bestD) { best = i; bestD = dist; }
        }
      }
    }
    return best;
  }

  // ---- drawing ------------------------------------------------------------------------------------
  const palette = Array.from({ length: N_BINS }, (_, b) => rampColor((b + 0.5) / N_BINS));

  function rampColor(t) {
    const pos = t * (RAMP.length - 1), i = Math.min(RAMP.length - 2, Math.floor(pos)), f = pos - i;
    const a = hex(RAMP[i]), b = hex(RAMP[i + 1]);
    return `rgba(${a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(",")},0.78)`;
  }

  function hex(h) {
    return [1, 3, 5].map((o) => parseInt(h.slice(o, o + 2), 16));
  }

  function context(canvas) {
    const ctx = canvas.getContext("2d");
    ctx.setTransform(size.dpr, 0, 0, size.dpr, 0, 0);
    ctx.clearRect(0, 0, size.w, size.h);
    return ctx;
  }

  let drawQueued = false;
  function draw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => { drawQueued = false; drawPoints(); drawOverlay(); });
  }

  function drawPoints() {
    const started = performance.now();
    const ctx = context(el.points);
    if (!d) return;
    const { w, h } = size;
    let b = -1;
    for (const i of d.order) { // grouped by colour class: one path and one fill per class
      const x = sx(i), y = sy(i), r = d.radius[i];
      if (x < -r || y < -r || x > w + r || y > h + r) continue;
      if (d.bin[i] !== b) {
        if (b >= 0) ctx.fill();
        b = d.bin[i];
        ctx.fillStyle = palette[b];
        ctx.beginPath();
      }
      ctx.moveTo(x + r, y);
      ctx.arc(x, y, r, 0, 2 * Math.PI);
    }
    if (b >= 0) ctx.fill();
    // the reserved rows: marked, and always named
    ctx.lineWidth = 2;
    ctx.font = "600 12px system-ui, sans-serif";
    for (let i = 0; i < d.n; i++) {
      if (d.kind[i] === "value") continue;
      const x = sx(i), y = sy(i), color = COLORS[d.kind[i]];
      ctx.strokeStyle = color;
      ctx.beginPath();
      if (d.kind[i] === "missing") {
        ctx.moveTo(x - 6, y - 6); ctx.lineTo(x + 6, y + 6); ctx.moveTo(x + 6, y - 6); ctx.lineTo(x - 6, y + 6);
      } else {
        ctx.moveTo(x, y - 7); ctx.lineTo(x + 7, y); ctx.lineTo(x, y + 7); ctx.lineTo(x - 7, y); ctx.closePath();
      }
      ctx.stroke();
      // the two reserved rows often lie close together: "missing" is named on the left, "unknown" on the right
      const left = d.kind[i] === "missing";
      ctx.textAlign = left ? "right" : "left";
      haloText(ctx, d.kind[i], left ? x - 10 : x + 10, y + 4, color);
      ctx.textAlign = "left";
    }
    lastDrawMs = performance.now() - started;
  }

  function drawOverlay() {
    const ctx = context(el.overlay);
    if (!d) return;
    const placed = [];
    ctx.font = "12px system-ui, sans-serif";
    if (el.labels.checked && selected < 0) {
      for (const i of d.byCount.slice(0, N_TOP_LABELS)) label(ctx, i, COLORS.label, placed);
    }
    if (selected >= 0) {
      ctx.strokeStyle = COLORS.link;
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (const nb of neighbors) {
        if (nb.index < 0) continue;
        ctx.moveTo(sx(selected), sy(selected));
        ctx.lineTo(sx(nb.index), sy(nb.index));
      }
      ctx.stroke();
      ctx.lineWidth = 2;
      for (const nb of neighbors) if (nb.index >= 0) ring(ctx, nb.index, COLORS.neighbor, 2);
      ring(ctx, selected, COLORS.selected, 3);
      ctx.font = "600 13px system-ui, sans-serif";
      label(ctx, selected, COLORS.selected, placed, true);
      ctx.font = "12px system-ui, sans-serif";
      if (el.labels.checked) for (const nb of neighbors) if (nb.index >= 0) label(ctx, nb.index, COLORS.neighbor, placed);
    }
    if (hover >= 0 && hover !== selected) {
      ctx.lineWidth = 1.5;
      ring(ctx, hover, COLORS.selected, 2);
    }
  }

  function ring(ctx, i, color, gap) {
    ctx.strokeStyle = color;
    ctx.beginPath();
    ctx.arc(sx(i), sy(i), d.radius[i] + gap, 0, 2 * Math.PI);
    ctx.stroke();
  }

  function label(ctx, i, color, placed, force) {
    const text = d.label[i].length > 28 ? d.label[i].slice(0, 27) + "…" : d.label[i];
    const x = sx(i) + d.radius[i] + 4, y = sy(i) + 4, wdt = ctx.measureText(text).width;
    const box = [x - 2, y - 12, x + wdt + 2, y + 3];
    if (!force && placed.some((p) => box[0] < p[2] && box[2] > p[0] && box[1] < p[3] && box[3] > p[1])) return;
    if (box[2] < 0 || box[0] > size.w || box[3] < 0 || box[1] > size.h) return;
    placed.push(box);
    haloText(ctx, text, x, y, color);
  }

  function haloText(ctx, text, x, y, color) {
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(255,255,255,0.9)";
    ctx.strokeText(text, x, y);
    ctx.fillStyle = color;
    ctx.fillText(text, x, y);
  }

  // ---- hover, click, pan and zoom -----------------------------------------------------------------
  function describe(i) {
    if (d.kind[i] === "missing") return `${fmt.format(d.count[i])} empty values in training`;
    if (d.kind[i] === "unknown") return `${fmt.format(d.count[i])} rare values folded in during training`;
    return `count ${fmt.format(d.count[i])} · rank ${fmt.format(d.rank[i])} of ${fmt.format(d.categories)}`;
  }

  function showTooltip(i, px, py) {
    if (i < 0) { el.tooltip.hidden = true; return; }
    el.tooltip.replaceChildren();
    const name = document.createElement("b");
    name.textContent = d.kind[i] === "value" ? d.label[i] : d.kind[i];
    el.tooltip.append(name, document.createElement("br"), describe(i));
    el.tooltip.hidden = false;
    const tw = el.tooltip.offsetWidth, th = el.tooltip.offsetHeight;
    el.tooltip.style.left = `${Math.min(px + 14, size.w - tw - 4)}px`;
    el.tooltip.style.top = `${py + 16 + th > size.h ? py - th - 10 : py + 16}px`;
  }

  function pointer(e) {
    const rect = el.overlay.getBoundingClientRect();
    return [e.clientX - rect.left, e.clientY - rect.top];
  }

  let drag = null;
  el.overlay.addEventListener("pointerdown", (e) => {
    const [px, py] = pointer(e);
    drag = { px, py, tx: view.tx, ty: view.ty, moved: false };
    el.overlay.setPointerCapture(e.pointerId);
  });
  el.overlay.addEventListener("pointermove", (e) => {
    const [px, py] = pointer(e);
    if (drag && (drag.moved || Math.hypot(px - drag.px, py - drag.py) > 3)) {
      drag.moved = true;
      el.overlay.classList.add("dragging");
      view.tx = drag.tx + px - drag.px;
      view.ty = drag.ty + py - drag.py;
      el.tooltip.hidden = true;
      draw();
      return;
    }
    const i = pick(px, py);
    if (i !== hover) { hover = i; draw(); }
    showTooltip(i, px, py);
  });
  el.overlay.addEventListener("pointerup", (e) => {
    const [px, py] = pointer(e);
    const wasClick = drag && !drag.moved;
    drag = null;
    el.overlay.classList.remove("dragging");
    if (!wasClick) return;
    const i = pick(px, py);
    if (i >= 0) select(i);
    else clearSelection();
  });
  el.overlay.addEventListener("pointerleave", () => {
    if (hover >= 0) { hover = -1; draw(); }
    el.tooltip.hidden = true;
  });
  el.overlay.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [px, py] = pointer(e);
    const f = Math.exp(-e.deltaY * 0.0015);
    view = { scale: view.scale * f, tx: px - (px - view.tx) * f, ty: py - (py - view.ty) * f };
    el.tooltip.hidden = true;
    draw();
  }, { passive: false });
  el.overlay.addEventListener("keydown", (e) => { if (e.key === "Escape") clearSelection(); });
  el.reset.addEventListener("click", fitView);
  el.labels.addEventListener("change", draw);
  new ResizeObserver(resize).observe(el.plot);

  // ---- selection and neighbours -------------------------------------------------------------------
  function clearSelection() {
    selected = -1; neighbors = []; selectToken++;
    el.selected.textContent = "Neighbours";
    el.selected.title = "";
    el.selectedInfo.textContent = "Click a point, or find a category, to list its nearest neighbours by cosine similarity.";
    el.neighbors.replaceChildren();
    if (d) remember();
    draw();
  }

  async function select(i, { center = false } = {}) {
    selected = i; neighbors = [];
    const token = ++selectToken;
    if (center) {
      const x = sx(i), y = sy(i);
      if (x < 40 || y < 40 || x > size.w - 40 || y > size.h - 40) {
        view.tx += size.w / 2 - x;
        view.ty += size.h / 2 - y;
      }
    }
    el.selected.textContent = d.kind[i] === "value" ? d.label[i] : d.kind[i];
    el.selected.title = el.selected.textContent;
    el.selectedInfo.textContent = describe(i);
    el.neighbors.replaceChildren();
    remember();
    draw();
    if (d.kind[i] !== "value") {
      el.selectedInfo.textContent += ". Neighbours are listed for categories; this is a reserved row.";
      return;
    }
    const column = d.column;
    let r;
    try {
      r = await api(`embeddings/${encodeURIComponent(column)}/${encodeURIComponent(d.label[i])}/neighbors?k=${el.k.value}`);
    } catch (e) {
      if (token === selectToken) el.selectedInfo.textContent = "Cannot list the neighbours: " + e.message;
      return;
    }
    if (token !== selectToken || !d || d.column !== column) return; // another selection came meanwhile
    neighbors = r.neighbors.map((nb) => ({ ...nb, index: d.index.has(String(nb.category)) ? d.index.get(String(nb.category)) : -1 }));
    el.neighbors.replaceChildren(...neighbors.map(neighborItem));
    draw();
  }

  function neighborItem(nb) {
    const li = document.createElement("li");
    const name = document.createElement("button");
    name.type = "button";
    name.className = "name";
    name.textContent = String(nb.category);
    name.title = nb.index >= 0 ? `${nb.category}: ${describe(nb.index)}` : `${nb.category} (not among the points shown)`;
    if (nb.index >= 0) name.addEventListener("click", () => select(nb.index, { center: true }));
    else name.disabled = true;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(0, nb.similarity) * 70}px`;
    const sim = document.createElement("span");
    sim.className = "sim";
    sim.textContent = nb.similarity.toFixed(3);
    li.append(name, bar, sim);
    return li;
  }

  el.k.addEventListener("change", () => { if (selected >= 0) select(selected); });
  el.column.addEventListener("change", () => loadColumn(el.column.value));

  // ---- search -------------------------------------------------------------------------------------
  const MAX_MATCHES = 30;
  let matches = [], active = 0;

  function findMatches(q) {
    const prefix = [], inside = [];
    for (let i = 0; i < d.n; i++) {
      if (d.kind[i] !== "value") continue;
      const at = d.lower[i].indexOf(q);
      if (at === 0) prefix.push(i);
      else if (at > 0) inside.push(i);
    }
    const byCount = (a, b) => d.count[b] - d.count[a] || a - b;
    return [...prefix.sort(byCount), ...inside.sort(byCount)];
  }

  function showMatches() {
    const q = el.search.value.trim().toLowerCase();
    if (!d || !q) { el.matches.hidden = true; matches = []; return; }
    const all = findMatches(q);
    matches = all.slice(0, MAX_MATCHES);
    active = 0;
    const items = matches.map((i, pos) => {
      const li = document.createElement("li");
      li.setAttribute("role", "option");
      li.className = pos === active ? "active" : "";
      const name = document.createElement("span");
      name.textContent = d.label[i];
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = fmt.format(d.count[i]);
      li.append(name, count);
      li.addEventListener("mousedown", (e) => { e.preventDefault(); choose(i); });
      return li;
    });
    if (!all.length) items.push(Object.assign(document.createElement("li"), { className: "more", textContent: "no category matches" }));
    else if (all.length > matches.length) {
      items.push(Object.assign(document.createElement("li"), { className: "more", textContent: `${fmt.format(all.length - matches.length)} more…` }));
    }
    el.matches.replaceChildren(...items);
    el.matches.hidden = false;
  }

  function choose(i) {
    el.search.value = d.label[i];
    el.matches.hidden = true;
    select(i, { center: true });
  }

  el.search.addEventListener("input", showMatches);
  el.search.addEventListener("keydown", (e) => {
    if (!matches.length) return;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      active = (active + (e.key === "ArrowDown" ? 1 : matches.length - 1)) % matches.length;
      [...el.matches.children].forEach((li, pos) => li.classList.toggle("active", pos === active));
    } else if (e.key === "Enter") {
      e.preventDefault();
      choose(matches[active]);
    } else if (e.key === "Escape") {
      el.matches.hidden = true;
    }
  });
  el.search.addEventListener("blur", () => { el.matches.hidden = true; });
  el.search.addEventListener("focus", showMatches);

  el.keyForm.addEventListener("submit", (e) => {
    e.preventDefault();
    apiKey = el.key.value.trim();
    sessionStorage.setItem(KEY_STORE, apiKey);
    // the page itself is behind the key too: the cookie lets a reload open it
    document.cookie = "embedkit_api_key=" + encodeURIComponent(apiKey) + "; path=" + location.pathname + "; SameSite=Strict";
    el.key.value = "";
    start();
  });

  // For tests and the curious (in the browser console): where a category is drawn, and draw times.
  window.embedkitExplorer = {
    column: () => d && d.column,
    pointAt(category) {
      const i = d ? d.index.get(String(category)) : undefined;
      if (i === undefined) return null;
      const rect = el.overlay.getBoundingClientRect();
      return { x: rect.left + sx(i), y: rect.top + sy(i) };
    },
    drawMs: () => lastDrawMs,
  };

  start();
})();
