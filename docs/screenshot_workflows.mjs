#!/usr/bin/env node
// Screenshots of the pack's example workflows in the real ComfyUI editor (headless Chromium).
//
// For each workflow name: fetch /api/workflow_templates/<pack>/<name>.json from a running ComfyUI,
// load it with app.loadGraphData(), optionally queue it and wait until it finished, fit the view
// and save docs/workflow_<name>.png. Also prints what the pack's web extension did (link colours of
// our socket types, the "N frames × W×H @ F fps" badge and the preview images of each stage node).
//
// Needs playwright-core (npm) and a Chromium binary; nothing is installed into the pack:
//   NODE_PATH=/work/comfyui/tools/node_modules node docs/screenshot_workflows.mjs imagen_video_cascade
//
// Usage: node docs/screenshot_workflows.mjs [options] NAME... | --all
//   --url URL          ComfyUI address (default http://127.0.0.1:8188; a bare URL argument works too)
//   --no-queue         only load and screenshot, do not run the workflow
//   --all              every workflow the server lists for the pack
//   --pack NAME        template folder name of the pack (default ComfyUI-ImagenVideo)
//   --out-dir DIR      where the PNGs go (default: the folder of this script, i.e. docs/)
//   --width W --height H   viewport (default 1600x900)
//   --scale N          device pixel ratio, e.g. 2 for a sharper 3200x1800 PNG (default 1)
//   --clean            hide the minimap and the canvas info text in the picture (page only; no
//                      setting is changed on the server)
//   --keep-cache       do not ask the server to drop its execution cache first (by default it does,
//                      POST /free, so every node really runs and the screenshot is reproducible)
//   --vue              use the frontend's Vue node renderer (setting Comfy.VueNodes.Enabled, through
//                      app.extensionManager.setting); PNG name gets a _vue suffix
//   --timeout-min M    how long to wait for one execution (default 20)
//   --chromium PATH    browser binary (default $CHROMIUM or /usr/bin/chromium)
// Environment: PLAYWRIGHT_CORE = path of the playwright-core package if it is not on NODE_PATH.

import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";
import fs from "node:fs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

function loadPlaywright() {
  const candidates = [
    process.env.PLAYWRIGHT_CORE,
    "playwright-core", // honours NODE_PATH (CommonJS resolution through createRequire)
    "/work/comfyui/tools/node_modules/playwright-core",
  ].filter(Boolean);
  for (const c of candidates) {
    try {
      return require(c);
    } catch {
      /* try the next one */
    }
  }
  console.error(
    "playwright-core not found. Install it outside the pack, e.g.\n" +
      "  mkdir -p /work/comfyui/tools && cd /work/comfyui/tools && npm install playwright-core\n" +
      "and run with NODE_PATH=/work/comfyui/tools/node_modules (or set PLAYWRIGHT_CORE)."
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    url: "http://127.0.0.1:8188",
    queue: true,
    fresh: true,
    all: false,
    pack: "ComfyUI-ImagenVideo",
    outDir: HERE,
    width: 1600,
    height: 900,
    scale: 1,
    clean: false,
    vue: false,
    timeoutMin: 20,
    chromium: process.env.CHROMIUM || "/usr/bin/chromium",
    names: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--url") o.url = val();
    else if (a === "--no-queue") o.queue = false;
    else if (a === "--queue") o.queue = true;
    else if (a === "--all") o.all = true;
    else if (a === "--keep-cache") o.fresh = false;
    else if (a === "--pack") o.pack = val();
    else if (a === "--out-dir") o.outDir = path.resolve(val());
    else if (a === "--width") o.width = Number(val());
    else if (a === "--height") o.height = Number(val());
    else if (a === "--scale") o.scale = Number(val());
    else if (a === "--clean") o.clean = true;
    else if (a === "--vue") o.vue = true;
    else if (a === "--timeout-min") o.timeoutMin = Number(val());
    else if (a === "--chromium") o.chromium = val();
    else if (a === "-h" || a === "--help") {
      console.log(fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1).filter((l, i, a) => a.slice(0, i + 1).every((x) => x.startsWith("//"))).join("\n"));
      process.exit(0);
    } else if (/^https?:\/\//.test(a)) o.url = a;
    else if (a.startsWith("-")) throw new Error(`unknown option ${a}`);
    else o.names.push(a.replace(/\.json$/, ""));
  }
  o.url = o.url.replace(/\/+$/, "");
  return o;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function getJson(url, init) {
  const r = await fetch(url, init);
  if (!r.ok) throw new Error(`${init?.method || "GET"} ${url} -> HTTP ${r.status}`);
  return r.json();
}

async function waitForEditor(page, timeoutMs = 120000) {
  // window.app is set by the frontend once app.setup() ran (extensions loaded, canvas ready).
  await page.waitForFunction(
    () => !!(window.app && window.app.graph && window.app.canvas && window.LiteGraph && window.app.vueAppReady),
    null,
    { timeout: timeoutMs, polling: 250 }
  );
  await sleep(1500); // let the initial workflow restore and the colour palette settle
}

async function closeDialogs(page) {
  // e.g. a missing-models warning or a template browser: Escape closes PrimeVue dialogs.
  for (let i = 0; i < 3; i++) {
    const open = await page.evaluate(() => document.querySelectorAll(".p-dialog-mask, .p-dialog").length);
    if (!open) return;
    await page.keyboard.press("Escape");
    await sleep(300);
  }
}

async function loadWorkflow(page, workflow, name) {
  await page.evaluate(
    async ({ workflow, name }) => {
      await window.app.loadGraphData(workflow, true, true, name);
    },
    { workflow, name }
  );
  await sleep(1000);
}

async function installWatchers(page) {
  await page.evaluate(() => {
    if (window.__ivShot) return;
    const st = (window.__ivShot = { events: [], executed: {}, promptId: null, done: false, status: null, error: null });
    const api = window.app.api || window.comfyAPI?.api?.api;
    api.addEventListener("execution_start", (e) => {
      st.promptId = e.detail?.prompt_id ?? st.promptId;
      st.events.push("execution_start");
    });
    api.addEventListener("executed", (e) => {
      const d = e.detail || {};
      st.executed[d.display_node || d.node] = d.output;
    });
    for (const t of ["execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(t, (e) => {
        if (st.promptId && e.detail?.prompt_id && e.detail.prompt_id !== st.promptId) return;
        st.done = true;
        st.status = t;
        if (t === "execution_error") st.error = e.detail;
      });
    }
  });
}

async function queueAndWait(page, o) {
  await installWatchers(page);
  if (o.fresh) {
    // drop cached outputs so every node executes (the worker applies the flag when it is idle)
    await fetch(`${o.url}/free`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ unload_models: true, free_memory: true }),
    });
    await sleep(2000);
  }
  await page.evaluate(() => {
    Object.assign(window.__ivShot, { events: [], executed: {}, promptId: null, done: false, status: null, error: null });
  });
  const ok = await page.evaluate(async () => {
    try {
      await window.app.queuePrompt(0);
      return { ok: true, nodeErrors: window.app.lastNodeErrors || null };
    } catch (e) {
      return { ok: false, message: String(e?.message || e) };
    }
  });
  if (!ok.ok) throw new Error(`queuePrompt failed: ${ok.message}`);
  if (ok.nodeErrors && Object.keys(ok.nodeErrors).length)
    throw new Error(`the server refused the prompt: ${JSON.stringify(ok.nodeErrors).slice(0, 2000)}`);

  const t0 = Date.now();
  const deadline = t0 + o.timeoutMin * 60000;
  let lastLog = 0;
  while (Date.now() < deadline) {
    const st = await page.evaluate(() => ({ ...window.__ivShot, executed: Object.keys(window.__ivShot.executed) }));
    const q = await getJson(`${o.url}/queue`).catch(() => null);
    const busy = q ? q.queue_running.length + q.queue_pending.length : -1;
    let hist = null;
    if (st.promptId) hist = (await getJson(`${o.url}/history/${st.promptId}`).catch(() => ({})))[st.promptId];
    if ((st.done || (hist && hist.status?.completed !== undefined)) && busy === 0) {
      const status = hist?.status?.status_str || st.status;
      console.log(`  finished in ${((Date.now() - t0) / 1000).toFixed(0)} s: ${status} (prompt ${st.promptId})`);
      if (st.error) console.log(`  error: ${st.error.node_type}: ${st.error.exception_message}`);
      return { promptId: st.promptId, status, error: st.error };
    }
    if (!st.promptId && busy === 0 && Date.now() - t0 > 60000)
      throw new Error("nothing was queued (validation error in the editor? see the browser console lines above)");
    if (Date.now() - lastLog > 30000) {
      lastLog = Date.now();
      console.log(`  running... ${((Date.now() - t0) / 1000).toFixed(0)} s, queue ${busy}, nodes done: [${st.executed.join(", ")}]`);
    }
    await sleep(2000);
  }
  throw new Error(`not finished after ${o.timeoutMin} min`);
}

async function waitForImages(page, timeoutMs = 30000) {
  try {
    await page.waitForFunction(
      () => {
        const imgs = [...document.querySelectorAll("img")];
        const nodeImgs = window.app.graph.nodes.flatMap((n) => n.imgs || []);
        return [...imgs, ...nodeImgs].every((i) => i.complete);
      },
      null,
      { timeout: timeoutMs, polling: 500 }
    );
  } catch {
    console.log("  (some images were still loading)");
  }
}

async function fitView(page, o) {
  await page.evaluate(() => {
    const app = window.app;
    const c = app.canvas;
    c.deselectAll?.();
    // draw full node detail even when a big workflow needs a small zoom (page only, no setting saved)
    if ("min_font_size_for_lod" in c) c.min_font_size_for_lod = 0;
    const th = window.LiteGraph.NODE_TITLE_HEIGHT;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    const grow = (x, y, w, h) => {
      x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
    };
    for (const n of app.graph.nodes) {
      // title bar + 30 px above it for the badge the pack's extension draws over stage nodes
      grow(n.pos[0], n.pos[1] - th - 30, n.size[0], n.size[1] + th + 30);
    }
    for (const g of app.graph.groups || []) grow(g.pos[0], g.pos[1], g.size[0], g.size[1]);
    if (!isFinite(x0)) return;
    const b = [x0, y0, x1 - x0, y1 - y0];
    // the editor draws menus over the canvas: keep a margin, the Run bar is at the top/bottom
    c.ds.fitToBounds(b, { zoom: 0.86 });
    c.setDirty(true, true);
    c.draw?.(true, true);
  });
  await sleep(800);
}

async function report(page) {
  return page.evaluate(() => {
    const LGraphCanvas = window.LGraphCanvas || window.app.canvas.constructor;
    const types = ["IMAGEN_VIDEO_MODEL", "IMAGEN_VIDEO_TEXT_ENCODER", "IMAGEN_VIDEO_STORY"];
    const colours = {};
    for (const t of types)
      colours[t] = {
        link: LGraphCanvas.link_type_colors?.[t] ?? null,
        slot: window.app.canvas.default_connection_color_byType?.[t] ?? null,
      };
    const nodes = window.app.graph.nodes
      .filter((n) => /^ImagenVideo/.test(n.type))
      .map((n) => ({
        id: n.id,
        type: n.type,
        title: n.title,
        badge: n.imagenVideoInfo ?? null,
        images: (n.imgs || []).map((i) => (i.src.startsWith("blob:") ? "live-preview(blob)" : new URL(i.src).searchParams.get("filename") || i.src)),
        output_keys: Object.keys(window.__ivShot?.executed?.[String(n.id)] || {}),
      }));
    return { colours, nodes };
  });
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const { chromium } = loadPlaywright();
  fs.mkdirSync(o.outDir, { recursive: true });

  await getJson(`${o.url}/system_stats`).catch((e) => {
    console.error(`ComfyUI does not answer at ${o.url}: ${e.message}`);
    process.exit(1);
  });
  const templates = await getJson(`${o.url}/api/workflow_templates`);
  const available = templates[o.pack] || [];
  if (o.all) o.names.push(...available.filter((n) => !o.names.includes(n)).sort());
  if (!o.names.length) {
    console.error(`no workflow named; the server lists for ${o.pack}: ${available.join(", ") || "(none: is the pack loaded?)"}`);
    process.exit(2);
  }

  // skip the first-run "Get Started with a Template" dialog
  await fetch(`${o.url}/settings/Comfy.TutorialCompleted`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "true",
  });

  const browser = await chromium.launch({
    executablePath: o.chromium,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  let failures = 0;
  try {
    const page = await browser.newPage({ viewport: { width: o.width, height: o.height }, deviceScaleFactor: o.scale });
    page.on("console", (m) => {
      if (m.type() === "error" && !/^Failed to load resource/.test(m.text())) console.log(`  [browser] ${m.text().slice(0, 300)}`);
    });
    page.on("response", (r) => {
      if (r.status() >= 400) console.log(`  [http ${r.status()}] ${r.url().replace(o.url, "")}`);
    });
    page.on("pageerror", (e) => console.log(`  [page error] ${String(e).slice(0, 300)}`));
    await page.goto(o.url, { waitUntil: "domcontentloaded", timeout: 120000 });
    await waitForEditor(page);
    await closeDialogs(page);
    const vueOn = await page.evaluate(async (vue) => {
      const settings = window.app.extensionManager?.setting;
      if (!settings) return "no settings API";
      await settings.set("Comfy.VueNodes.Enabled", vue);
      return settings.get("Comfy.VueNodes.Enabled");
    }, o.vue);
    console.log(`node renderer: ${o.vue ? "Vue" : "canvas"} (Comfy.VueNodes.Enabled = ${vueOn})`);
    if (o.vue) {
      // The 1.27 frontend keeps the Vue nodes of the graph that was open when the renderer was
      // switched on and does not redraw them for a graph loaded afterwards; starting the editor
      // with the setting already on (it is stored on the server) avoids that.
      await page.reload({ waitUntil: "domcontentloaded", timeout: 120000 });
      await waitForEditor(page);
      await closeDialogs(page);
    }
    if (o.clean) {
      await page.addStyleTag({ content: ".minimap-main-container { display: none !important; }" });
      await page.evaluate(() => { window.app.canvas.show_info = false; });
    }

    for (const name of o.names) {
      console.log(`${name}:`);
      try {
        const wf = await getJson(`${o.url}/api/workflow_templates/${encodeURIComponent(o.pack)}/${encodeURIComponent(name)}.json`);
        await loadWorkflow(page, wf, name);
        await closeDialogs(page);
        if (o.queue) {
          const r = await queueAndWait(page, o);
          if (r.status !== "success" && r.status !== "execution_success") failures++;
          await waitForImages(page);
          await sleep(1000);
        }
        await fitView(page, o);
        await closeDialogs(page);
        const info = await report(page);
        for (const [t, c] of Object.entries(info.colours)) console.log(`  colour ${t}: link=${JSON.stringify(c.link)} slot=${JSON.stringify(c.slot)}`);
        for (const n of info.nodes)
          if (n.badge || n.images.length || n.output_keys.length)
            console.log(`  #${n.id} ${n.title}: badge=${JSON.stringify(n.badge)} shows=${JSON.stringify(n.images)} ui keys=[${n.output_keys.join(", ")}]`);
        const file = path.join(o.outDir, `workflow_${name}${o.vue ? "_vue" : ""}.png`);
        await page.screenshot({ path: file });
        console.log(`  saved ${file}`);
      } catch (e) {
        failures++;
        console.log(`  FAILED: ${e.message}`);
      }
    }
  } finally {
    await browser.close();
  }
  process.exit(failures ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
