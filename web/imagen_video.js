// Imagen Video pack: colours our socket types and shows, on each stage node after it ran,
// what it made ("16 frames × 32×32 @ 4 fps"). Only our own node types are touched.
import { app } from "../../scripts/app.js";

const TYPE_COLOURS = {
  IMAGEN_VIDEO_MODEL: "#c9a227",
  IMAGEN_VIDEO_TEXT_ENCODER: "#d4732a",
};

const STAGE_NODES = new Set([
  "ImagenVideoSampler",
  "ImagenVideoSpatialSR",
  "ImagenVideoTemporalSR",
  "ImagenVideoDistilledSampler",
  "ImagenVideoStory",
  "ImagenVideoStoryToVideo",
]);

function formatInfo(info) {
  const fps = Number(info.fps);
  const fpsText = Number.isInteger(fps) ? String(fps) : fps.toFixed(2);
  return `${info.frames} frames × ${info.width}×${info.height} @ ${fpsText} fps`;
}

// The colour palette service rewrites these tables when the palette loads or changes and
// would blank our entries (""), so each of our types gets a getter that always answers our
// colour while the rest of the table stays the palette's.
function pinColours(table) {
  if (!table) return;
  for (const [type, colour] of Object.entries(TYPE_COLOURS)) {
    Object.defineProperty(table, type, {
      get: () => colour,
      set: () => {},
      enumerable: true,
      configurable: true,
    });
  }
}

// The frontend keeps the image of the last run per node in app.nodePreviewImages; when a
// node's output changes we drop the stale entry so the new animated preview is shown.
function forgetPreview(node) {
  const previews = app.nodePreviewImages;
  if (!previews) return;
  const graph = node.graph;
  const key = graph && graph !== app.graph && graph.id ? `${graph.id}:${node.id}` : String(node.id);
  const urls = previews[key];
  if (Array.isArray(urls)) {
    for (const url of urls) if (typeof url === "string" && url.startsWith("blob:")) URL.revokeObjectURL(url);
  }
  delete previews[key];
}

app.registerExtension({
  name: "ImagenVideo.ui",

  setup() {
    const canvas = app.canvas;
    if (!canvas) return;
    canvas.default_connection_color_byType = canvas.default_connection_color_byType || {};
    pinColours(canvas.default_connection_color_byType);
    pinColours(canvas.constructor?.link_type_colors);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!STAGE_NODES.has(nodeData.name)) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      forgetPreview(this);
      onExecuted?.apply(this, arguments);
      const info = message?.imagen_video_info?.[0];
      this.imagenVideoInfo = info ? formatInfo(info) : undefined;
      this.setDirtyCanvas?.(true, true);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (!this.imagenVideoInfo || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "12px sans-serif";
      const text = this.imagenVideoInfo;
      const w = ctx.measureText(text).width + 12;
      const x = 0;
      const y = -LiteGraph.NODE_TITLE_HEIGHT - 24;
      ctx.fillStyle = "rgba(20, 20, 20, 0.85)";
      ctx.beginPath();
      ctx.roundRect ? ctx.roundRect(x, y, w, 18, 5) : ctx.rect(x, y, w, 18);
      ctx.fill();
      ctx.fillStyle = "#e8d48a";
      ctx.fillText(text, x + 6, y + 13);
      ctx.restore();
    };
  },
});
