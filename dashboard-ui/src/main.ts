// The dashboard's pages: runs, a run (graph, timeline, step panel), artifacts.
import "./style.css";
import { ApiError, get, post, subscribe, throttle, token } from "./api";
import { GraphView, type GNode } from "./graph";
import { LogView } from "./logs";
import { countsBar, countsText, fmtDuration, fmtSize, fmtTime, h, json, route, setParams, statusChip, STATUSES } from "./util";

const app = document.getElementById("app")!;
let cleanup: (() => void)[] = [];
function append(...nodes: (HTMLElement | null)[]): void {
  app.append(...(nodes.filter(Boolean) as HTMLElement[]));
}

// -- theme ----------------------------------------------------------------------------------------
function isDark(): boolean {
  return document.documentElement.dataset.theme === "dark";
}
const stored = localStorage.getItem("unspool-theme");
document.documentElement.dataset.theme = stored ?? (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
const themeListeners = new Set<(dark: boolean) => void>();
document.getElementById("theme")!.addEventListener("click", () => {
  const next = isDark() ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  localStorage.setItem("unspool-theme", next);
  for (const fn of themeListeners) fn(next === "dark");
});

// -- routing --------------------------------------------------------------------------------------
let currentPath: string | null = null;
let onParams: (() => void) | null = null;
async function render(): Promise<void> {
  const { parts } = route();
  const path = parts.join("/");
  if (path === currentPath) {
    onParams?.(); // only parameters changed (a deep link followed on the same page)
    return;
  }
  currentPath = path;
  onParams = null;
  for (const fn of cleanup) fn();
  cleanup = [];
  app.replaceChildren();
  try {
    if (parts[0] === "runs" && parts[1]) await runPage(parts[1]);
    else if (parts[0] === "artifacts" && parts[1]) await artifactPage(parts[1]);
    else if (parts[0] === "artifacts") await artifactsPage();
    else if (parts[0] === "versions" && parts[1]) await versionPage(parts[1]);
    else await runsPage();
  } catch (error) {
    app.append(h("div", { class: "error" }, error instanceof ApiError ? error.message : String(error)));
  }
}
window.addEventListener("hashchange", () => render());

// -- runs -----------------------------------------------------------------------------------------
async function runsPage(): Promise<void> {
  document.title = "Runs · unspool";
  const { params } = route();
  const pipelines = (await get("pipelines")).pipelines as string[];
  const pipeline = h("select", { "aria-label": "pipeline", onchange: () => filter() }, h("option", { value: "" }, "all pipelines"), ...pipelines.map((p) => h("option", { value: p }, p)));
  const status = h("select", { "aria-label": "status", onchange: () => filter() }, h("option", { value: "" }, "any status"), ...STATUSES.map((s) => h("option", { value: s }, s)));
  pipeline.value = params.get("pipeline") ?? "";
  status.value = params.get("status") ?? "";
  const body = h("tbody");
  const more = h("button", { type: "button", onclick: () => load(true) }, "more");
  let cursor: string | null = null;
  app.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Runs"), pipeline, status),
    h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ...["status", "run", "pipeline", "started", "duration", "steps", ""].map((c) => h("th", {}, c)))),
      body),
    more,
  );
  function filter(): void {
    setParams({ pipeline: pipeline.value || null, status: status.value || null });
    load(false);
  }
  async function load(append: boolean): Promise<void> {
    const page = await get("runs", { pipeline: pipeline.value, status: status.value, limit: 50, cursor: append ? cursor : null });
    cursor = page.next_cursor;
    more.hidden = !cursor;
    const rows = page.runs.map((r: any) =>
      h("tr", { "data-run": r.id },
        h("td", {}, statusChip(r.status)),
        h("td", {}, h("a", { href: `#/runs/${r.id}` }, r.name)),
        h("td", {}, r.pipeline_name),
        h("td", {}, fmtTime(r.start_time)),
        h("td", {}, fmtDuration(r.duration)),
        h("td", {}, countsBar(r.step_counts), h("div", { class: "muted small" }, countsText(r.step_counts))),
        h("td", { class: "failed" }, r.failed_steps.length ? `failed: ${r.failed_steps.slice(0, 5).join(", ")}${r.failed_steps.length > 5 ? ` and ${r.failed_steps.length - 5} more` : ""}` : ""),
      ));
    if (append) body.append(...rows);
    else body.replaceChildren(...rows);
    if (!append && !rows.length) body.append(h("tr", {}, h("td", { colspan: "7", class: "muted" }, "No runs yet. Run a pipeline, then watch it here.")));
  }
  const refresh = throttle(() => load(false), 700);
  cleanup.push(subscribe((changes) => {
    if (changes.some((c) => c.kind === "run" || c.kind === "step")) refresh();
  }));
  await load(false);
}

// -- a run ----------------------------------------------------------------------------------------
async function runPage(runId: string): Promise<void> {
  const { params } = route();
  // the graph is fetched at once, beside the run (the API takes a run's id, name or prefix)
  let firstGraph: Promise<any> | null = get(`runs/${runId}/graph`, { expand: (params.get("expand") ?? "") });
  firstGraph.catch(() => null);
  let run = await get(`runs/${runId}`);
  runId = run.id;
  document.title = `${run.name} · unspool`;
  const header = h("section", { class: "run-head" });
  const tabs = h("div", { class: "tabs", role: "tablist" });
  const graphTab = h("button", { type: "button", role: "tab", onclick: () => showTab("graph") }, "Graph");
  const timeTab = h("button", { type: "button", role: "tab", onclick: () => showTab("timeline") }, "Timeline");
  tabs.append(graphTab, timeTab);
  const search = h("input", { type: "search", placeholder: "search steps  ( / )", "aria-label": "search steps" });
  const statusFilter = h("select", { "aria-label": "filter by status" }, h("option", { value: "" }, "any status"), ...STATUSES.map((s) => h("option", { value: s }, s)));
  const hits = h("div", { class: "hits" });
  const canvasHost = h("div", { class: "canvas-host", "data-testid": "graph" });
  const nodeList = h("ul", { class: "node-list", id: "graph-nodes", "aria-label": "graph nodes" });
  const graphPane = h("div", { class: "graph-pane" }, h("div", { class: "toolbar" }, search, statusFilter, h("button", { type: "button", onclick: () => view.fit(), title: "fit (0)" }, "fit"), hits), canvasHost, nodeList);
  const timeline = h("div", { class: "timeline", hidden: true });
  const panel = h("aside", { class: "panel", hidden: true, "aria-label": "details" });
  app.append(header, tabs, h("div", { class: "run-body" }, h("div", { class: "main-col" }, graphPane, timeline), panel));

  function drawHeader(): void {
    const budget = run.budget ?? {};
    const limits = budget.limits ?? {};
    const used = budget.used ?? {};
    const bars: HTMLElement[] = [];
    for (const [key, limitKey] of [["steps", "max_steps"], ["duration_s", "max_duration_s"], ["max_parallelism", "max_parallelism"]]) {
      const limit = limits[limitKey];
      if (limit === undefined || limit === null) continue;
      const value = used[key] ?? 0;
      bars.push(h("div", { class: "budget" }, h("span", {}, `${key}: ${value} / ${limit}`), h("div", { class: "bar" }, h("span", { class: "seg s-running", style: { width: `${Math.min(100, (100 * value) / limit)}%` } }))));
    }
    const resume = ["failed", "stopped"].includes(run.status)
      ? h("button", { type: "button", onclick: async () => {
          try {
            await post(`runs/${run.id}/resume`);
            resume!.textContent = "resuming…";
          } catch (e) {
            alert(String(e));
          }
        } }, "resume")
      : null;
    header.replaceChildren(...[
      h("div", { class: "title" }, statusChip(run.status), h("h1", {}, run.name), resume),
      h("div", { class: "facts" },
        h("span", {}, `pipeline ${run.pipeline_name}`),
        h("span", {}, run.dynamic ? "dynamic" : "static"),
        h("span", {}, `started ${fmtTime(run.start_time)}`),
        h("span", {}, `duration ${fmtDuration(run.duration)}`),
        run.parent_run_id ? h("a", { href: `#/runs/${run.parent_run_id}` }, "parent run") : null,
        h("span", { class: "muted" }, run.id),
      ),
      h("div", { class: "counts", "data-testid": "run-counts" }, countsBar(run.step_counts), h("span", {}, countsText(run.step_counts))),
      run.error?.message ? h("div", { class: "error" }, run.error.message) : null,
      bars.length ? h("div", { class: "budgets" }, ...bars) : null,
      Object.keys(run.parameters ?? {}).length ? h("details", {}, h("summary", {}, "parameters"), json(run.parameters)) : null,
      run.children?.length ? h("div", { class: "children" }, "child runs: ", ...run.children.map((c: any) => h("a", { href: `#/runs/${c.id}`, class: `chip s-${c.status}` }, c.invocation_id ?? c.name))) : null,
    ].filter(Boolean) as HTMLElement[]);
  }
  drawHeader();

  // the graph
  const view = new GraphView(canvasHost, (node) => openNode(node));
  performance.mark("unspool:canvas-init");
  await view.init(isDark());
  performance.mark("unspool:canvas-ready");
  themeListeners.add(view.setTheme.bind(view));
  cleanup.push(() => view.destroy());
  const expanded = new Set((params.get("expand") ?? "").split(",").filter(Boolean));
  (window as any).__unspool = { view, expanded };

  view.onChange = (n) => {
    const li = nodeList.querySelector(`li[data-id="${CSS.escape(n.id)}"]`) as HTMLElement | null;
    if (!li) return;
    li.dataset.status = n.status;
    if (n.counts) li.dataset.counts = JSON.stringify(n.counts);
    const button = li.firstElementChild as HTMLElement | null;
    if (button) button.textContent = `${n.label}${n.size ? ` ×${n.size}` : ""}: ${n.status}`;
  };
  let listVersion = 0;
  async function loadGraph(): Promise<void> {
    const pending = firstGraph;
    firstGraph = null;
    const graph = pending ? await pending : await get(`runs/${runId}/graph`, { expand: [...expanded].join(",") });
    performance.mark("unspool:graph-fetched");
    await view.update(graph.nodes, graph.edges);
    await view.drawn();
    performance.mark("unspool:graph-drawn");
    // the same nodes as a list, for the keyboard and screen readers (the first 5,000), built
    // in slices so that a big graph never holds the main thread for long
    const listed = graph.nodes.filter((n: GNode) => !n.group).slice(0, 5000);
    const item = (n: GNode) =>
      h("li", { "data-id": n.id, "data-status": n.status, "data-kind": n.kind, "data-counts": n.counts ? JSON.stringify(n.counts) : null },
        h("button", { type: "button", onclick: () => { view.select(n.id, true); openNode(n); } }, `${n.label}${n.size ? ` ×${n.size}` : ""}: ${n.status}`));
    const version = ++listVersion;
    nodeList.replaceChildren(...listed.slice(0, 500).map(item));
    for (let i = 500; i < listed.length; i += 500) {
      setTimeout(() => {
        if (version === listVersion) nodeList.append(...listed.slice(i, i + 500).map(item));
      }, 0);
    }
    canvasHost.dataset.nodes = String(graph.nodes.length);
    canvasHost.dataset.ready = "1";
  }
  const reload = throttle(() => loadGraph(), 400);
  const reconcile = throttle(() => loadGraph(), 2000);
  const reloadRun = throttle(async () => {
    run = await get(`runs/${runId}`);
    drawHeader();
  }, 700);

  // Subscribe first, then load: a change between the two is applied on top (statuses are absolute).
  cleanup.push(subscribe((changes) => {
    let unknown = false;
    let mine = false;
    for (const c of changes) {
      if (c.kind === "step" && c.run_id === runId) {
        mine = true;
        const how = view.apply(c);
        if (!how) unknown = true;
        else if (how === "guess") reconcile();
        if (selectedStep && c.id === selectedStep) refreshStep();
      } else if (c.kind === "step" && view.placed.has("r:" + c.run_id)) {
        unknown = true; // a step of a child run drawn as a frame: its rows change
      } else if (c.kind === "run" && c.id === runId) {
        mine = true;
      } else if (c.kind === "run" && c.parent_run_id === runId) {
        view.applyRun(c.id, c.status);
        unknown = true;
      }
    }
    if (unknown) reload();
    if (mine) reloadRun();
  }));
  await loadGraph();
  // the first graph was fetched before the event stream was listened to: look again once
  if (["initializing", "running"].includes(run.status)) setTimeout(() => reload(), 1000);

  // search and filter
  search.addEventListener("input", () => applyFilter());
  statusFilter.addEventListener("change", () => applyFilter());
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      const first = applyFilter()[0];
      if (first) {
        view.select(first.id, true);
        openNode(first);
      }
    }
  });
  const onKey = (e: KeyboardEvent) => {
    if (e.key === "/" && document.activeElement?.tagName !== "INPUT") {
      e.preventDefault();
      search.focus();
    } else if (e.key === "Escape") {
      panel.hidden = true;
      setParams({ node: null, step: null, line: null });
    }
  };
  document.addEventListener("keydown", onKey);
  cleanup.push(() => document.removeEventListener("keydown", onKey));

  let searchSeq = 0;
  function applyFilter(): GNode[] {
    const found = view.setFilter(search.value.trim(), statusFilter.value);
    const text = search.value.trim();
    hits.replaceChildren();
    if (text || statusFilter.value) {
      hits.append(h("span", { class: "muted" }, `${found.length} on the graph`));
      const seq = ++searchSeq;
      get(`runs/${runId}/steps`, { search: text, status: statusFilter.value, limit: 20 }).then((page) => {
        if (seq !== searchSeq) return;
        hits.append(...page.steps.map((s: any) => h("button", { type: "button", class: `chip s-${s.status}`, onclick: () => openStep(s.id) }, s.invocation_id)));
        if (page.next_cursor) hits.append(h("span", { class: "muted" }, " …"));
      });
    }
    return found;
  }

  // the side panel
  let selectedStep: string | null = null;
  let logView: LogView | null = null;
  const panelInfo = h("div", { class: "panel-info" });
  cleanup.push(() => logView?.destroy());
  function openNode(node: GNode | null): void {
    if (!node) {
      panel.hidden = true;
      setParams({ node: null, step: null, line: null });
      return;
    }
    setParams({ node: node.id, step: node.step_id ?? null, line: null });
    if (node.kind === "step" && node.step_id) openStep(node.step_id);
    else if (node.kind === "run") location.hash = `#/runs/${node.run_id}`;
    else openGroup(node);
  }

  function openGroup(node: GNode): void {
    selectedStep = null;
    logView?.destroy();
    panel.hidden = false;
    const isOpen = expanded.has(node.id);
    const list = h("div", { class: "members", tabindex: "0" });
    const memberStatus = h("select", { "aria-label": "member status" }, h("option", { value: "" }, "any status"), ...STATUSES.map((s) => h("option", { value: s }, s)));
    let cursor: string | null = null;
    const more = h("button", { type: "button", class: "small", onclick: () => loadMembers(true) }, "more");
    async function loadMembers(append: boolean): Promise<void> {
      const page = await get(`runs/${runId}/steps`, { map: node.first_invocation, position_from: node.first_position, position_to: node.last_position, status: memberStatus.value, limit: 200, cursor: append ? cursor : null });
      cursor = page.next_cursor;
      more.hidden = !cursor;
      const rows = page.steps.map((s: any) => h("button", { type: "button", class: "member", onclick: () => openStep(s.id) }, statusChip(s.status), " ", s.invocation_id));
      if (append) list.append(...rows);
      else list.replaceChildren(...rows);
    }
    memberStatus.addEventListener("change", () => loadMembers(false));
    panel.replaceChildren(
      h("div", { class: "panel-head" }, h("h2", {}, `${node.label} ×${node.size}`), h("button", { type: "button", class: "close", "aria-label": "close", onclick: () => openNode(null) }, "×")),
      h("p", {}, "A map fan-out, folded: ", countsText(node.counts ?? {})),
      countsBar(node.counts ?? {}, node.size),
      h("p", {}, h("button", { type: "button", "data-testid": "expand", onclick: async () => {
        if (isOpen) expanded.delete(node.id);
        else expanded.add(node.id);
        setParams({ expand: [...expanded].join(",") || null });
        await loadGraph();
        openGroup({ ...node, expanded: !isOpen });
      } }, isOpen ? "collapse on the graph" : "expand on the graph")),
      h("div", { class: "toolbar" }, h("strong", {}, "members"), memberStatus),
      list, more,
    );
    loadMembers(false);
  }

  const refreshStep = throttle(() => {
    if (selectedStep) openStep(selectedStep, true);
  }, 1000);

  async function openStep(stepId: string, refresh = false): Promise<void> {
    const step = await get(`steps/${stepId}`);
    if (!refresh) {
      selectedStep = stepId;
      setParams({ step: stepId, node: step.invocation_id });
      view.select(step.invocation_id, !refresh);
    } else if (selectedStep !== stepId) return;
    panel.hidden = false;
    const artifactLink = (a: any) => h("li", {}, h("a", { href: `#/versions/${a.id}` }, `${a.io_name}${a.item_index !== null && a.item_index !== undefined ? `[${a.item_index}]` : ""}`), ` ${a.direction === "input" ? "←" : "→"} ${a.name} v${a.version}`, h("span", { class: "muted" }, ` ${fmtSize(a.size)}`));
    const sections: (HTMLElement | null)[] = [
      h("div", { class: "panel-head" }, h("h2", {}, step.invocation_id), h("button", { type: "button", class: "close", "aria-label": "close", onclick: () => openNode(null) }, "×")),
      h("div", { class: "facts" }, statusChip(step.status), h("span", {}, `step ${step.step_name}`), h("span", {}, `runtime ${step.runtime}`), h("span", {}, `started ${fmtTime(step.start_time)}`), h("span", {}, `duration ${fmtDuration(step.duration)}`)),
      step.cache_origin ? h("p", {}, "cached from ", h("a", { href: `#/runs/${step.cache_origin.run_id}?step=${step.cache_origin.id}` }, step.cache_origin.invocation_id)) : null,
      step.error ? h("div", { class: "error" }, h("strong", {}, `${step.error.type ?? "error"}: `), step.error.message ?? "", step.error.traceback ? h("pre", { class: "traceback" }, step.error.traceback) : null) : null,
      Object.keys(step.parameters ?? {}).length ? h("details", { open: true }, h("summary", {}, "parameters"), json(step.parameters)) : null,
      step.inputs.length ? h("div", {}, h("h3", {}, "inputs"), h("ul", {}, ...step.inputs.map(artifactLink))) : null,
      step.outputs.length ? h("div", {}, h("h3", {}, "outputs"), h("ul", {}, ...step.outputs.map(artifactLink))) : null,
      step.attempts?.length ? h("details", {}, h("summary", {}, `attempts (${step.attempts.length})`), json(step.attempts)) : null,
      Object.keys(step.step_metadata ?? {}).length ? h("details", {}, h("summary", {}, "metadata"), json(step.step_metadata)) : null,
    ];
    const info = sections.filter(Boolean) as HTMLElement[];
    if (!refresh || !logView || !panelInfo.isConnected) {
      logView?.destroy();
      const line = route().params.get("line");
      logView = new LogView(stepId, line ? Number(line) : null);
      panelInfo.replaceChildren(...info);
      panel.replaceChildren(panelInfo, h("h3", {}, "logs"), logView.el);
    } else {
      // only the facts change: the log view stays where it is (and keeps following)
      panelInfo.replaceChildren(...info);
    }
    panel.dataset.step = step.invocation_id;
  }

  // the timeline
  async function drawTimeline(): Promise<void> {
    const page = await get(`runs/${runId}/timeline`, { limit: 2000 });
    const steps = page.steps;
    if (!steps.length) {
      timeline.replaceChildren(h("p", { class: "muted" }, "No step has started yet."));
      return;
    }
    const now = Date.now() / 1000;
    const t0 = Math.min(...steps.map((s: any) => s.start_time));
    const t1 = Math.max(...steps.map((s: any) => s.end_time ?? now));
    const span = Math.max(t1 - t0, 0.001);
    const executors = [...new Set(steps.map((s: any) => s.executor))].join(", ");
    timeline.replaceChildren(
      h("p", { class: "muted" }, `${steps.length} steps over ${fmtDuration(span)} on ${executors} (orchestrator: ${page.orchestrator})${page.truncated ? " · the first 2,000 to start" : ""}`),
      ...steps.map((s: any) => h("div", { class: "trow", "data-executor": s.executor },
        h("a", { class: "tname", href: `#/runs/${runId}?step=${s.id}`, onclick: (e: Event) => { e.preventDefault(); showTab("graph"); openStep(s.id); } }, s.invocation_id),
        h("span", { class: "texec muted" }, s.executor),
        h("div", { class: "ttrack" }, h("span", { class: `tbar s-${s.status}`, title: `${s.invocation_id} on ${s.executor}: ${fmtDuration((s.end_time ?? now) - s.start_time)}`, style: { left: `${(100 * (s.start_time - t0)) / span}%`, width: `${Math.max(0.3, (100 * ((s.end_time ?? now) - s.start_time)) / span)}%` } })))),
    );
  }
  function showTab(tab: string): void {
    graphTab.setAttribute("aria-selected", String(tab === "graph"));
    timeTab.setAttribute("aria-selected", String(tab === "timeline"));
    graphPane.hidden = tab !== "graph";
    timeline.hidden = tab !== "timeline";
    setParams({ tab: tab === "graph" ? null : tab });
    if (tab === "timeline") drawTimeline();
  }
  showTab(params.get("tab") ?? "graph");

  // deep links: a selected node or step
  const stepParam = params.get("step");
  const nodeParam = params.get("node");
  if (stepParam) await openStep(stepParam);
  else if (nodeParam) {
    const node = view.select(nodeParam);
    if (node) openNode(node);
  }
  onParams = () => {
    const { params: now } = route();
    const step = now.get("step");
    if (step && step !== selectedStep) openStep(step);
    const tab = now.get("tab") ?? "graph";
    if ((tab === "timeline") === timeline.hidden) showTab(tab);
  };
  // the panel took room from the canvas: center the deep-linked node in what is left
  if (stepParam || nodeParam) requestAnimationFrame(() => view.select(view.selected, true));
}

// -- artifacts ------------------------------------------------------------------------------------
async function artifactsPage(): Promise<void> {
  document.title = "Artifacts · unspool";
  const search = h("input", { type: "search", placeholder: "search artifacts", "aria-label": "search artifacts" });
  const body = h("tbody");
  app.append(h("div", { class: "toolbar" }, h("h1", {}, "Artifacts"), search), h("table", {}, h("thead", {}, h("tr", {}, ...["name", "versions", "latest", "updated"].map((c) => h("th", {}, c)))), body));
  async function load(): Promise<void> {
    const page = await get("artifacts", { search: search.value, limit: 500 });
    body.replaceChildren(...page.artifacts.map((a: any) => h("tr", {}, h("td", {}, h("a", { href: `#/artifacts/${encodeURIComponent(a.name)}` }, a.name)), h("td", {}, String(a.versions)), h("td", {}, `v${a.latest}`), h("td", {}, fmtTime(a.updated)))));
  }
  search.addEventListener("input", throttle(() => load(), 300));
  await load();
}

async function artifactPage(name: string): Promise<void> {
  document.title = `${name} · unspool`;
  const page = await get(`artifacts/${encodeURIComponent(name)}/versions`, { limit: 200 });
  app.append(
    h("h1", {}, name),
    h("table", {}, h("thead", {}, h("tr", {}, ...["version", "type", "size", "created", "run"].map((c) => h("th", {}, c)))),
      h("tbody", {}, ...page.versions.map((v: any) => h("tr", {}, h("td", {}, h("a", { href: `#/versions/${v.id}` }, `v${v.version}`)), h("td", {}, v.data_type), h("td", {}, fmtSize(v.size)), h("td", {}, fmtTime(v.created_at)), h("td", {}, v.run_id ? h("a", { href: `#/runs/${v.run_id}?step=${v.producer_step_run_id}` }, "producer") : "-"))))),
  );
}

/** The version's lineage as a graph, left to right: what its producer read, the producer, the
 * version, the steps that read it and what they wrote. Every box links to its page. */
function lineageGraph(v: any): SVGSVGElement {
  const NS = "http://www.w3.org/2000/svg";
  const el = (tag: string, attrs: Record<string, string | number>, ...kids: Node[]) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, val] of Object.entries(attrs)) e.setAttribute(k, String(val));
    e.append(...kids);
    return e;
  };
  const W = 190, H = 28, GAPX = 60, GAPY = 10;
  const version = (a: any) => ({ id: `v:${a.id}`, text: `${a.name} v${a.version}`, href: `#/versions/${a.id}`, kind: "version" });
  const stepBox = (s: any) => ({ id: `s:${s.id}`, text: s.invocation_id, href: `#/runs/${s.run_id}?step=${s.id}`, kind: `step s-${s.status}` });
  const columns = [
    v.lineage.upstream.slice(0, 50).map(version),
    v.producer ? [stepBox(v.producer)] : [],
    [{ ...version(v), kind: "version self" }],
    v.consumers.slice(0, 50).map(stepBox),
    v.lineage.downstream.slice(0, 50).map(version),
  ].filter((column) => column.length);
  const edges: [string, string][] = [];
  if (v.producer) {
    for (const u of v.lineage.upstream.slice(0, 50)) edges.push([`v:${u.id}`, `s:${v.producer.id}`]);
    edges.push([`s:${v.producer.id}`, `v:${v.id}`]);
  }
  for (const c of v.consumers.slice(0, 50)) edges.push([`v:${v.id}`, `s:${c.id}`]);
  for (const d of v.lineage.downstream.slice(0, 50)) edges.push([`s:${d.producer}`, `v:${d.id}`]);
  const tallest = Math.max(...columns.map((c) => c.length), 1);
  const height = tallest * (H + GAPY);
  const at = new Map<string, [number, number]>();
  const boxes: Node[] = [];
  columns.forEach((column, i) => {
    const top = (height - column.length * (H + GAPY)) / 2;
    column.forEach((n: any, j: number) => {
      const x = i * (W + GAPX), y = top + j * (H + GAPY);
      at.set(n.id, [x, y]);
      const label = n.text.length > 26 ? n.text.slice(0, 25) + "…" : n.text;
      boxes.push(el("a", { href: n.href, "data-id": n.id },
        el("rect", { x, y, width: W, height: H, rx: n.kind.startsWith("step") ? 6 : 2, class: `lin-box ${n.kind}` }),
        el("text", { x: x + 8, y: y + H / 2 + 4, class: "lin-text" }, document.createTextNode(label)),
        el("title", {}, document.createTextNode(n.text))));
    });
  });
  const lines = edges.filter(([a, b]) => at.has(a) && at.has(b)).map(([a, b]) => {
    const [x1, y1] = at.get(a)!, [x2, y2] = at.get(b)!;
    const sx = x1 + W, sy = y1 + H / 2, tx = x2, ty = y2 + H / 2, mx = (sx + tx) / 2;
    return el("path", { d: `M${sx},${sy} C${mx},${sy} ${mx},${ty} ${tx},${ty}`, class: "lin-edge" });
  });
  const width = columns.length * (W + GAPX) - GAPX;
  return el("svg", { class: "lineage-graph", "data-testid": "lineage-graph", viewBox: `-2 -2 ${width + 4} ${height + 4}`, width: width + 4, height: height + 4, role: "img", "aria-label": "lineage" }, ...lines, ...boxes) as SVGSVGElement;
}

async function versionPage(id: string): Promise<void> {
  const v = await get(`versions/${id}`.replace("versions/", "artifact-versions/"));
  document.title = `${v.name} v${v.version} · unspool`;
  const previewBox = h("div", { class: "preview", "data-testid": "preview" }, h("span", { class: "muted" }, "loading preview…"));
  const stepLink = (s: any) => h("a", { href: `#/runs/${s.run_id}?step=${s.id}` }, s.invocation_id);
  const versionLink = (a: any) => h("li", {}, h("a", { href: `#/versions/${a.id}` }, `${a.name} v${a.version}`));
  append(
    h("h1", {}, h("a", { href: `#/artifacts/${encodeURIComponent(v.name)}` }, v.name), ` v${v.version}`),
    h("div", { class: "facts" }, h("span", {}, v.data_type), h("span", {}, fmtSize(v.size)), h("span", {}, v.materializer), v.item_count !== null ? h("span", {}, `${v.item_count} items`) : null, h("span", {}, fmtTime(v.created_at))),
    h("div", { class: "lineage-wrap" }, lineageGraph(v)),
    h("div", { class: "lineage" },
      h("div", {}, h("h3", {}, "upstream"), v.lineage.upstream.length ? h("ul", {}, ...v.lineage.upstream.map(versionLink)) : h("p", { class: "muted" }, "none")),
      h("div", {}, h("h3", {}, "producer"), v.producer ? stepLink(v.producer) : h("span", { class: "muted" }, "none"), h("h3", {}, "consumers"), v.consumers.length ? h("ul", {}, ...v.consumers.slice(0, 50).map((c: any) => h("li", {}, stepLink(c)))) : h("p", { class: "muted" }, "none")),
      h("div", {}, h("h3", {}, "downstream"), v.lineage.downstream.length ? h("ul", {}, ...v.lineage.downstream.slice(0, 50).map(versionLink)) : h("p", { class: "muted" }, "none")),
    ),
    Object.keys(v.artifact_metadata ?? {}).length ? h("details", { open: true }, h("summary", {}, "metadata"), json(v.artifact_metadata)) : null,
    Object.keys(v.tags ?? []).length ? h("p", {}, "tags: ", v.tags.join(", ")) : null,
    h("h3", {}, "preview"),
    previewBox,
  );
  async function showPreview(unpickle: boolean): Promise<void> {
    const p = await get(`artifact-versions/${id}/preview`, { unpickle: unpickle || null, max_rows: 200 });
    const parts: (HTMLElement | string)[] = [h("p", { class: "muted" }, `${fmtSize(p.size)} stored${p.truncated ? " · preview capped" : ""}`)];
    if (p.kind === "json") parts.push(json(p.value));
    else if (p.kind === "text") parts.push(h("pre", { class: "json" }, p.text));
    else if (p.kind === "sequence") parts.push(h("p", {}, `${p.count} items (${p.container})`), p.items ? json(p.items) : h("p", { class: "muted" }, p.message ?? ""));
    else if (p.kind === "array") parts.push(h("p", {}, `shape ${JSON.stringify(p.shape)} · dtype ${p.dtype}`), p.summary ? json(p.summary) : h("span"), p.sample ? h("pre", { class: "json" }, JSON.stringify(p.sample.slice(0, 200))) : h("span"));
    else if (p.kind === "table") parts.push(h("p", {}, `${p.rows} rows`), h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, ""), ...p.columns.map((c: string) => h("th", {}, c)))), h("tbody", {}, ...p.data.map((row: unknown[], i: number) => h("tr", {}, h("td", { class: "muted" }, String(p.index[i])), ...row.map((c) => h("td", {}, String(c))))))));
    else if (p.kind === "image") parts.push(h("img", { src: `data:${p.mime};base64,${p.data}`, alt: `${v.name} v${v.version}`, class: "preview-img" }));
    else if (p.kind === "binary") parts.push(h("pre", { class: "json" }, p.hex));
    else parts.push(h("p", { class: "muted" }, p.message ?? p.kind));
    if (p.pickled && !unpickle) {
      parts.push(h("button", { type: "button", onclick: () => showPreview(true) }, "load the pickled data (only if you trust its producer)"));
    }
    previewBox.replaceChildren(...parts);
  }
  await showPreview(false);
}

if (!token) console.warn("no dashboard token in the page: actions will be refused");
render();
