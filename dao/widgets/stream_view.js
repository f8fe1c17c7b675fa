// dao StreamView: draws the frames the kernel sends (binary buffers) on a canvas and
// acknowledges each one, so that the kernel never has more than two frames in flight.

const TYPED = {
  uint8: Uint8Array, int8: Int8Array, uint16: Uint16Array, int16: Int16Array,
  uint32: Uint32Array, int32: Int32Array, float32: Float32Array, float64: Float64Array,
};
const SERIES_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f"];

function lut(hexes) {
  const out = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const h = hexes[Math.round((i * (hexes.length - 1)) / 255)] || "#000000";
    out[3 * i] = parseInt(h.slice(1, 3), 16);
    out[3 * i + 1] = parseInt(h.slice(3, 5), 16);
    out[3 * i + 2] = parseInt(h.slice(5, 7), 16);
  }
  return out;
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(3);
  return v.toPrecision(4);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function render({ model, el: root }) {
  root.classList.add("dao-view");
  const bar = el("div", "dao-view-bar");
  const title = el("span", "dao-view-title");
  const scale = el("select", "dao-view-scale");
  for (const s of ["linear", "log"]) scale.append(new Option(s, s));
  const autoLabel = el("label", "dao-view-auto");
  const auto = el("input");
  auto.type = "checkbox";
  autoLabel.append(auto, " auto");
  const vmin = el("input", "dao-view-vmin");
  const vmax = el("input", "dao-view-vmax");
  for (const v of [vmin, vmax]) { v.type = "number"; v.step = "any"; }
  const cmap = el("select", "dao-view-cmap");
  const freeze = el("button", "dao-view-freeze", "Freeze");
  const back = el("button", "dao-view-back", "\u25C0");
  const fwd = el("button", "dao-view-fwd", "\u25B6");
  back.title = "one frame back in the FIFO";
  fwd.title = "one frame forward";
  const slider = el("input", "dao-view-offset");
  slider.type = "range";
  slider.min = "0";
  slider.title = "frames back from the frame shown when frozen";
  const clear = el("button", "dao-view-clear", "Clear");
  clear.title = "remove the region and the cross";
  const bar2 = el("div", "dao-view-bar");
  bar.append(title, freeze, back, slider, fwd, clear);
  bar2.append(scale, autoLabel, vmin, vmax, cmap);
  const canvas = el("canvas", "dao-view-canvas");
  const status = el("div", "dao-view-status");
  const count = el("span", "dao-view-count", "0");
  const statusText = el("span", "dao-view-status-text", " waiting for frames");
  status.append("frame ", count, statusText);
  const region = el("div", "dao-view-region");
  const note = el("div", "dao-view-note");
  root.append(bar, bar2, canvas, status, region, note);

  const ctx = canvas.getContext("2d");
  const off = document.createElement("canvas");
  const offCtx = off.getContext("2d");
  let last = null; // {meta, data}
  let luts = {};
  let drag = null;

  function syncControls() {
    title.textContent = model.get("title");
    scale.value = model.get("scale");
    auto.checked = model.get("autoscale");
    vmin.value = model.get("vmin");
    vmax.value = model.get("vmax");
    vmin.disabled = vmax.disabled = auto.checked;
    const pal = model.get("palettes");
    if (cmap.options.length !== Object.keys(pal).length) {
      cmap.innerHTML = "";
      for (const k of Object.keys(pal)) cmap.append(new Option(k, k));
      luts = {};
      for (const [k, v] of Object.entries(pal)) luts[k] = lut(v);
    }
    cmap.value = model.get("colormap");
    const frozen = model.get("frozen");
    freeze.textContent = frozen ? "Live" : "Freeze";
    freeze.classList.toggle("dao-view-active", frozen);
    back.disabled = fwd.disabled = slider.disabled = !frozen;
    slider.max = String(Math.max(0, model.get("depth") - 1));
    slider.value = String(model.get("offset"));
    const kind = model.get("kind");
    cmap.style.display = kind === "vector" ? "none" : "";
    scale.title = "colour scale";
  }

  function set(name, value) {
    model.set(name, value);
    model.save_changes();
  }
  scale.onchange = () => set("scale", scale.value);
  auto.onchange = () => set("autoscale", auto.checked);
  vmin.onchange = () => set("vmin", parseFloat(vmin.value));
  vmax.onchange = () => set("vmax", parseFloat(vmax.value));
  cmap.onchange = () => set("colormap", cmap.value);
  freeze.onclick = () => set("frozen", !model.get("frozen"));
  back.onclick = () => set("offset", Math.min(model.get("depth") - 1, model.get("offset") + 1));
  fwd.onclick = () => set("offset", Math.max(0, model.get("offset") - 1));
  slider.onchange = () => set("offset", parseInt(slider.value, 10));
  clear.onclick = () => { model.set("roi", []); model.set("cross", []); model.save_changes(); };

  function limits(meta) {
    const log = model.get("scale") === "log";
    let lo, hi;
    if (model.get("autoscale")) { lo = log ? meta.lo_pos : meta.lo; hi = meta.hi; }
    else { lo = model.get("vmin"); hi = model.get("vmax"); }
    if (log) {
      lo = Math.log10(Math.max(lo, 1e-30));
      hi = Math.log10(Math.max(hi, 1e-30));
    }
    if (!(hi > lo)) hi = lo + 1;
    return [lo, hi, log];
  }

  function drawImage(meta, data) {
    const [h, w] = meta.shape;
    if (off.width !== w || off.height !== h) { off.width = w; off.height = h; }
    const img = offCtx.createImageData(w, h);
    const px = img.data;
    const [lo, hi, log] = limits(meta);
    const k = 255 / (hi - lo);
    const table = luts[model.get("colormap")] || luts.viridis;
    const floor = log ? Math.max(meta.lo_pos, 1e-30) : 0;
    for (let i = 0; i < data.length; i++) {
      let v = data[i];
      const j = 4 * i;
      if (Number.isNaN(v)) { px[j + 3] = 0; continue; }
      if (log) v = Math.log10(v > floor ? v : floor);
      let c = Math.round((v - lo) * k);
      c = c < 0 ? 0 : c > 255 ? 255 : c;
      px[j] = table[3 * c]; px[j + 1] = table[3 * c + 1]; px[j + 2] = table[3 * c + 2];
      px[j + 3] = 255;
    }
    offCtx.putImageData(img, 0, 0);
    const width = model.get("width");
    const height = Math.max(1, Math.round((width * h) / w));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width; canvas.height = height;
    }
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = "#303030";
    ctx.fillRect(0, 0, width, height);
    ctx.drawImage(off, 0, 0, width, height);
    const sx = width / w, sy = height / h;
    const roi = model.get("roi");
    if (roi.length === 4) {
      ctx.strokeStyle = "#00ff00";
      ctx.lineWidth = 1;
      ctx.strokeRect(roi[0] * sx, roi[1] * sy, (roi[2] - roi[0]) * sx, (roi[3] - roi[1]) * sy);
    }
    const cross = model.get("cross");
    if (cross.length === 2) {
      const x = (cross[0] + 0.5) * sx, y = (cross[1] + 0.5) * sy;
      ctx.strokeStyle = "#ff3030";
      ctx.beginPath();
      ctx.moveTo(x - 12, y); ctx.lineTo(x + 12, y);
      ctx.moveTo(x, y - 12); ctx.lineTo(x, y + 12);
      ctx.stroke();
    }
    return [sx, sy];
  }

  function drawVector(meta, data) {
    const [ns, n] = meta.shape;
    const width = model.get("width") * 1.6;
    const height = Math.round(width * 0.45);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width; canvas.height = height;
    }
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, height);
    let [lo, hi] = model.get("autoscale") ? [meta.lo, meta.hi]
      : [model.get("vmin"), model.get("vmax")];
    if (!(hi > lo)) { hi = lo + 1; }
    const left = 56, right = 8, top = 8, bottom = 18;
    const pw = width - left - right, ph = height - top - bottom;
    const X = (i) => left + (n > 1 ? (i * pw) / (n - 1) : pw / 2);
    const Y = (v) => top + ph - ((v - lo) / (hi - lo)) * ph;
    ctx.strokeStyle = "#999";
    ctx.strokeRect(left, top, pw, ph);
    ctx.fillStyle = "#333";
    ctx.font = "11px sans-serif";
    ctx.fillText(fmt(hi), 2, top + 10);
    ctx.fillText(fmt(lo), 2, top + ph);
    ctx.fillText("0", left, height - 4);
    ctx.fillText(String(n - 1), width - right - 24, height - 4);
    if (lo < 0 && hi > 0) {
      ctx.strokeStyle = "#ddd";
      ctx.beginPath(); ctx.moveTo(left, Y(0)); ctx.lineTo(left + pw, Y(0)); ctx.stroke();
    }
    const roi = model.get("roi");
    if (roi.length === 2) {
      ctx.fillStyle = "rgba(0, 160, 0, 0.12)";
      ctx.fillRect(X(roi[0]), top, X(Math.max(roi[0], roi[1] - 1)) - X(roi[0]) + 1, ph);
    }
    const names = model.get("series");
    for (let s = 0; s < ns; s++) {
      ctx.strokeStyle = SERIES_COLOURS[s % SERIES_COLOURS.length];
      ctx.beginPath();
      for (let i = 0; i < n; i++) {
        const v = data[s * n + i];
        if (i === 0) ctx.moveTo(X(i), Y(v)); else ctx.lineTo(X(i), Y(v));
      }
      ctx.stroke();
      if (names[s]) {
        ctx.fillStyle = ctx.strokeStyle;
        ctx.fillText(names[s], left + 6 + 40 * s, top + 12);
      }
    }
    const cross = model.get("cross");
    if (cross.length >= 1) {
      ctx.strokeStyle = "#ff3030";
      ctx.beginPath(); ctx.moveTo(X(cross[0]), top); ctx.lineTo(X(cross[0]), top + ph);
      ctx.stroke();
    }
  }

  function redraw() {
    if (!last) return;
    const { meta, data } = last;
    if (meta.shape.length === 2 && model.get("kind") !== "vector") drawImage(meta, data);
    else drawVector(meta, data);
    root.style.width = `${Math.max(canvas.width, 300)}px`;  // the toolbars wrap to it
  }

  function showStatus(meta) {
    count.textContent = String(meta.cnt0);
    const age = Date.now() - meta.time_ms;
    const parts = [
      ` (id ${meta.cnt2})`,
      meta.frozen ? `frozen, ${meta.back} back` : "live",
      `source ${fmt(meta.source_hz)} Hz`,
      `display ${fmt(meta.display_hz)} Hz`,
      `age ${meta.frozen ? "-" : fmt(age)} ms`,
      `not shown ${meta.skipped}`,
    ];
    statusText.textContent = parts.join(" \u00B7 ");
    const r = meta.region;
    region.textContent = r ? (r.n ? `region: n ${r.n}, mean ${fmt(r.mean)}, std ${fmt(r.std)},`
      + ` min ${fmt(r.min)}, max ${fmt(r.max)}, sum ${fmt(r.sum)}` : "region: empty") : "";
    note.textContent = "";
    return age;
  }

  function onMessage(msg, buffers) {
    if (msg.type === "note") { note.textContent = msg.text; return; }
    if (msg.type !== "frame") return;
    const dv = buffers[0];
    const bytes = dv.buffer.slice(dv.byteOffset, dv.byteOffset + dv.byteLength);
    const Typed = TYPED[msg.dtype] || Float32Array;
    last = { meta: msg, data: new Typed(bytes) };
    redraw();
    const age = showStatus(msg);
    model.send({ type: "ack", seq: msg.seq, age_ms: msg.frozen ? null : age });
  }

  // mouse: drag for a region, click for the target cross (in the data's pixels)
  function dataPos(ev) {
    if (!last) return null;
    const r = canvas.getBoundingClientRect();
    const [a, b] = last.meta.shape;
    if (model.get("kind") === "vector" || last.meta.shape.length !== 2) {
      const left = 56, right = 8, pw = canvas.width - left - right;
      const x = ((ev.clientX - r.left) * canvas.width) / r.width;
      return [Math.max(0, Math.min(b - 1, Math.round(((x - left) / pw) * (b - 1)))), 0];
    }
    return [Math.floor(((ev.clientX - r.left) / r.width) * b),
      Math.floor(((ev.clientY - r.top) / r.height) * a)];
  }
  canvas.onmousedown = (ev) => { drag = dataPos(ev); };
  canvas.onmouseup = (ev) => {
    const p = dataPos(ev);
    if (!drag || !p) return;
    const vector = model.get("kind") === "vector";
    if (p[0] === drag[0] && p[1] === drag[1]) {
      model.set("cross", vector ? [p[0]] : [p[0], p[1]]);
    } else if (vector) {
      model.set("roi", [Math.min(p[0], drag[0]), Math.max(p[0], drag[0]) + 1]);
    } else {
      model.set("roi", [Math.min(p[0], drag[0]), Math.min(p[1], drag[1]),
        Math.max(p[0], drag[0]) + 1, Math.max(p[1], drag[1]) + 1]);
    }
    model.save_changes();
    drag = null;
  };

  const onChange = () => { syncControls(); redraw(); };
  const traits = ["title", "scale", "autoscale", "vmin", "vmax", "colormap", "palettes",
    "frozen", "offset", "depth", "roi", "cross", "width", "kind", "series"];
  for (const n of traits) model.on(`change:${n}`, onChange);
  model.on("msg:custom", onMessage);
  syncControls();
  model.send({ type: "ready" });
  return () => {
    model.off("msg:custom", onMessage);
    for (const n of traits) model.off(`change:${n}`, onChange);
  };
}

export default { render };
