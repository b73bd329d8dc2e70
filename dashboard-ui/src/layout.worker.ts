// Lays out a graph with ELK's layered algorithm, off the main thread.
import ELK from "elkjs/lib/elk.bundled.js";

interface Request {
  id: number;
  nodes: { id: string; width: number; height: number }[];
  edges: { source: string; target: string }[];
}

const elk = new ELK();

self.onmessage = async (event: MessageEvent<Request>) => {
  const { id, nodes, edges } = event.data;
  const started = performance.now();
  const known = new Set(nodes.map((n) => n.id));
  if (nodes.length > 1500) {
    // ELK's layered algorithm grows fast with size: big skeletons get layers by longest path
    // and stacked rows, which takes milliseconds even for 100,000 nodes.
    (self as unknown as Worker).postMessage({ id, positions: rankLayout(nodes, edges, known), ms: performance.now() - started });
    return;
  }
  try {
    const result = await elk.layout({
      id: "root",
      layoutOptions: {
        "elk.algorithm": "layered",
        "elk.direction": "RIGHT",
        "elk.spacing.nodeNode": "24",
        "elk.layered.spacing.nodeNodeBetweenLayers": "60",
        "elk.layered.nodePlacement.strategy": "BRANDES_KOEPF",
        "elk.separateConnectedComponents": "true",
      },
      children: nodes.map((n) => ({ id: n.id, width: n.width, height: n.height })),
      edges: edges
        .filter((e) => known.has(e.source) && known.has(e.target))
        .map((e, i) => ({ id: `e${i}`, sources: [e.source], targets: [e.target] })),
    });
    const positions: Record<string, [number, number]> = {};
    for (const c of result.children ?? []) positions[c.id] = [c.x ?? 0, c.y ?? 0];
    (self as unknown as Worker).postMessage({ id, positions, ms: performance.now() - started });
  } catch (error) {
    (self as unknown as Worker).postMessage({ id, error: String(error) });
  }
};

function rankLayout(
  nodes: Request["nodes"],
  edges: Request["edges"],
  known: Set<string>,
): Record<string, [number, number]> {
  const index = new Map(nodes.map((n, i) => [n.id, i]));
  const incoming: number[][] = nodes.map(() => []);
  for (const e of edges) {
    if (!known.has(e.source) || !known.has(e.target)) continue;
    incoming[index.get(e.target)!].push(index.get(e.source)!);
  }
  // nodes arrive in invocation order, so an upstream node comes before its dependents
  const rank = new Array<number>(nodes.length).fill(0);
  for (let i = 0; i < nodes.length; i++) {
    for (const j of incoming[i]) if (j < i) rank[i] = Math.max(rank[i], rank[j] + 1);
  }
  const widths: number[] = [];
  for (let i = 0; i < nodes.length; i++) widths[rank[i]] = Math.max(widths[rank[i]] ?? 0, nodes[i].width);
  const xs: number[] = [];
  let x = 0;
  for (let r = 0; r < widths.length; r++) {
    xs[r] = x;
    x += (widths[r] ?? 0) + 60;
  }
  const ys: number[] = [];
  const positions: Record<string, [number, number]> = {};
  for (let i = 0; i < nodes.length; i++) {
    const y = ys[rank[i]] ?? 0;
    positions[nodes[i].id] = [xs[rank[i]], y];
    ys[rank[i]] = y + nodes[i].height + 16;
  }
  return positions;
}
