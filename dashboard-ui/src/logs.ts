// A step's log: a virtualised list of lines (only the visible ones are in the DOM) that
// follows the tail while the step writes, and pages back on request.
import { get } from "./api";
import { h, setParams } from "./util";

const LINE = 18;

export class LogView {
  el: HTMLElement;
  private scroller: HTMLElement;
  private spacer: HTMLElement;
  private window: HTMLElement;
  private status: HTMLElement;
  private lines: string[] = [];
  private partial = "";
  private start = 0; // byte offset of the first loaded line
  private next = 0;
  private finished = false;
  private follow = true;
  private timer: number | null = null;
  private highlight: number | null = null;
  private firstLine = 1; // number of the first loaded line (known when loaded from offset 0)
  private stopped = false;
  private earlier: HTMLButtonElement;

  constructor(private stepId: string, line: number | null) {
    this.highlight = line;
    this.status = h("span", { class: "muted" }, "loading…");
    this.spacer = h("div", { class: "log-spacer" });
    this.window = h("div", { class: "log-window" });
    this.scroller = h("div", { class: "log-scroll", tabindex: "0", "aria-label": "step log", "data-testid": "log" }, this.spacer, this.window);
    this.earlier = h("button", { type: "button", class: "small", hidden: true, onclick: () => this.loadEarlier() }, "load earlier");
    this.el = h("div", { class: "logs" }, h("div", { class: "log-bar" }, this.status, this.earlier), this.scroller);
    this.scroller.addEventListener("scroll", () => {
      if (!this.scroller.isConnected) return; // moved in the page: not the reader scrolling
      const atBottom = this.scroller.scrollTop + this.scroller.clientHeight >= this.scroller.scrollHeight - LINE;
      this.follow = atBottom;
      this.render();
    });
    this.load(line !== null ? 0 : -1);
  }

  destroy(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
  }

  private async load(offset: number): Promise<void> {
    const chunk = await get(`steps/${this.stepId}/logs`, { offset, limit: line_limit(offset) }).catch(() => null);
    if (this.stopped) return;
    if (!chunk) {
      this.status.textContent = "log unavailable";
      return;
    }
    this.start = chunk.offset;
    this.firstLine = chunk.offset === 0 ? 1 : 0;
    this.lines = [];
    this.partial = "";
    this.append(chunk.text);
    this.next = chunk.next_offset;
    this.finished = chunk.finished;
    this.updateStatus(chunk.size, chunk.exists);
    this.render(true);
    if (this.highlight !== null && this.firstLine) this.scrollToLine(this.highlight);
    this.poll();
  }

  private async loadEarlier(): Promise<void> {
    if (this.start <= 0) return;
    const from = Math.max(0, this.start - 256 * 1024);
    const chunk = await get(`steps/${this.stepId}/logs`, { offset: from, limit: this.start - from });
    const text: string = chunk.text;
    const earlier = text.split("\n");
    if (earlier[earlier.length - 1] === "") earlier.pop();
    const height = this.lines.length;
    this.lines = [...earlier, ...this.lines];
    this.start = chunk.offset;
    if (chunk.offset === 0) this.firstLine = 1;
    this.render();
    this.scroller.scrollTop += (this.lines.length - height) * LINE;
  }

  private append(text: string): void {
    if (!text) return;
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop() ?? "";
    this.lines.push(...parts);
  }

  private poll(): void {
    if (this.finished || this.stopped) return;
    this.timer = window.setTimeout(async () => {
      const chunk = await get(`steps/${this.stepId}/logs`, { offset: this.next }).catch(() => null);
      if (this.stopped) return;
      if (chunk) {
        if (chunk.next_offset < this.next) {
          this.load(-1); // the file was replaced (a retry, a resume): start over
          return;
        }
        this.append(chunk.text);
        this.next = chunk.next_offset;
        this.finished = chunk.finished;
        this.updateStatus(chunk.size, chunk.exists);
        this.render();
      }
      this.poll();
    }, 500);
  }

  private updateStatus(size: number, exists: boolean): void {
    const count = this.lines.length + (this.partial ? 1 : 0);
    this.earlier.hidden = this.start <= 0;
    this.status.textContent = !exists
      ? this.finished ? "no output captured" : "waiting for output…"
      : `${count.toLocaleString()} line${count === 1 ? "" : "s"} loaded · ${size.toLocaleString()} bytes${this.start > 0 ? " (tail)" : ""}${this.finished ? "" : " · following"}`;
  }

  private render(toBottom = false): void {
    const all = this.partial ? [...this.lines, this.partial] : this.lines;
    this.spacer.style.height = `${all.length * LINE}px`;
    if (toBottom || this.follow) this.scroller.scrollTop = this.scroller.scrollHeight;
    const top = this.scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / LINE) - 20);
    const last = Math.min(all.length, Math.ceil((top + this.scroller.clientHeight) / LINE) + 20);
    this.window.style.transform = `translateY(${first * LINE}px)`;
    const rows: HTMLElement[] = [];
    for (let i = first; i < last; i++) {
      const number = this.firstLine ? i + 1 : null;
      const row = h(
        "div",
        { class: "log-line" + (number !== null && number === this.highlight ? " hl" : ""), "data-line": number ?? "" },
        h("a", { class: "ln", href: "javascript:void 0", onclick: () => this.pick(number) }, number !== null ? String(number) : "·"),
        all[i],
      );
      rows.push(row);
    }
    this.window.replaceChildren(...rows);
  }

  private pick(number: number | null): void {
    if (number === null) return;
    this.highlight = number;
    setParams({ line: String(number) });
    this.render();
  }

  private scrollToLine(n: number): void {
    this.follow = false;
    this.scroller.scrollTop = Math.max(0, (n - 5) * LINE);
    this.render();
  }
}

function line_limit(offset: number): number {
  return offset === 0 ? 4 * 1024 * 1024 : 256 * 1024;
}
