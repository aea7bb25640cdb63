// vnca-live.js: the book's VNCA decoders in plain JavaScript, for its pages.
// It loads a file written by vnca.live.export_for_browser (the chapter "A VNCA
// in your browser"), verifies its checksum and runs the update rule. No
// libraries, no network beyond the file itself.
(function (global) {
  "use strict";

  // The file: MAGIC, the SHA-256 of the rest (header and values alike), the
  // header's length (uint32), the JSON header, the float32 values, then the
  // bytes of the tensors kept as integers (the encoder's weights, in a few
  // bits each with a float32 scale per output channel; the example digits).
  const MAGIC = "VNCAWEB3";
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

  // `size` integers of `bits` bits (offset to unsigned, little-endian) from
  // codes[start], each times its output channel's scale (channels last).
  function dequantise(codes, start, bits, size, scale) {
    const out = new Float32Array(size), bound = 2 ** (bits - 1) - 1;
    const mask = (1 << bits) - 1, channels = scale.length;
    for (let k = 0; k < size; k++) {
      const bit = k * bits, at = start + (bit >> 3);
      const word = codes[at] | ((codes[at + 1] || 0) << 8);  // bits <= 8
      out[k] = (((word >> (bit & 7)) & mask) - bound) * scale[k % channels];
    }
    return out;
  }

  function tensor(key, entry, flat, codes) {
    const size = entry.shape.reduce((a, b) => a * b, 1);
    const outside = new Error(`the model file's tensor ${key} lies outside it`);
    if (entry.bits === undefined) {
      if (entry.offset < 0 || entry.offset + size > flat.length) throw outside;
      return flat.subarray(entry.offset, entry.offset + size);
    }
    const length = entry.bits === "u8" ? size : Math.ceil(size * entry.bits / 8);
    if (entry.byte < 0 || entry.byte + length > codes.length) throw outside;
    if (entry.bits === "u8") {
      return Float32Array.from(codes.subarray(entry.byte, entry.byte + size));
    }
    const channels = entry.shape[entry.shape.length - 1];
    if (!(entry.bits >= 2 && entry.bits <= 8) || entry.scale < 0 ||
        entry.scale + channels > flat.length) throw outside;
    return dequantise(codes, entry.byte, entry.bits, size,
                      flat.subarray(entry.scale, entry.scale + channels));
  }

  async function parse(buffer) {
    const bytes = new Uint8Array(buffer);
    const magic = String.fromCharCode(...bytes.subarray(0, 8));
    if (magic === "VNCAWEB1" || magic === "VNCAWEB2") {
      throw new Error("the model file is of an older format (without the " +
                      "encoder the drawing pad runs): write it again with " +
                      "vnca export-web");
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
    const codesStart = START + length + 4 * header.values;
    if (bytes.length !== codesStart + header.bytes) {
      throw new Error("the model file's header does not describe its values");
    }
    const flat = new Float32Array(buffer, START + length, header.values);
    if (!flat.every(Number.isFinite)) {
      throw new Error("the model file holds values that are NaN or infinite");
    }
    const codes = bytes.subarray(codesStart);
    const tensors = {};
    for (const [key, entry] of Object.entries(header.tensors)) {
      tensors[key] = { shape: entry.shape,
                       data: tensor(key, entry, flat, codes) };
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
      // q(z|x), in files of non-doubling models (the drawing pad's)
      this.encoder = tensors["encoder.linear.weight"] ? new Encoder(tensors) : null;
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

    // log p(x | grid): the Bernoulli log-likelihood of a 0/1 image x under
    // the logits in channel 0, summed over the cells, in nats.
    logLikelihood(state, x) {
      const c = this.channels;
      let sum = 0;
      for (let cell = 0; cell < x.length; cell++) {
        const l = state[cell * c];  // x l - softplus(l), computed stably
        sum += x[cell] * l - Math.max(l, 0) - Math.log1p(Math.exp(-Math.abs(l)));
      }
      return sum;
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
  // q(z|x): five 5x5 convolutions with ELU, zero-padded by 2 (strides 1, 2,
  // 2, 2, 2: 32x32 down to 2x2), then a linear layer to the mean and the
  // log standard deviation, as the package's Encoder.
  class Encoder {
    constructor(tensors) {
      this.convs = [0, 1, 2, 3, 4].map((i) => ({
        weight: tensors[`encoder.conv.${i}.weight`],
        bias: tensors[`encoder.conv.${i}.bias`].data,
        stride: i === 0 ? 1 : 2 }));
      this.weight = tensors["encoder.linear.weight"].data;  // (2*2*c, 2z)
      this.bias = tensors["encoder.linear.bias"].data;
    }

    conv(input, side, layer) {
      const [k, , cIn, cOut] = layer.weight.shape, w = layer.weight.data;
      const stride = layer.stride, pad = (k - 1) / 2;
      const out = Math.floor((side + 2 * pad - k) / stride) + 1;
      const h = new Float64Array(out * out * cOut);
      for (let y = 0; y < out; y++) {
        for (let x = 0; x < out; x++) {
          const cell = (y * out + x) * cOut;
          for (let o = 0; o < cOut; o++) h[cell + o] = layer.bias[o];
          for (let ky = 0; ky < k; ky++) {
            const yy = y * stride + ky - pad;
            if (yy < 0 || yy >= side) continue;
            for (let kx = 0; kx < k; kx++) {
              const xx = x * stride + kx - pad;
              if (xx < 0 || xx >= side) continue;
              const source = (yy * side + xx) * cIn;
              const tap = (ky * k + kx) * cIn * cOut;
              for (let i = 0; i < cIn; i++) {
                const v = input[source + i];
                if (v === 0) continue;
                const row = tap + i * cOut;
                for (let o = 0; o < cOut; o++) h[cell + o] += v * w[row + o];
              }
            }
          }
        }
      }
      elu(h);
      return { h, side: out };
    }

    // A 32x32 image (row by row) to { mean, logScale }, each z numbers.
    encode(image) {
      let h = Float64Array.from(image), side = 32;
      for (const layer of this.convs) ({ h, side } = this.conv(h, side, layer));
      const out = new Float64Array(this.bias.length);
      perCell(h, 0, h.length, this.weight, this.bias, out, 0);
      const z = out.length / 2;
      return { mean: Float32Array.from(out.subarray(0, z)),
               logScale: Float32Array.from(out.subarray(z)) };
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

  // Where a pointer event falls on a side x side canvas, in cells.
  function cellAt(canvas, event, side) {
    const box = canvas.getBoundingClientRect();
    return { x: ((event.clientX - box.left) / box.width) * side,
             y: ((event.clientY - box.top) / box.height) * side };
  }

  // A 0/1 image's log p under each grid, over the steps: a line, with the
  // steps where the reader damaged the grid marked.
  function chart(canvas, history, marks) {
    const context = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    context.clearRect(0, 0, w, h);
    const shown = history.slice(-400);
    if (shown.length < 2) return;
    const first = shown[0].step, last = shown[shown.length - 1].step;
    let low = Math.min(...shown.map((p) => p.value));
    let high = Math.max(...shown.map((p) => p.value));
    if (high - low < 20) low = high - 20;  // a flat line stays flat
    const x = (step) => 4 + (w - 8) * (step - first) / Math.max(last - first, 1);
    const y = (value) => 4 + (h - 8) * (high - value) / (high - low);
    context.strokeStyle = "#999";
    for (const step of marks) {
      if (step < first) continue;
      context.beginPath();
      context.moveTo(x(step), 0);
      context.lineTo(x(step), h);
      context.stroke();
    }
    context.strokeStyle = "#1f4e9c";  // dark blue: reads in every colour vision
    context.lineWidth = 2;
    context.beginPath();
    shown.forEach((p, k) => (k ? context.lineTo : context.moveTo)
      .call(context, x(p.step), y(p.value)));
    context.stroke();
    context.lineWidth = 1;
    context.fillStyle = "#444";
    context.font = "11px sans-serif";
    context.fillText(`${high.toFixed(0)}`, w - 34, 12);
    context.fillText(`${low.toFixed(0)}`, w - 34, h - 4);
  }

  // The drawing pad: a 32x32 grid of cells, ink or none, inked only inside
  // the data's 28x28 area (the 2-cell border is always blank in the data).
  function makePad(onChange) {
    const side = 32, margin = 2, ink = new Float32Array(side * side);
    const canvas = el("canvas", { width: side * SCALE, height: side * SCALE,
      class: "vnca-live-pad", tabindex: "0",
      role: "img", "aria-label": "drawing pad, 32 by 32 cells: draw with " +
      "mouse, pen or finger; with the keyboard, arrows move the pen and " +
      "space inks or clears the cell under it" });
    const undo = [];
    let pen = "bold", cursor = { x: 15, y: 15 }, focused = false, last = null;
    const inside = (x, y) => x >= margin && x < side - margin &&
                             y >= margin && y < side - margin;
    const draw = () => {
      const context = canvas.getContext("2d"), s = canvas.width / side;
      paint(canvas, ink, side);
      context.fillStyle = "rgba(120, 120, 120, 0.25)";  // outside the 28x28
      context.fillRect(0, 0, canvas.width, margin * s);
      context.fillRect(0, (side - margin) * s, canvas.width, margin * s);
      context.fillRect(0, margin * s, margin * s, (side - 2 * margin) * s);
      context.fillRect((side - margin) * s, margin * s, margin * s,
                       (side - 2 * margin) * s);
      if (focused) {
        context.strokeStyle = "#1f4e9c";
        context.lineWidth = 2;
        context.strokeRect(cursor.x * s + 1, cursor.y * s + 1, s - 2, s - 2);
      }
    };
    // ink the cells a pen at (x, y), in cells, covers: the cell under a fine
    // pen; the cells whose centres lie within one cell of a bold one
    const dab = (x, y) => {
      if (pen === "fine") {
        const cx = Math.floor(x), cy = Math.floor(y);
        if (inside(cx, cy)) ink[cy * side + cx] = 1;
        return;
      }
      for (let cy = Math.floor(y) - 1; cy <= Math.floor(y) + 1; cy++) {
        for (let cx = Math.floor(x) - 1; cx <= Math.floor(x) + 1; cx++) {
          if (inside(cx, cy) && (cx + 0.5 - x) ** 2 + (cy + 0.5 - y) ** 2 <= 1) {
            ink[cy * side + cx] = 1;
          }
        }
      }
    };
    const at = (event) => cellAt(canvas, event, side);
    canvas.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      undo.push(ink.slice());
      last = at(event);
      dab(last.x, last.y);
      draw();
    });
    canvas.addEventListener("pointermove", (event) => {
      if (last === null) return;
      const next = at(event);  // a stroke stays whole however fast it goes
      const n = Math.ceil(4 * Math.hypot(next.x - last.x, next.y - last.y));
      for (let k = 1; k <= n; k++) {
        dab(last.x + (next.x - last.x) * k / n, last.y + (next.y - last.y) * k / n);
      }
      last = next;
      draw();
    });
    const end = () => {
      if (last === null) return;
      last = null;
      onChange(ink);
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("focus", () => { focused = true; draw(); });
    canvas.addEventListener("blur", () => { focused = false; draw(); });
    canvas.addEventListener("keydown", (event) => {
      const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0],
                      ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (moves[event.key]) {
        const [dx, dy] = moves[event.key];
        cursor = { x: Math.min(side - 1, Math.max(0, cursor.x + dx)),
                   y: Math.min(side - 1, Math.max(0, cursor.y + dy)) };
      } else if (event.key === " " || event.key === "Enter") {
        if (inside(cursor.x, cursor.y)) {  // the rim stays blank
          undo.push(ink.slice());
          const k = cursor.y * side + cursor.x;
          ink[k] = 1 - ink[k];
          onChange(ink);
        }
      } else {
        return;
      }
      event.preventDefault();
      draw();
    });
    const clear = () => {
      undo.push(ink.slice());
      ink.fill(0);
      draw();
      onChange(ink);
    };
    const back = () => {
      if (undo.length) ink.set(undo.pop());
      draw();
      onChange(ink);
    };
    const penChoice = el("select", { "aria-label": "pen" },
      el("option", { value: "bold", text: "bold pen" }),
      el("option", { value: "fine", text: "fine pen (one cell)" }));
    penChoice.addEventListener("change", () => { pen = penChoice.value; });
    draw();
    return { canvas, ink, clear, undo: back, penChoice };
  }

  const SAMPLES = 4;  // z ~ q(z|x), grown beside the mean
  const FASTEST = 61;  // the speed slider's last value: as fast as it goes

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
    const targetCaption = el("figcaption", { text: "the test digit encoded" });
    const targetBox = el("figure", { class: "vnca-live-target" }, target,
                         targetCaption);
    const score = el("span", { class: "vnca-live-score", "aria-live": "off" });
    const plot = el("canvas", { width: 320, height: 72,
      class: "vnca-live-chart", role: "img",
      "aria-label": "log p of the digit under the grid, over the last steps" });
    const images = decoder.examples.images.data;
    let example = 0, image = images.slice(0, side * side), z = decoder.latent(0);
    let encoded = null, grid = decoder.seed(z), steps = 0;
    let playing = true, speed = 15, brush = 4, probability = decoder.updateProbability;
    let history = [], marks = [], visible = true;
    const showTarget = (caption) => {
      targetBox.hidden = image === null;
      if (image !== null) paint(target, image, side);
      targetCaption.textContent = caption;
      score.hidden = plot.hidden = image === null;
    };
    const logp = () => (image === null ? null : decoder.logLikelihood(grid.state, image));
    const record = () => {
      if (image === null) return;
      history.push({ step: steps, value: logp() });
      if (history.length > 4000) history = history.slice(-2000);
    };
    const draw = () => {
      paint(canvas, decoder.pixels(grid.state, side), side);
      if (!channelBox.hidden) paintChannels(channels, decoder, grid.state, side);
      counter.textContent = `step ${steps}`;
      if (image !== null && history.length) {
        const value = history[history.length - 1].value;
        score.textContent = `log p(digit | grid) = ${value.toFixed(1)} nats`;
        chart(plot, history, marks);
      }
    };
    const reset = () => {
      grid = decoder.seed(z);
      steps = 0;
      history = [];
      marks = [];
      record();
      draw();
    };

    // samples z ~ q(z|x) of the encoded drawing or digit, grown one step a
    // frame each beside the mean's grid, up to the decoder's test T
    const sampleCanvases = Array.from({ length: SAMPLES }, () => el("canvas", {
      width: side * 3, height: side * 3, class: "vnca-live-channel" }));
    const sampleBox = el("figure", { class: "vnca-live-samples", hidden: "" },
      el("div", {}, ...sampleCanvases),
      el("figcaption", { text: "samples z ~ q(z|x), each grown " +
                         `${decoder.header.decoder.test_steps} steps` }));
    let samples = [];
    const drawSamples = (e) => {
      samples = sampleCanvases.map(() => {
        const zs = e.mean.map((m, k) => m + Math.exp(e.logScale[k]) * gaussian());
        return { z: zs, grid: decoder.seed(zs), steps: 0 };
      });
      sampleBox.hidden = false;
    };
    const growSamples = () => {
      const T = decoder.header.decoder.test_steps;
      const next = samples.find((s) => s.steps < T);
      if (!next) return;
      decoder.step(next.grid.state, side, probability);
      next.steps += 1;
      const k = samples.indexOf(next);
      paint(sampleCanvases[k], decoder.pixels(next.grid.state, side), side);
    };

    const encodeImage = (x, caption) => {
      image = Float32Array.from(x);
      encoded = decoder.encoder.encode(image);
      z = encoded.mean;
      showTarget(caption);
      drawSamples(encoded);
      reset();
    };
    const play = el("button", { type: "button", text: "Pause", onclick: () => {
      playing = !playing;
      play.textContent = playing ? "Pause" : "Play";
    } });
    const damageSquare = () => {  // the paper's damage: a 16x16 square zeroed
      const x0 = Math.floor(Math.random() * (side / 2 + 1));
      const y0 = Math.floor(Math.random() * (side / 2 + 1));
      for (let y = y0; y < y0 + side / 2; y++) {
        grid.state.fill(0, (y * side + x0) * decoder.channels,
                        (y * side + x0 + side / 2) * decoder.channels);
      }
      marks.push(steps);
      record();
      draw();
    };
    const speedSlider = slider("steps/s", 1, FASTEST, 1, speed, (v) => { speed = v; });
    const speedShown = speedSlider.node.querySelector(".vnca-live-value");
    speedSlider.input.addEventListener("input", () => {
      if (speed === FASTEST) speedShown.textContent = "as fast as it goes";
    });
    const controls = el("div", { class: "vnca-live-controls" },
      play,
      el("button", { type: "button", text: "Reset", onclick: reset }),
      el("button", { type: "button", text: "Damage", onclick: damageSquare,
                     title: "zero a random 16x16 square, every channel" }),
      el("button", { type: "button", text: "Next test digit", onclick: () => {
        example = (example + 1) % decoder.examples.latents.shape[0];
        image = images.slice(example * side * side, (example + 1) * side * side);
        z = decoder.latent(example);
        sampleBox.hidden = true;
        samples = [];
        showTarget("the test digit encoded");
        reset();
      } }),
      el("button", { type: "button", text: "New sample", onclick: () => {
        z = Float32Array.from({ length: decoder.channels }, gaussian);
        image = null;
        sampleBox.hidden = true;
        samples = [];
        showTarget("");
        reset();
      } }),
      el("button", { type: "button", text: "Hidden channels", onclick: () => {
        channelBox.hidden = !channelBox.hidden;
        draw();
      } }),
      speedSlider.node,
      slider("brush", 1, 10, 1, brush, (v) => { brush = v; }).node,
      slider("update probability", 0.1, 1, 0.05, probability,
             (v) => { probability = v; }).node,
      counter);
    let dragging = false;
    const hurt = (event) => {
      const { x, y } = cellAt(canvas, event, side);
      decoder.damage(grid.state, side, Math.floor(x), Math.floor(y), brush);
      record();
      draw();
    };
    canvas.addEventListener("pointerdown", (e) => {
      dragging = true;
      marks.push(steps);
      hurt(e);
    });
    canvas.addEventListener("pointermove", (e) => { if (dragging) hurt(e); });
    window.addEventListener("pointerup", () => { dragging = false; });

    // the drawing pad, where the file holds the encoder and the page wants it
    let pad = null, padBox = null;
    if (decoder.encoder && root.dataset.pad !== "no") {
      let pending = null;
      pad = makePad((ink) => {  // encode a moment after the pen stops
        clearTimeout(pending);
        pending = setTimeout(() => {
          if (ink.some((v) => v > 0)) encodeImage(ink, "your drawing, encoded");
        }, 60);
      });
      padBox = el("div", { class: "vnca-live-padbox" },
        el("figure", { class: "vnca-live-target" }, pad.canvas,
           el("figcaption", { text: "draw a digit (the shaded rim " +
                              "stays blank, as in the data)" })),
        el("div", { class: "vnca-live-controls" },
           el("button", { type: "button", text: "Clear", onclick: pad.clear }),
           el("button", { type: "button", text: "Undo", onclick: pad.undo }),
           pad.penChoice));
    }

    // step only while the demo is on screen: no work for a reader elsewhere
    if (typeof IntersectionObserver !== "undefined") {
      new IntersectionObserver((entries) => {
        visible = entries[entries.length - 1].isIntersecting;
      }).observe(root);
    }
    const advance = () => {  // one NCA step of the grid, scored
      decoder.step(grid.state, side, probability);
      steps += 1;
      record();
    };
    let last = 0;
    const tick = (now) => {
      if (playing && visible) {
        if (speed === FASTEST) {  // steps until most of a frame is spent
          const start = performance.now();
          do advance(); while (performance.now() - start < 12);
          draw();
        } else if (now - last >= 1000 / speed) {
          advance();
          last = now;
          draw();
        }
        growSamples();
      }
      requestAnimationFrame(tick);
    };
    // the pad first: what it draws is encoded, grown and scored below it
    if (padBox) root.append(padBox);
    root.append(el("div", { class: "vnca-live-stage" }, canvas, targetBox,
                   channelBox),
                el("div", { class: "vnca-live-scorebox" }, score, plot),
                sampleBox, controls);
    // for scripts (and the book's tests): the running state
    root.vnca = { decoder, grid: () => grid, steps: () => steps,
                  pause: () => { if (playing) play.click(); },
                  play: () => { if (!playing) play.click(); }, reset, logp,
                  history: () => history, visible: () => visible,
                  image: () => image, encoded: () => encoded,
                  samples: () => samples, pad: pad && (() => Array.from(pad.ink)),
                  damageSquare, step: () => { advance(); draw(); } };
    showTarget("the test digit encoded");
    reset();
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
