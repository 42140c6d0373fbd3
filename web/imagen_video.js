// Imagen Video pack: colours our socket types and shows, on each stage node after it ran,
// what it made ("16 frames × 32×32 @ 4 fps"). Only our own node types are touched.
import { app } from "../../scripts/app.js";

const TYPE_COLOURS = {
  IMAGEN_VIDEO_MODEL: "#c9a227",
  IMAGEN_VIDEO_TEXT_ENCODER: "#d4732a",
  IMAGEN_VIDEO_PHENAKI: "#4fa3a5",
};

const STAGE_NODES = new Set([
  "ImagenVideoSampler",
  "ImagenVideoSpatialSR",
  "ImagenVideoTemporalSR",
  "ImagenVideoDistilledSampler",
  "ImagenVideoStory",
  "ImagenVideoStoryToVideo",
  "ImagenVideoPhenakiSampler",
  "ImagenVideoPhenakiStory",
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

// What a stage node made, as a node badge. node.badges is the frontend's own badge list: the
// canvas renderer draws each entry above the node's title (LGraphNode.drawBadges calls the
// function and then getWidth/draw on what it returns), and the Vue node renderer of newer
// frontends shows each entry's text/fgColor/bgColor in the node header. The class of the
// frontend's own badges is not exported to extensions, so ours is a small object with the same
// drawing interface.
const BADGE_FG = "#e8d48a";
const BADGE_BG = "rgba(20, 20, 20, 0.85)";

class InfoBadge {
  constructor(text) {
    this.text = text;
    this.fgColor = BADGE_FG;
    this.bgColor = BADGE_BG;
    this.fontSize = 12;
    this.height = 20;
    this.padding = 6;
    this.cornerRadius = 5;
    this.xOffset = 0;
    this.yOffset = 0;
  }

  getWidth(ctx) {
    if (!this.text) return 0;
    if (!ctx) return this.text.length * 7 + 2 * this.padding;
    const font = ctx.font;
    ctx.font = `${this.fontSize}px sans-serif`;
    const w = ctx.measureText(this.text).width;
    ctx.font = font;
    return w + 2 * this.padding;
  }

  draw(ctx, x, y) {
    if (!ctx || !this.text) return;
    ctx.save();
    ctx.font = `${this.fontSize}px sans-serif`;
    const w = this.getWidth(ctx);
    x += this.xOffset;
    y += this.yOffset;
    ctx.fillStyle = this.bgColor;
    ctx.beginPath();
    if (ctx.roundRect) ctx.roundRect(x, y, w, this.height, this.cornerRadius);
    else ctx.rect(x, y, w, this.height);
    ctx.fill();
    ctx.fillStyle = this.fgColor;
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    ctx.fillText(this.text, x + this.padding, y + this.height / 2 + 1);
    ctx.restore();
  }
}

const EMPTY_BADGE = new InfoBadge("");

// One entry per stage node, added when the node is created, so that a renderer that reads the
// list once (the Vue node header) already holds it; it answers the node's latest info, or an
// empty badge (no text: not drawn, not listed) before the node ran.
function addInfoBadge(node) {
  if (!Array.isArray(node.badges) || node.imagenVideoBadge) return;
  node.imagenVideoBadge = () => node.imagenVideoInfoBadge ?? EMPTY_BADGE;
  node.badges.push(node.imagenVideoBadge);
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

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      addInfoBadge(this);
      return r;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const info = message?.imagen_video_info?.[0];
      this.imagenVideoInfo = info ? formatInfo(info) : undefined;
      this.imagenVideoInfoBadge = this.imagenVideoInfo ? new InfoBadge(this.imagenVideoInfo) : undefined;
      this.setDirtyCanvas?.(true, true);
    };
  },
});
