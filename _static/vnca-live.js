// vnca-live.js: the book's VNCA decoders in plain JavaScript, for its pages.
// It loads a file written by vnca.live.export_for_browser (the chapter "A VNCA
// in your browser"), verifies its checksum and runs the update rule. No
// libraries, no network beyond the file itself.
(function (global) {
  "use strict";

  // The file: MAGIC, the SHA-256 of the rest (header and values alike), the
  // header's length (uint32), the JSON header, the float32 values.
  const MAGIC = "VNCAWEB2";
  const START = 8 + 32 + 4;

  // ---- the file
  async function sha256(bytes) {
    const subtle = global.crypto && global.crypto.subtle;
    if (!subtle) {
      throw new Error("this page is not a secure context (https or " +
                      "localhost), so the model's checksum cannot be verified");
    }
    return new Uint8Array(await subtle.digest("SHA-256", bytes));
  }

  async function parse(buffer) {
    const bytes = new Uint8Array(buffer);
    const magic = String.fromCharCode(...bytes.subarray(0, 8));
    if (magic === "VNCAWEB1") {
      throw new Error("the model file is of an older format, whose header " +
                      "was not checked: write it again with vnca export-web");
    }
    if (magic !== MAGIC || bytes.length < START) {
      throw new Error("not a vnca file for the browser");
    }
    const digest = await sha256(bytes.subarray(8 + 32));
    if (!digest.every((b, k) => b === bytes[8 + k])) {
      throw new Error("the model file does not match its checksum " +
                      "(cut short or changed)");
    }
    const length = new DataView(buffer).getUint32(8 + 32, true);
    const header = JSON.parse(
      new TextDecoder().decode(bytes.subarray(START, START + length)));
    if (bytes.length - START - length !== 4 * header.values) {
      throw new Error("the model file's header does not describe its values");
    }
    const flat = new Float32Array(buffer, START + length, header.values);
    if (!flat.every(Number.isFinite)) {
      throw new Error("the model file holds values that are NaN or infinite");
    }
    const tensors = {};
    for (const [key, entry] of Object.entries(header.tensors)) {
      const size = entry.shape.reduce((a, b) => a * b, 1);
      if (entry.offset < 0 || entry.offset + size > flat.length) {
        throw new Error(`the model file's tensor ${key} lies outside it`);
      }
      tensors[key] = { shape: entry.shape,
                       data: flat.subarray(entry.offset, entry.offset + size) };
    }
    return { header, tensors };
  }

  async function load(url) {
    // browsers fetch nothing for a page opened as a file: say what to do
    if (global.location && global.location.protocol === "file:") {
      throw new Error("a page opened as a file cannot load its model; " +
                      "serve the site (make serve, see the README) and open " +
                      "http://localhost:8000 instead");
    }
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    const { header, tensors } = await parse(await response.arrayBuffer());
    return new Decoder(header, tensors);
  }

  // ---- the decoder
  // One cell's per-cell layer: out = b + in @ W, with W (c_in, c_out).
  function perCell(input, inOffset, cIn, weight, bias, out, outOffset) {
    const cOut = bias.length;
    for (let o = 0; o < cOut; o++) out[outOffset + o] = bias[o];
    for (let i = 0; i < cIn; i++) {
      const x = input[inOffset + i];
      if (x === 0) continue;
      const row = i * cOut;
      for (let o = 0; o < cOut; o++) out[outOffset + o] += x * weight[row + o];
    }
  }

  function elu(values) {
    for (let k = 0; k < values.length; k++) {
      if (values[k] < 0) values[k] = Math.expm1(values[k]);
    }
  }

  class Decoder {
    constructor(header, tensors) {
      const d = header.decoder;
      this.header = header;
      this.kind = d.kind;
      this.channels = d.channels;
      this.hidden = d.hidden;
      this.updateProbability = d.update_probability;
      this.t = (name) => tensors[name].data;
      this.blocks = [];
      for (let i = 0; i < d.residual_blocks; i++) {
        this.blocks.push(["inner", "outer"].map((part) => ({
          weight: this.t(`rule.blocks.${i}.${part}.weight`),
          bias: this.t(`rule.blocks.${i}.${part}.bias`) })));
      }
      this.examples = { images: tensors["examples.images"],
                        latents: tensors["examples.latents"] };
    }

    latent(index) {  // the mean encoding of example `index`
      const z = this.channels;
      return this.examples.latents.data.slice(index * z, (index + 1) * z);
    }

    // The 3x3 cross-correlation of a side x side state, zero beyond the edge.
    perceive(state, side) {
      const c = this.channels, h = this.hidden;
      const weight = this.t("rule.perceive.weight");  // (3, 3, c, h)
      const bias = this.t("rule.perceive.bias");
      const out = new Float64Array(side * side * h);
      for (let y = 0; y < side; y++) {
        for (let x = 0; x < side; x++) {
          const cell = (y * side + x) * h;
          for (let o = 0; o < h; o++) out[cell + o] = bias[o];
          for (let dy = 0; dy < 3; dy++) {
            const yy = y + dy - 1;
            if (yy < 0 || yy >= side) continue;
            for (let dx = 0; dx < 3; dx++) {
              const xx = x + dx - 1;
              if (xx < 0 || xx >= side) continue;
              const source = (yy * side + xx) * c;
              const tap = (dy * 3 + dx) * c * h;
              for (let i = 0; i < c; i++) {
                const v = state[source + i];
                if (v === 0) continue;
                const row = tap + i * h;
                for (let o = 0; o < h; o++) out[cell + o] += v * weight[row + o];
              }
            }
          }
        }
      }
      return out;
    }

    // f(s): the update the rule proposes for every cell.
    update(state, side) {
      const c = this.channels, h = this.hidden, cells = side * side;
      let hiddenState = this.perceive(state, side);
      if (this.header.decoder.elu_after_perception) elu(hiddenState);
      const inner = new Float64Array(h), outer = new Float64Array(h);
      for (const [first, second] of this.blocks) {  // h + W2 elu(W1 h)
        for (let cell = 0; cell < cells; cell++) {
          perCell(hiddenState, cell * h, h, first.weight, first.bias, inner, 0);
          elu(inner);
          perCell(inner, 0, h, second.weight, second.bias, outer, 0);
          for (let o = 0; o < h; o++) hiddenState[cell * h + o] += outer[o];
        }
      }
      const update = new Float64Array(cells * c);
      const weight = this.t("rule.output.weight"), bias = this.t("rule.output.bias");
      for (let cell = 0; cell < cells; cell++) {
        perCell(hiddenState, cell * h, h, weight, bias, update, cell * c);
      }
      return update;
    }

    // One NCA step, in place: s + m * f(s), m a random per-cell mask.
    step(state, side, probability = this.updateProbability, random = Math.random) {
      const c = this.channels;
      const update = this.update(state, side);
      for (let cell = 0; cell < side * side; cell++) {
        if (probability < 1 && random() >= probability) continue;
        for (let k = cell * c; k < (cell + 1) * c; k++) {
          state[k] = state[k] + update[k];  // stored as float32
        }
      }
      return state;
    }

    // The non-doubling decoder's start: z in every cell of the grid.
    seed(z) {
      const side = this.header.decoder.side, c = this.channels;
      const state = new Float32Array(side * side * c);
      for (let cell = 0; cell < side * side; cell++) state.set(z, cell * c);
      return { state, side };
    }

    // Every cell becomes a 2x2 block of copies of itself.
    double(state, side) {
      const c = this.channels, big = 2 * side;
      const out = new Float32Array(big * big * c);
      for (let y = 0; y < big; y++) {
        for (let x = 0; x < big; x++) {
          const from = ((y >> 1) * side + (x >> 1)) * c;
          out.set(state.subarray(from, from + c), (y * big + x) * c);
        }
      }
      return { state: out, side: big };
    }

    // The doubling decoder's stages: one cell, then each round's doubling
    // and its steps; `visit` sees every state.
    growDoubling(z, visit = () => {}, probability = this.updateProbability) {
      const d = this.header.decoder;
      let grid = { state: Float32Array.from(z), side: 1 };
      visit(grid, "seed");
      for (let round = 0; round < d.doublings; round++) {
        grid = this.double(grid.state, grid.side);
        visit(grid, "doubled");
        for (let s = 0; s < d.steps_per_doubling; s++) {
          this.step(grid.state, grid.side, probability);
          visit(grid, "step");
        }
      }
      return grid;
    }

    // The picture: the Bernoulli mean, sigmoid of channel 0, per cell.
    pixels(state, side) {
      const c = this.channels, out = new Float32Array(side * side);
      for (let cell = 0; cell < side * side; cell++) {
        out[cell] = 1 / (1 + Math.exp(-state[cell * c]));
      }
      return out;
    }

    // Damage: every channel of the cells within `radius` of (cx, cy) zeroed.
    damage(state, side, cx, cy, radius) {
      const c = this.channels;
      for (let y = 0; y < side; y++) {
        for (let x = 0; x < side; x++) {
          if ((x - cx) ** 2 + (y - cy) ** 2 <= radius * radius) {
            state.fill(0, (y * side + x) * c, (y * side + x + 1) * c);
          }
        }
      }
      return state;
    }
  }
  // ---- end of the decoder


  // ---- the page's controls
  const SCALE = 8;  // screen pixels per cell

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  }

  function slider(label, min, max, step, value, onInput) {
    const input = el("input", { type: "range", min, max, step, value });
    const shown = el("span", { class: "vnca-live-value", text: value });
    input.addEventListener("input", () => {
      shown.textContent = input.value;
      onInput(Number(input.value));
    });
    return { input, node: el("label", {}, label + " ", input, " ", shown) };
  }

  // Draw a side x side grid of values in [0, 1] (1: ink, drawn dark).
  function paint(canvas, values, side) {
    const context = canvas.getContext("2d");
    const image = context.createImageData(side, side);
    for (let k = 0; k < side * side; k++) {
      const v = Math.round(255 * (1 - values[k]));
      image.data.set([v, v, v, 255], 4 * k);
    }
    const small = el("canvas", { width: side, height: side });
    small.getContext("2d").putImageData(image, 0, 0);
    context.imageSmoothingEnabled = false;
    context.drawImage(small, 0, 0, canvas.width, canvas.height);
  }

  // A few hidden channels beside the digit: tanh of channels 1, 2, 3.
  function paintChannels(canvases, decoder, state, side) {
    canvases.forEach((canvas, j) => {
      const values = new Float32Array(side * side);
      for (let k = 0; k < side * side; k++) {
        values[k] = 0.5 + 0.5 * Math.tanh(state[k * decoder.channels + j + 1]);
      }
      paint(canvas, values, side);
    });
  }

  function gaussian() {  // a standard normal draw (Box-Muller)
    return Math.sqrt(-2 * Math.log(1 - Math.random())) *
           Math.cos(2 * Math.PI * Math.random());
  }

  function mountNonDoubling(root, decoder) {
    const side = decoder.header.decoder.side;
    const canvas = el("canvas", { width: side * SCALE, height: side * SCALE,
                                  class: "vnca-live-canvas",
                                  title: "click or drag to damage" });
    const channels = [1, 2, 3].map(() => el("canvas", {
      width: side * 3, height: side * 3, class: "vnca-live-channel" }));
    const channelBox = el("div", { class: "vnca-live-channels", hidden: "" },
                          ...channels);
    const counter = el("span", { class: "vnca-live-count" });
    const target = el("canvas", { width: side * 3, height: side * 3,
                                  class: "vnca-live-channel" });
    const targetBox = el("figure", { class: "vnca-live-target" }, target,
                         el("figcaption", { text: "the test digit encoded" }));
    const showTarget = (index) => {
      targetBox.hidden = index === null;
      if (index !== null) {
        const images = decoder.examples.images.data;
        paint(target, images.subarray(index * side * side, (index + 1) * side * side), side);
      }
    };
    let z = decoder.latent(0), example = 0, grid = decoder.seed(z), steps = 0;
    let playing = true, speed = 15, brush = 4, probability = decoder.updateProbability;
    const draw = () => {
      paint(canvas, decoder.pixels(grid.state, side), side);
      if (!channelBox.hidden) paintChannels(channels, decoder, grid.state, side);
      counter.textContent = `step ${steps}`;
    };
    const reset = () => { grid = decoder.seed(z); steps = 0; draw(); };
    const play = el("button", { type: "button", text: "Pause", onclick: () => {
      playing = !playing;
      play.textContent = playing ? "Pause" : "Play";
    } });
    const controls = el("div", { class: "vnca-live-controls" },
      play,
      el("button", { type: "button", text: "Reset", onclick: reset }),
      el("button", { type: "button", text: "Next test digit", onclick: () => {
        example = (example + 1) % decoder.examples.latents.shape[0];
        z = decoder.latent(example);
        showTarget(example);
        reset();
      } }),
      el("button", { type: "button", text: "New sample", onclick: () => {
        z = Float32Array.from({ length: decoder.channels }, gaussian);
        showTarget(null);
        reset();
      } }),
      el("button", { type: "button", text: "Hidden channels", onclick: () => {
        channelBox.hidden = !channelBox.hidden;
        draw();
      } }),
      slider("steps/s", 1, 60, 1, speed, (v) => { speed = v; }).node,
      slider("brush", 1, 10, 1, brush, (v) => { brush = v; }).node,
      slider("update probability", 0.1, 1, 0.05, probability,
             (v) => { probability = v; }).node,
      counter);
    let dragging = false;
    const hurt = (event) => {
      const box = canvas.getBoundingClientRect();
      const x = ((event.clientX - box.left) / box.width) * side;
      const y = ((event.clientY - box.top) / box.height) * side;
      decoder.damage(grid.state, side, Math.floor(x), Math.floor(y), brush);
      draw();
    };
    canvas.addEventListener("pointerdown", (e) => { dragging = true; hurt(e); });
    canvas.addEventListener("pointermove", (e) => { if (dragging) hurt(e); });
    window.addEventListener("pointerup", () => { dragging = false; });
    let last = 0;
    const tick = (now) => {
      if (playing && now - last >= 1000 / speed) {
        decoder.step(grid.state, side, probability);
        steps += 1;
        last = now;
        draw();
      }
      requestAnimationFrame(tick);
    };
    root.append(el("div", { class: "vnca-live-stage" }, canvas, targetBox,
                   channelBox), controls);
    // for scripts (and the book's tests): the running state
    root.vnca = { decoder, grid: () => grid, steps: () => steps,
                  pause: () => { if (playing) play.click(); }, reset };
    showTarget(0);
    draw();
    requestAnimationFrame(tick);
  }

  function mountDoubling(root, decoder) {
    const canvas = el("canvas", { width: 32 * SCALE, height: 32 * SCALE,
                                  class: "vnca-live-canvas" });
    const caption = el("span", { class: "vnca-live-count" });
    const count = decoder.examples.latents.shape[0];
    let a = 0, b = 1, t = 0, stages = [], shown = 0, timer = null;
    const show = (k) => {
      const { pixels, side, what } = stages[k];
      paint(canvas, pixels, side);
      caption.textContent = `${side}x${side}, ${what}`;
    };
    const grow = () => {
      const za = decoder.latent(a), zb = decoder.latent(b);
      const z = za.map((v, k) => (1 - t) * v + t * zb[k]);
      stages = [];
      decoder.growDoubling(z, (grid, what) => stages.push({
        pixels: decoder.pixels(grid.state, grid.side), side: grid.side, what }));
      clearInterval(timer);
      shown = 0;
      timer = setInterval(() => {
        show(shown);
        if (++shown >= stages.length) clearInterval(timer);
      }, 80);
    };
    const mix = slider("from digit A to digit B", 0, 1, 0.05, 0, (v) => {
      t = v;
      grow();
    });
    const controls = el("div", { class: "vnca-live-controls" },
      el("button", { type: "button", text: "Grow again", onclick: grow }),
      el("button", { type: "button", text: "Other digits", onclick: () => {
        a = (a + 2) % count;
        b = (b + 2) % count;
        grow();
      } }),
      mix.node, caption);
    root.append(el("div", { class: "vnca-live-stage" }, canvas), controls);
    // for scripts (and the book's tests): the latest growth, once shown
    root.vnca = { decoder, slider: mix.input, grow,
                  done: () => stages.length > 0 && shown >= stages.length,
                  pixels: () => stages[stages.length - 1].pixels,
                  latents: () => [a, b] };
    grow();
  }

  // Every element with class vnca-live and a data-model URL becomes a demo.
  async function mountAll() {
    for (const root of document.querySelectorAll(".vnca-live[data-model]")) {
      try {
        const decoder = await load(root.dataset.model);
        root.classList.add("vnca-live-ready");
        if (decoder.kind === "doubling") mountDoubling(root, decoder);
        else mountNonDoubling(root, decoder);
      } catch (error) {
        root.append(el("p", { class: "vnca-live-error",
          text: `The live model could not start here: ${error.message}.` }));
      }
    }
  }

  if (typeof document !== "undefined") {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", mountAll);
    } else {
      mountAll();
    }
  }

  global.VNCALive = { load, parse, Decoder, mountAll };
})(typeof window !== "undefined" ? window : globalThis);
