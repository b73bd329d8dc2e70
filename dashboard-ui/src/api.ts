// Talking to the dashboard's JSON API and its event stream.

const tokenTag = document.querySelector('meta[name="unspool-token"]') as HTMLMetaElement | null;
export const token = tokenTag?.content ?? "";

export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

export async function get<T = any>(path: string, params: Record<string, unknown> = {}): Promise<T> {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") query.set(k, String(v));
  }
  const qs = query.toString();
  const response = await fetch(`/api/${path}${qs ? "?" + qs : ""}`, {
    credentials: "same-origin",
    headers: { "X-Unspool-Token": token }, // needed for reads that run code (unpickling)
  });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail ?? detail;
    } catch {
      /* not JSON */
    }
    throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response.json();
}

export async function post<T = any>(path: string, body: unknown = {}): Promise<T> {
  const response = await fetch(`/api/${path}`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Unspool-Token": token },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.detail ?? response.statusText);
  return data;
}

export interface Change {
  kind: "run" | "step" | "error";
  id: string;
  run_id?: string;
  status: string;
  invocation_id?: string;
  step_name?: string;
  position?: number;
  pipeline_name?: string;
  parent_run_id?: string | null;
  message?: string;
}

type Listener = (changes: Change[]) => void;
const listeners = new Set<Listener>();
let source: EventSource | null = null;

/** One EventSource for the whole page; listeners come and go with the views. */
export function subscribe(fn: Listener): () => void {
  listeners.add(fn);
  if (source === null) {
    source = new EventSource("/api/events");
    const live = document.getElementById("live");
    source.onopen = () => live?.classList.add("on");
    source.onerror = () => live?.classList.remove("on");
    source.addEventListener("changes", (event) => {
      const changes = JSON.parse((event as MessageEvent).data) as Change[];
      for (const l of [...listeners]) l(changes);
    });
  }
  return () => listeners.delete(fn);
}

export function throttle(fn: () => void, ms: number): () => void {
  let timer: number | null = null;
  let again = false;
  return () => {
    if (timer !== null) {
      again = true;
      return;
    }
    fn();
    timer = window.setTimeout(function tick() {
      timer = null;
      if (again) {
        again = false;
        fn();
        timer = window.setTimeout(tick, ms);
      }
    }, ms);
  };
}
