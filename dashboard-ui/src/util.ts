// Small helpers for building the DOM without a framework.

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, unknown> = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v as EventListener);
    else if (k === "class") el.className = String(v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k in el && typeof v !== "string") (el as any)[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

export const STATUSES = ["initializing", "running", "completed", "cached", "failed", "stopped", "skipped"];

export function statusChip(status: string): HTMLElement {
  return h("span", { class: `chip s-${status}`, "data-status": status }, status);
}

export function fmtTime(ts: number | null | undefined): string {
  if (!ts) return "-";
  const d = new Date(ts * 1000);
  return d.toLocaleString(undefined, { hour12: false });
}

export function fmtDuration(s: number | null | undefined): string {
  if (s === null || s === undefined) return "-";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtSize(n: number | null | undefined): string {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function countsText(counts: Record<string, number>): string {
  return STATUSES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(" · ") || "no steps";
}

export function countsBar(counts: Record<string, number>, total?: number): HTMLElement {
  const sum = total ?? Object.values(counts).reduce((a, b) => a + b, 0);
  const bar = h("div", { class: "bar", role: "img", "aria-label": countsText(counts) });
  for (const s of ["completed", "cached", "failed", "running", "stopped", "skipped", "initializing"]) {
    if (!counts[s] || !sum) continue;
    bar.append(h("span", { class: `seg s-${s}`, style: { width: `${(100 * counts[s]) / sum}%` } }));
  }
  return bar;
}

export function json(value: unknown): HTMLElement {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

/** The route: a path and parameters from the address's hash, e.g. #/runs/ID?step=X. */
export function route(): { parts: string[]; params: URLSearchParams } {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?", 2);
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query ?? "") };
}

/** Change the hash's parameters without a new page (deep links to a node, step, line). */
export function setParams(changes: Record<string, string | null>): void {
  const { parts, params } = route();
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) params.delete(k);
    else params.set(k, v);
  }
  const qs = params.toString();
  const next = "#/" + parts.map(encodeURIComponent).join("/") + (qs ? "?" + qs : "");
  if (next !== location.hash) history.replaceState(null, "", next);
}
