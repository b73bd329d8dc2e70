// The run's DAG on a WebGL canvas (pixi.js): layout in a worker, positions that never change
// once drawn, map groups with progress bars that expand into grids of member cells.
import { Application, BitmapText, BufferImageSource, Container, Graphics, Sprite, Texture } from "pixi.js";
import "pixi.js/browser"; // the browser's extensions, loaded up front instead of by pixi's own import()

export interface GNode {
  id: string;
  kind: "step" | "group" | "run";
  label: string;
  step_name?: string;
  status: string;
  counts?: Record<string, number>;
  size?: number;
  shown?: number;
  first_position?: number;
  last_position?: number;
  first_invocation?: string; // a group's map marker
  step_id?: string;
  run_id?: string;
  group?: string;
  position?: number;
  expanded?: boolean;
  graph?: { nodes: GNode[]; edges: GEdge[] }; // a child run's own graph: drawn inside its frame
}

export interface GEdge {
  source: string;
  target: string;
  count: number;
}

interface Placed {
  node: GNode;
  x: number;
  y: number;
  w: number;
  h: number;
  box: Graphics | Sprite; // a step is a sprite of a shared per-status texture: cheap by the 100,000
  label?: BitmapText; // made when first shown: labels of a zoomed-out big graph are never drawn
  sub?: BitmapText;
  inner?: BitmapText; // a child run's nested nodes, one line each
}

interface Region {
  group: string;
  x: number;
  y: number;
  cols: number;
  members: GNode[];
  index: Map<string, number>;
  gfx: Graphics; // frame, connector and selection
  cells: Sprite; // a block of pixels per member in one texture, scaled up: one quad to draw, however many
  pixels: Uint8Array; // RGBA, cols * PX wide
  source: BufferImageSource;
  dirty: Set<number>; // members whose cell changed colour since the last frame
  full: boolean; // every cell must be painted again
  title: BitmapText;
}

const CELL = 12;
const GAP = 3;
const PX = 4; // canvas pixels per member cell (3 of colour, 1 of gap), scaled to CELL + GAP
const SLICE_MS = 8; // work per frame or task before giving the browser back its main thread
const EDGE_CHUNK = 1000; // edges per Graphics object; one more object is added each frame

function cellTexture(cols: number, rows: number): [Uint8Array, BufferImageSource] {
  const pixels = new Uint8Array(cols * PX * rows * PX * 4);
  const source = new BufferImageSource({ resource: pixels, width: cols * PX, height: rows * PX, scaleMode: "nearest" });
  return [pixels, source];
}

function nextTask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
const SIZES = { step: [180, 42], group: [230, 62], run: [230, 62] } as const;
const NESTED_ROWS = 10; // rows of a child run's nested nodes drawn inside its frame
const ROW = 22;

/** A node's box: a child run with a graph of its own is a frame tall enough for its rows. */
function sizeOf(n: GNode): [number, number] {
  const [w, h] = SIZES[n.kind];
  const inner = n.graph?.nodes.filter((m) => !m.group).length ?? 0;
  return inner ? [w + 40, h + 8 + ROW * Math.min(inner, NESTED_ROWS + 1)] : [w, h];
}
const ORDER = ["completed", "cached", "failed", "running", "stopped", "skipped", "initializing"];

type Palette = Record<string, [number, number]> & { edge: [number, number]; text: [number, number]; bg: [number, number]; sel: [number, number] };

const LIGHT: Palette = {
  initializing: [0xf1f3f5, 0x9aa0a6],
  running: [0xfff4d6, 0xd39e00],
  completed: [0xdff3e4, 0x2f9e44],
  cached: [0xdcf1f6, 0x1098ad],
  failed: [0xfbe1e3, 0xe03131],
  stopped: [0xebe3f7, 0x7048e8],
  skipped: [0xf8f9fa, 0xadb5bd],
  edge: [0x9aa0a6, 0x9aa0a6],
  text: [0x1f2328, 0x57606a],
  bg: [0xffffff, 0xffffff],
  sel: [0x1c7ed6, 0x1c7ed6],
};
const DARK: Palette = {
  initializing: [0x2b3036, 0x868e96],
  running: [0x3d3210, 0xfcc419],
  completed: [0x16301f, 0x51cf66],
  cached: [0x0f2f36, 0x3bc9db],
  failed: [0x3b1518, 0xff6b6b],
  stopped: [0x2a2140, 0x9775fa],
  skipped: [0x24282d, 0x6c757d],
  edge: [0x5c636a, 0x5c636a],
  text: [0xe6edf3, 0x9da7b1],
  bg: [0x0d1117, 0x0d1117],
  sel: [0x4dabf7, 0x4dabf7],
};

function groupStatus(counts: Record<string, number>): string {
  if (counts.running) return "running";
  if (counts.failed) return "failed";
  if (counts.initializing) return counts.completed || counts.cached ? "running" : "initializing";
  if (counts.stopped) return "stopped";
  if (counts.skipped) return "skipped";
  if (counts.completed) return "completed";
  if (counts.cached) return "cached";
  return "initializing";
}

export class GraphView {
  app = new Application();
  world = new Container({ isRenderGroup: true }); // panning moves one transform on the GPU, no vertices
  edgeLayer = new Container();
  nodeLayer = new Container();
  labelLayer = new Container();
  regionLayer = new Container();
  placed = new Map<string, Placed>();
  regions = new Map<string, Region>();
  edges: GEdge[] = [];
  palette: Palette = LIGHT;
  selected: string | null = null;
  filter: { text: string; status: string } = { text: "", status: "" };
  private buckets = new Map<number, number>(); // x bucket -> lowest free y
  private dirtyNodes = new Set<Placed>();
  private textures = new Map<string, Texture>();
  private dirtyRegions = new Set<Region>();
  private labelsDirty = true;
  private lastView = "";
  private bottom = 0;
  private worker: Worker;
  private layoutId = 0;
  private pending = new Map<number, (p: Record<string, [number, number]>) => void>();
  private edgesDirty = false;
  private edgeQueue: GEdge[] = []; // edges still to be drawn, a chunk per frame
  private drawnWaiters: (() => void)[] = [];
  private fitted = false;
  lastLayoutMs = 0;
  onChange: (node: GNode) => void = () => {}; // a node's status or counts changed live
  ready = false;

  constructor(
    private host: HTMLElement,
    private onSelect: (node: GNode | null) => void,
  ) {
    this.worker = new Worker(new URL("./layout.worker.ts", import.meta.url), { type: "module" });
    this.worker.onmessage = (event) => {
      const { id, positions, ms } = event.data;
      this.lastLayoutMs = ms ?? 0;
      this.pending.get(id)?.(positions ?? {});
      this.pending.delete(id);
    };
  }

  async init(dark: boolean): Promise<void> {
    this.palette = dark ? DARK : LIGHT;
    await this.app.init({
      resizeTo: this.host,
      background: this.palette.bg[0],
      antialias: false, // multisampling every frame is what software WebGL spends most on; boxes are antialiased textures
      preference: "webgl",
      preserveDrawingBuffer: true, // lets tests and screenshots read the canvas
      autoDensity: true,
      resolution: Math.min(window.devicePixelRatio || 1, 2),
      autoStart: false, // drawn on demand (below): an idle graph costs no CPU
      skipExtensionImports: true, // imported above, in the same chunk
    });
    this.app.canvas.setAttribute("aria-label", "run graph");
    this.app.canvas.tabIndex = 0;
    this.host.append(this.app.canvas);
    this.world.addChild(this.edgeLayer, this.regionLayer, this.nodeLayer, this.labelLayer);
    this.app.stage.addChild(this.world);
    this.bindInput();
    const loop = () => {
      if (this.destroyed) return;
      if (this.frame()) this.app.render();
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }
  private destroyed = false;

  destroy(): void {
    this.destroyed = true;
    this.worker.terminate();
    this.app.destroy(true, { children: true });
  }

  setTheme(dark: boolean): void {
    this.palette = dark ? DARK : LIGHT;
    for (const t of this.textures.values()) t.destroy(true);
    this.textures.clear();
    this.app.renderer.background.color = this.palette.bg[0];
    for (const p of this.placed.values()) this.drawNode(p);
    for (const r of this.regions.values()) {
      r.full = true;
      this.drawRegion(r);
    }
    this.edgesDirty = true;
  }

  // -- data ------------------------------------------------------------------------------------
  /** Merge a graph from the API: known nodes keep their place, new ones are appended. One
   * merge at a time (placement yields the main thread): a later graph waits for the one before. */
  update(nodes: GNode[], edges: GEdge[]): Promise<void> {
    const merged = this.merging.then(() => this.merge(nodes, edges));
    this.merging = merged.catch(() => undefined);
    return merged;
  }
  private merging: Promise<void> = Promise.resolve();

  private async merge(nodes: GNode[], edges: GEdge[]): Promise<void> {
    const same = edges.length === this.edges.length && edges.every((e, i) => e.source === this.edges[i].source && e.target === this.edges[i].target);
    this.edges = edges;
    const skeleton = nodes.filter((n) => !n.group);
    const fresh: GNode[] = [];
    const present = new Set(skeleton.map((n) => n.id));
    for (const n of skeleton) {
      const p = this.placed.get(n.id);
      if (p) {
        p.node = n;
        this.drawNode(p);
      } else fresh.push(n);
    }
    for (const [id, p] of this.placed) {
      if (!present.has(id)) {
        if (present.has("g:" + id)) {
          // a single step became the first member of a group: the group takes its place
          const g = skeleton.find((n) => n.id === "g:" + id)!;
          if (!this.placed.has(g.id)) {
            this.place(g, p.x, p.y);
            fresh.splice(fresh.indexOf(g), 1);
          }
        }
        this.remove(id);
      }
    }
    if (fresh.length) {
      if (this.placed.size === 0) {
        performance.mark("unspool:layout-start");
        const positions = await this.layout(fresh);
        performance.mark("unspool:layout-done");
        await inSlices(fresh, (n) => {
          const [x, y] = positions[n.id] ?? [0, 0];
          this.place(n, x, y);
        });
      } else {
        await inSlices(fresh, (n) => this.append(n));
      }
    }
    // members of expanded groups
    const members = new Map<string, GNode[]>();
    for (const n of nodes) if (n.group) (members.get(n.group) ?? members.set(n.group, []).get(n.group)!).push(n);
    for (const [gid, list] of members) this.setRegion(gid, list);
    for (const gid of [...this.regions.keys()]) if (!members.has(gid)) this.dropRegion(gid);
    if (!same || fresh.length) this.edgesDirty = true;
    if (!this.fitted && this.placed.size) {
      this.fit();
      this.fitted = true;
    }
    this.ready = true;
  }

  /** Resolves once everything known has been painted and drawn (drawing is spread over frames). */
  drawn(): Promise<void> {
    return new Promise((resolve) => this.drawnWaiters.push(resolve));
  }

  /** A status change from the event stream: "exact" when applied to a node or a drawn member,
   * "guess" when a folded group's counts were moved by the lifecycle (the caller reconciles
   * later), "" when the step is not on the graph yet. */
  apply(change: { invocation_id?: string; status: string; map?: string | null }): "exact" | "guess" | "" {
    const id = change.invocation_id ?? "";
    const p = this.placed.get(id);
    if (p && p.node.kind === "step") {
      if (p.node.status !== change.status) {
        p.node.status = change.status;
        this.drawNode(p);
        this.onChange(p.node);
      }
      return "exact";
    }
    // a map member: the engine's marker names its group
    const g = change.map ? this.placed.get("g:" + change.map) : undefined;
    if (g && g.node.kind === "group") {
      const n = g.node;
      const region = this.regions.get(n.id);
      const at = region?.index.get(id);
      const member = at !== undefined ? region!.members[at] : undefined;
      const before = member?.status ?? guessBefore(n.counts ?? {}, change.status);
      const how = member ? "exact" : "guess";
      if (before === change.status) return how;
      // no member in the guessed state: the counts were fetched after this change already
      if (!member && !n.counts?.[before]) return how;
      const counts = { ...(n.counts ?? {}) };
      if (counts[before]) counts[before] -= 1;
      if (!counts[before]) delete counts[before];
      counts[change.status] = (counts[change.status] ?? 0) + 1;
      n.counts = counts;
      n.status = groupStatus(counts);
      this.drawNode(g);
      this.onChange(n);
      if (member && region) {
        member.status = change.status;
        region.dirty.add(at!);
      }
      return how;
    }
    return "";
  }

  applyRun(runId: string, status: string): void {
    const p = this.placed.get("r:" + runId);
    if (p && p.node.status !== status) {
      p.node.status = status;
      this.drawNode(p);
      this.onChange(p.node);
    }
  }

  private layout(nodes: GNode[]): Promise<Record<string, [number, number]>> {
    const id = ++this.layoutId;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.worker.postMessage({
        id,
        nodes: nodes.map((n) => ({ id: n.id, width: sizeOf(n)[0], height: sizeOf(n)[1] })),
        edges: this.edges.map((e) => ({ source: e.source, target: e.target })),
      });
    });
  }

  private append(n: GNode): void {
    const [w] = sizeOf(n);
    let x = 0;
    let any = false;
    for (const e of this.edges) {
      if (e.target !== n.id) continue;
      const src = this.placed.get(e.source);
      if (src) {
        x = Math.max(x, src.x + src.w + 60);
        any = true;
      }
    }
    if (!any) x = this.minX();
    let y = 0;
    for (let b = Math.floor(x / 40); b <= Math.floor((x + w) / 40); b++) y = Math.max(y, this.buckets.get(b) ?? this.topY());
    this.place(n, x, y);
  }

  private minX(): number {
    let m = Infinity;
    for (const p of this.placed.values()) m = Math.min(m, p.x);
    return m === Infinity ? 0 : m;
  }

  private topY(): number {
    let m = Infinity;
    for (const p of this.placed.values()) m = Math.min(m, p.y);
    return m === Infinity ? 0 : m;
  }

  private place(n: GNode, x: number, y: number): void {
    const [w, h] = sizeOf(n);
    const box = n.kind === "step" ? new Sprite() : new Graphics();
    const p: Placed = { node: n, x, y, w, h, box };
    box.position.set(x, y);
    this.nodeLayer.addChild(box);
    this.placed.set(n.id, p);
    this.labelsDirty = true;
    for (let b = Math.floor(x / 40); b <= Math.floor((x + w) / 40); b++) {
      this.buckets.set(b, Math.max(this.buckets.get(b) ?? -Infinity, y + h + 16));
    }
    this.bottom = Math.max(this.bottom, y + h);
    this.drawNode(p);
  }

  private remove(id: string): void {
    const p = this.placed.get(id);
    if (!p) return;
    p.box.destroy();
    p.label?.destroy();
    p.sub?.destroy();
    p.inner?.destroy();
    this.dirtyNodes.delete(p);
    this.placed.delete(id);
  }

  private drawNode(p: Placed): void {
    this.dirtyNodes.add(p); // painted once at the next frame, however many changes came
  }

  private makeLabels(p: Placed): void {
    p.label = new BitmapText({ text: "", style: { fontFamily: "sans-serif", fontSize: 13, fill: 0xffffff } });
    p.label.position.set(p.x + 10, p.y + 7);
    this.labelLayer.addChild(p.label);
    if (p.node.kind !== "step") {
      p.sub = new BitmapText({ text: "", style: { fontFamily: "sans-serif", fontSize: 11, fill: 0xffffff } });
      p.sub.position.set(p.x + 10, p.y + 26);
      this.labelLayer.addChild(p.sub);
    }
    if (p.node.graph) {
      p.inner = new BitmapText({ text: "", style: { fontFamily: "sans-serif", fontSize: 11, fill: 0xffffff, lineHeight: ROW } });
      p.inner.position.set(p.x + 22, p.y + SIZES.run[1] + 5);
      this.labelLayer.addChild(p.inner);
    }
    this.paintLabels(p);
  }

  private paintLabels(p: Placed): void {
    const n = p.node;
    if (!p.label) return;
    const alpha = this.matches(n) ? 1 : 0.25;
    const label = n.kind === "group" ? `${n.label} ×${(n.size ?? 0).toLocaleString()}` : n.kind === "run" ? `↳ ${n.label}` : n.label;
    p.label.text = truncate(label, n.kind === "step" ? 24 : 30);
    p.label.style.fill = this.palette.text[0];
    p.label.alpha = alpha;
    if (p.sub) {
      const counts = n.counts ?? {};
      const total = Object.values(counts).reduce((a, b) => a + b, 0) || n.size || 0;
      const done = (counts.completed ?? 0) + (counts.cached ?? 0);
      p.sub.text = `${done.toLocaleString()}/${total.toLocaleString()} done` + (counts.running ? ` · ${counts.running.toLocaleString()} running` : "") + (counts.failed ? ` · ${counts.failed.toLocaleString()} failed` : "") + (n.expanded ? "  (expanded)" : "");
      p.sub.style.fill = this.palette.text[1];
      p.sub.alpha = alpha;
    }
    if (p.inner) {
      const rows = nestedRows(n);
      p.inner.text = rows.map((m) => m ? truncate(m.kind === "group" ? `${m.label} ×${m.size}` : m.kind === "run" ? `↳ ${m.label}` : m.label, 28) + `  ${m.status}` : `+${(n.graph!.nodes.length - NESTED_ROWS).toLocaleString()} more`).join("\n");
      p.inner.style.fill = this.palette.text[0];
      p.inner.alpha = alpha;
    }
  }

  private stepTexture(status: string, selected: boolean): Texture {
    const key = `${status}:${selected}`;
    let texture = this.textures.get(key);
    if (!texture) {
      const [fill, stroke] = this.palette[status] ?? this.palette.initializing;
      const [w, h] = SIZES.step;
      const g = new Graphics();
      g.roundRect(0, 0, w, h, 7).fill({ color: fill });
      g.roundRect(0, 0, w, h, 7).stroke({ width: selected ? 3 : 1.5, color: selected ? this.palette.sel[0] : stroke });
      g.circle(w - 12, h / 2, 4).fill({ color: stroke });
      texture = this.app.renderer.generateTexture({ target: g, resolution: 2, antialias: true });
      g.destroy();
      this.textures.set(key, texture);
    }
    return texture;
  }

  private paint(p: Placed): void {
    const n = p.node;
    const [fill, stroke] = this.palette[n.status] ?? this.palette.initializing;
    const dim = !this.matches(n);
    p.box.alpha = dim ? 0.25 : 1;
    this.paintLabels(p);
    if (p.box instanceof Sprite) {
      p.box.texture = this.stepTexture(n.status, this.selected === n.id);
      return;
    }
    const g = p.box;
    g.clear();
    g.roundRect(0, 0, p.w, p.h, n.kind === "run" ? 2 : 7).fill({ color: fill });
    g.roundRect(0, 0, p.w, p.h, n.kind === "run" ? 2 : 7).stroke({ width: this.selected === n.id ? 3 : 1.5, color: this.selected === n.id ? this.palette.sel[0] : stroke });
    if (n.kind === "run") g.roundRect(4, 4, p.w - 8, p.h - 8, 2).stroke({ width: 1, color: stroke, alpha: 0.6 });
    nestedRows(n).forEach((m, i) => {
      // a child run's own nodes, as rows inside its frame, coloured by their status
      if (!m) return;
      const [mfill, mstroke] = this.palette[m.status] ?? this.palette.initializing;
      const y = SIZES.run[1] + 4 + i * ROW;
      g.roundRect(12, y, p.w - 24, ROW - 4, 4).fill({ color: mfill }).stroke({ width: 1, color: mstroke });
    });
    {
      const counts = n.counts ?? {};
      const total = Object.values(counts).reduce((a, b) => a + b, 0) || n.size || 0;
      const bx = 10;
      const bw = p.w - 20;
      const by = SIZES[n.kind][1] - 16;
      g.rect(bx, by, bw, 7).fill({ color: this.palette.initializing[0] });
      let at = bx;
      for (const s of ORDER) {
        if (!counts[s] || !total) continue;
        const w = (bw * counts[s]) / total;
        g.rect(at, by, w, 7).fill({ color: this.palette[s][1] });
        at += w;
      }
    }
  }

  // -- expanded groups ---------------------------------------------------------------------------
  private setRegion(gid: string, members: GNode[]): void {
    let r = this.regions.get(gid);
    const owner = this.placed.get(gid);
    if (!owner) return;
    if (!r) {
      const cols = Math.max(10, Math.min(250, Math.ceil(Math.sqrt(members.length * 3))));
      const y = this.bottom + 70;
      const gfx = new Graphics();
      const title = new BitmapText({ text: "", style: { fontFamily: "sans-serif", fontSize: 12, fill: 0xffffff } });
      const rows = Math.max(1, Math.ceil(members.length / cols));
      const [pixels, source] = cellTexture(cols, rows);
      const cells = new Sprite(new Texture({ source }));
      cells.position.set(owner.x + GAP, y + GAP);
      cells.scale.set((CELL + GAP) / PX);
      r = { group: gid, x: owner.x, y, cols, members, index: new Map(), gfx, cells, pixels, source, dirty: new Set(), full: true, title };
      this.regionLayer.addChild(cells, gfx, title);
      this.regions.set(gid, r);
      this.bottom = y + rows * (CELL + GAP) + 20;
    }
    const rows = Math.max(1, Math.ceil(members.length / r.cols));
    if (rows * PX > r.source.height) {
      const old = r.cells.texture;
      [r.pixels, r.source] = cellTexture(r.cols, rows);
      r.cells.texture = new Texture({ source: r.source });
      old.destroy(true);
    }
    r.members = members;
    r.index = new Map(members.map((m, i) => [m.id, i]));
    r.full = true;
    this.drawRegion(r);
  }

  private dropRegion(gid: string): void {
    const r = this.regions.get(gid);
    if (!r) return;
    r.gfx.destroy();
    r.cells.destroy(true);
    r.title.destroy();
    this.dirtyRegions.delete(r);
    this.regions.delete(gid);
  }

  private drawRegion(r: Region): void {
    this.dirtyRegions.add(r);
  }

  /** Paints member cells on the region's canvas: all of them, or only those that changed. */
  private paintCells(r: Region): void {
    const px = r.pixels;
    const stride = r.cols * PX * 4;
    const cell = (i: number) => {
      const status = r.members[i]?.status ?? "initializing";
      const color = (this.palette[status] ?? this.palette.initializing)[1];
      const red = color >> 16, green = (color >> 8) & 255, blue = color & 255;
      const at = Math.floor(i / r.cols) * PX * stride + (i % r.cols) * PX * 4;
      for (let dy = 0; dy < PX - 1; dy++) {
        for (let dx = 0, o = at + dy * stride; dx < PX - 1; dx++, o += 4) {
          px[o] = red;
          px[o + 1] = green;
          px[o + 2] = blue;
          px[o + 3] = 255;
        }
      }
    };
    if (r.full) {
      px.fill(0);
      r.members.forEach((_, i) => cell(i));
      r.full = false;
    } else {
      for (const i of r.dirty) cell(i);
    }
    r.dirty.clear();
    r.source.update();
  }

  private paintRegion(r: Region): void {
    const g = r.gfx;
    g.clear();
    const rows = Math.ceil(r.members.length / r.cols);
    const width = Math.min(r.members.length, r.cols) * (CELL + GAP) + GAP;
    const height = rows * (CELL + GAP) + GAP;
    g.position.set(r.x, r.y);
    g.rect(-6, -6, width + 12, height + 12).stroke({ width: 1, color: this.palette.edge[0] });
    const owner = this.placed.get(r.group);
    if (owner) {
      g.moveTo(owner.x + 20 - r.x, owner.y + owner.h - r.y).lineTo(20, -6).stroke({ width: 1, color: this.palette.edge[0] });
    }
    if (this.selected && r.index.has(this.selected)) {
      const i = r.index.get(this.selected)!;
      g.rect(GAP + (i % r.cols) * (CELL + GAP) - 2, GAP + Math.floor(i / r.cols) * (CELL + GAP) - 2, CELL + 4, CELL + 4).stroke({ width: 2, color: this.palette.sel[0] });
    }
    r.title.text = `${owner?.node.label ?? r.group}: ${r.members.length} of ${owner?.node.size ?? r.members.length} members`;
    r.title.style.fill = this.palette.text[1];
    r.title.position.set(r.x, r.y - 24);
  }

  // -- drawing -----------------------------------------------------------------------------------
  /** Applies what changed since the last frame; true when the canvas must be drawn again. */
  private frame(): boolean {
    let changed = this.dirtyNodes.size > 0 || this.dirtyRegions.size > 0 || this.edgesDirty || (this.labelsDirty && this.fitted) || this.edgeQueue.length > 0;
    const until = performance.now() + SLICE_MS;
    for (const r of this.regions.values()) {
      if (r.full || r.dirty.size) {
        this.paintCells(r);
        changed = true;
      }
    }
    for (const r of this.dirtyRegions) this.paintRegion(r);
    this.dirtyRegions.clear();
    // nodes, then edges, a slice per frame: a big graph never holds the main thread for long
    for (const p of this.dirtyNodes) {
      this.paint(p);
      this.dirtyNodes.delete(p);
      if (performance.now() > until) break;
    }
    if (this.edgesDirty && this.dirtyNodes.size === 0) {
      this.edgesDirty = false;
      for (const c of this.edgeLayer.removeChildren()) c.destroy();
      this.edgeQueue = this.edges.slice();
    }
    if (this.edgeQueue.length && !this.edgesDirty && this.dirtyNodes.size === 0) this.drawEdges(this.edgeQueue.splice(0, EDGE_CHUNK));
    const view = `${this.world.x},${this.world.y},${this.world.scale.x},${this.host.clientWidth},${this.host.clientHeight},${this.app.renderer.width},${this.app.renderer.height}`;
    if (view !== this.lastView) {
      this.lastView = view;
      this.labelsDirty = true;
      changed = true;
    }
    if (this.labelsDirty && this.fitted) {
      // (not while a first graph is being placed: the view moves when it is complete)
      this.labelsDirty = false;
      const show = this.world.scale.x > 0.35;
      this.labelLayer.visible = show;
      if (show) {
        // labels only for nodes in (or near) the viewport, made on first sight
        const s = this.world.scale.x;
        const x0 = -this.world.x / s - 200, y0 = -this.world.y / s - 100;
        const x1 = x0 + this.host.clientWidth / s + 400, y1 = y0 + this.host.clientHeight / s + 200;
        for (const p of this.placed.values()) {
          if (!p.label && p.x + p.w >= x0 && p.x <= x1 && p.y + p.h >= y0 && p.y <= y1) this.makeLabels(p);
        }
      }
    }
    if (!changed && this.drawnWaiters.length && !this.edgeQueue.length && !this.edgesDirty && !this.dirtyNodes.size) {
      for (const resolve of this.drawnWaiters.splice(0)) resolve();
    }
    return changed;
  }

  private drawEdges(edges: GEdge[]): void {
    const g = new Graphics();
    this.edgeLayer.addChild(g);
    for (const e of edges) {
      const a = this.placed.get(e.source);
      const b = this.placed.get(e.target);
      if (!a || !b) continue;
      const x1 = a.x + a.w;
      const y1 = a.y + a.h / 2;
      const x2 = b.x;
      const y2 = b.y + b.h / 2;
      if (this.edges.length > 3000) {
        g.moveTo(x1, y1).lineTo(x2, y2); // straight: curves of many thousands cost too much to build
        continue;
      }
      const dx = Math.max(30, (x2 - x1) / 2);
      g.moveTo(x1, y1).bezierCurveTo(x1 + dx, y1, x2 - dx, y2, x2, y2);
    }
    g.stroke({ width: 1.5, color: this.palette.edge[0], alpha: 0.9 });
  }

  // -- search, selection, view -------------------------------------------------------------------
  private matches(n: GNode): boolean {
    const { text, status } = this.filter;
    if (text && !(n.label.toLowerCase().includes(text) || (n.step_name ?? "").toLowerCase().includes(text))) return false;
    if (status && !(n.status === status || (n.counts && n.counts[status]))) return false;
    return true;
  }

  setFilter(text: string, status: string): GNode[] {
    this.filter = { text: text.toLowerCase(), status };
    const hits: GNode[] = [];
    for (const p of this.placed.values()) {
      this.drawNode(p);
      if ((text || status) && this.matches(p.node)) hits.push(p.node);
    }
    return hits;
  }

  select(id: string | null, center = false): GNode | null {
    const before = this.selected;
    this.selected = id;
    for (const key of [before, id]) {
      if (!key) continue;
      const p = this.placed.get(key);
      if (p) this.drawNode(p);
      for (const r of this.regions.values()) if (r.index.has(key)) this.drawRegion(r);
    }
    const found = id ? this.find(id) : null;
    if (found && center) this.centerOn(found.x + found.w / 2, found.y + found.h / 2);
    return found?.node ?? null;
  }

  find(id: string): { node: GNode; x: number; y: number; w: number; h: number } | null {
    const p = this.placed.get(id);
    if (p) return p;
    for (const r of this.regions.values()) {
      const i = r.index.get(id);
      if (i !== undefined) {
        return { node: r.members[i], x: r.x + GAP + (i % r.cols) * (CELL + GAP), y: r.y + GAP + Math.floor(i / r.cols) * (CELL + GAP), w: CELL, h: CELL };
      }
    }
    return null;
  }

  hit(sx: number, sy: number): GNode | null {
    const s = this.world.scale.x;
    const x = (sx - this.world.x) / s;
    const y = (sy - this.world.y) / s;
    for (const p of this.placed.values()) if (x >= p.x && x <= p.x + p.w && y >= p.y && y <= p.y + p.h) return p.node;
    for (const r of this.regions.values()) {
      const cx = Math.floor((x - r.x - GAP) / (CELL + GAP));
      const cy = Math.floor((y - r.y - GAP) / (CELL + GAP));
      if (cx < 0 || cy < 0 || cx >= r.cols) continue;
      const i = cy * r.cols + cx;
      if (i < r.members.length) return r.members[i];
    }
    return null;
  }

  fit(): void {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const p of this.placed.values()) {
      x0 = Math.min(x0, p.x); y0 = Math.min(y0, p.y);
      x1 = Math.max(x1, p.x + p.w); y1 = Math.max(y1, p.y + p.h);
    }
    for (const r of this.regions.values()) {
      const rows = Math.ceil(r.members.length / r.cols);
      x0 = Math.min(x0, r.x); y0 = Math.min(y0, r.y - 24);
      x1 = Math.max(x1, r.x + Math.min(r.members.length, r.cols) * (CELL + GAP)); y1 = Math.max(y1, r.y + rows * (CELL + GAP));
    }
    if (x0 === Infinity) return;
    const w = this.host.clientWidth || 800;
    const h = this.host.clientHeight || 500;
    const s = Math.max(0.05, Math.min(1.2, Math.min((w - 60) / (x1 - x0 || 1), (h - 60) / (y1 - y0 || 1))));
    this.world.scale.set(s);
    this.world.position.set((w - (x1 - x0) * s) / 2 - x0 * s, (h - (y1 - y0) * s) / 2 - y0 * s);
  }

  centerOn(x: number, y: number): void {
    const s = Math.max(this.world.scale.x, 0.8);
    this.world.scale.set(s);
    this.world.position.set(this.host.clientWidth / 2 - x * s, this.host.clientHeight / 2 - y * s);
  }

  zoom(factor: number, sx = this.host.clientWidth / 2, sy = this.host.clientHeight / 2): void {
    const s0 = this.world.scale.x;
    const s = Math.max(0.02, Math.min(4, s0 * factor));
    const wx = (sx - this.world.x) / s0;
    const wy = (sy - this.world.y) / s0;
    this.world.scale.set(s);
    this.world.position.set(sx - wx * s, sy - wy * s);
  }

  private bindInput(): void {
    const canvas = this.app.canvas;
    let drag: { x: number; y: number; wx: number; wy: number; moved: boolean } | null = null;
    canvas.addEventListener("pointerdown", (e) => {
      canvas.setPointerCapture(e.pointerId);
      drag = { x: e.clientX, y: e.clientY, wx: this.world.x, wy: this.world.y, moved: false };
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
      if (drag.moved) this.world.position.set(drag.wx + dx, drag.wy + dy);
    });
    canvas.addEventListener("pointerup", (e) => {
      if (drag && !drag.moved) {
        const rect = canvas.getBoundingClientRect();
        const node = this.hit(e.clientX - rect.left, e.clientY - rect.top);
        this.select(node?.id ?? null);
        this.onSelect(node);
      }
      drag = null;
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const rect = canvas.getBoundingClientRect();
      this.zoom(Math.exp(-e.deltaY * 0.0015), e.clientX - rect.left, e.clientY - rect.top);
    }, { passive: false });
    canvas.addEventListener("keydown", (e) => {
      const step = 60;
      if (e.key === "ArrowLeft") this.world.x += step;
      else if (e.key === "ArrowRight") this.world.x -= step;
      else if (e.key === "ArrowUp") this.world.y += step;
      else if (e.key === "ArrowDown") this.world.y -= step;
      else if (e.key === "+" || e.key === "=") this.zoom(1.2);
      else if (e.key === "-") this.zoom(1 / 1.2);
      else if (e.key === "0") this.fit();
      else return;
      e.preventDefault();
    });
  }

  /** What tests and benchmarks read: where each drawn node is and what it shows. */
  snapshot(): { id: string; x: number; y: number; h: number; status: string; counts?: Record<string, number>; inner?: string[] }[] {
    return [...this.placed.values()].map((p) => ({
      id: p.node.id, x: p.x, y: p.y, h: p.h, status: p.node.status, counts: p.node.counts,
      inner: p.node.graph ? nestedRows(p.node).map((m) => (m ? `${m.id}:${m.status}` : "more")) : undefined,
    }));
  }
}

/** Runs ``fn`` over ``items``, giving the main thread back every few milliseconds. */
async function inSlices<T>(items: T[], fn: (item: T) => void): Promise<void> {
  let until = performance.now() + SLICE_MS;
  for (let i = 0; i < items.length; i++) {
    fn(items[i]);
    if (performance.now() > until && i + 1 < items.length) {
      await nextTask();
      until = performance.now() + SLICE_MS;
    }
  }
}

function guessBefore(counts: Record<string, number>, next: string): string {
  // Without members loaded, the earlier state follows the lifecycle:
  // initializing -> running -> a final state.
  if (next === "running") return "initializing";
  if (counts.running) return "running";
  return "initializing";
}

/** The nested nodes drawn as rows of a child run's frame; null stands for "and N more". */
function nestedRows(n: GNode): (GNode | null)[] {
  const inner = n.graph?.nodes.filter((m) => !m.group) ?? [];
  return inner.length > NESTED_ROWS + 1 ? [...inner.slice(0, NESTED_ROWS), null] : inner;
}

function truncate(text: string, n: number): string {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}
