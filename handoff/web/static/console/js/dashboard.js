// The Dashboard section (leads and trainers): every Humans + Machines figure, each from its own
// GET /api/metrics/<figure>, requested together and drawn as each returns, as a chart over time
// (Chart.js, from npm, served as /vendor/chart.umd.min.js), filters by period, intent, agent
// and model version, each figure's definition one click away (a <details> under its chart; the
// full text is docs/metrics.md), and the model deploys marked on the time axis. Text from the API goes in as text (dom.js), never as HTML.
import { h } from "./dom.js";

const DAY = 86400000;

// What each chart shows: the series fields drawn, and the definition in one sentence.
const CHARTS = [
  { metric: "effort", title: "Customer Effort Score (1\u20137)", fields: ["mean"],
    headline: (m) => fmt(m.mean, 2), sub: (m) => `response rate ${pct(m.response_rate)}`,
    definition: "Mean answer to \u201cHow easy was it to get your issue resolved?\u201d (1 very difficult \u2026 7 very easy) of the conversations created that day; response rate = answers \u00f7 closed conversations." },
  { metric: "resolution_time", title: "Time to resolution (s)", fields: ["mean", "median"],
    headline: (m) => fmt(m.median, 0) + " s", sub: (m) => `queue wait ${fmt(m.queue_wait.median, 0)} s \u00b7 handling ${fmt(m.handling.median, 0)} s (medians)`,
    definition: "Seconds from the first customer message to the close, of resolved conversations only (closed by an agent, or ended after a bot answer without asking for a person, not reopened)." },
  { metric: "resolution", title: "AI + HITL resolution", fields: ["success_rate", "containment_rate", "handoff_rate"], percent: true,
    headline: (m) => pct(m.success_rate), sub: (m) => `${m.conversations} conversations \u00b7 ${m.open} open \u00b7 ${m.abandoned} abandoned`,
    definition: "Success rate = resolved \u00f7 closed conversations; containment = never escalated \u00f7 all; handoff rate = escalated (queued for or owned by a person) \u00f7 all." },
  { metric: "accuracy", title: "AI response accuracy (reviewed replies)", fields: ["accuracy"], percent: true,
    headline: (m) => pct(m.accuracy), sub: (m) => `${m.approved} of ${m.reviewed} approved unchanged` +
      (m.spot_checks ? ` \u00b7 spot-checks ${pct(m.spot_checks.accuracy)} right (${m.spot_checks.right} of ${m.spot_checks.checked})` : ""),
    definition: "Of the bot replies held for an agent and decided (or relabelled) by one, the share approved unchanged. Replies released after the review timeout are not counted. Beside it, spot-checks: replies the bot sent alone, marked right \u00f7 all marked." },
  { metric: "enablement", title: "Agent enablement: suggestion use", fields: ["suggestion_use"], percent: true,
    headline: (m) => pct(m.suggestion_use), sub: (m) => `decision ${fmt(m.decision_latency.median, 0)} s (median) \u00b7 ${count(m.relabels, "relabel")} \u00b7 ${count(m.whispers, "whisper")} \u00b7 ratings ${pct(m.rating_score)}`,
    definition: "Agents' messages and decisions that used a suggested reply \u00f7 all of them; decision latency = held \u2192 decided; relabels and whispers (slots set, next actions chosen) are counted; rating score = useful \u00f7 one-click ratings of suggestions." },
  { metric: "sentiment", title: "Customer sentiment, start \u2192 end", fields: ["start", "end"],
    headline: (m) => signed(m.change), sub: (m) => `${m.conversations} conversations with two or more rated messages`,
    definition: "Triage's sentiment (\u22121 \u2026 +1) of the first and of the last customer message, in conversations with at least two; the headline is the mean change." },
  { metric: "queue", title: "Human queue length", fields: ["longest", "mean"], points: true,
    headline: (m) => String(m.length), sub: (m) => `waiting now \u00b7 per ${span(m.bucket_seconds)}`,
    definition: "Replaying the conversations' queue changes in time order, per bucket of time (5 minutes to a day, at most 750 over the period): the most conversations waiting at once, and the mean waiting over the bucket's time." },
];

const LEARNING = { metric: "learning", title: "Continuous learning, per model version", percent: true,
  headline: () => "", sub: () => "model versions (held and corrected shares, bot-only resolution)",
  definition: "Per model version in deploy order: held share = its replies held for an agent \u00f7 its bot messages; corrected share = edits, replacements, written replies and relabels \u00f7 its bot messages; bot-only resolution = bot-resolved \u00f7 closed conversations it served." };
const WORKLOAD = { metric: "workload", title: "Workload per agent", percent: false,
  headline: () => "", sub: () => "agents (conversations owned, decisions, messages)",
  definition: "Per agent: conversations they owned, held replies they decided, messages they sent as the owner; handling time is in the CSV export and the API." };

function fmt(value, digits) {
  return typeof value === "number" ? value.toFixed(digits) : "\u2013";
}
function pct(value) {
  return typeof value === "number" ? `${Math.round(value * 100)}%` : "\u2013";
}
function count(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}
function span(seconds) {
  if (seconds >= 86400) return `${seconds / 86400} day${seconds > 86400 ? "s" : ""}`;
  if (seconds >= 3600) return `${seconds / 3600} h`;
  return `${seconds / 60} min`;
}
function signed(value) {
  return typeof value === "number" ? (value >= 0 ? "+" : "") + value.toFixed(2) : "\u2013";
}

/** A bucket's start as its label: YYYY-MM-DD, with HH:MM (UTC) when buckets are shorter
 * than a day. */
export function bucketLabel(at, seconds) {
  const iso = new Date(at).toISOString();
  return seconds >= 86400 ? iso.slice(0, 10) : `${iso.slice(0, 10)} ${iso.slice(11, 16)}`;
}

/** Every UTC day from since (inclusive) to until (exclusive), as YYYY-MM-DD. */
export function daysOf(since, until) {
  const out = [];
  for (let t = Date.parse(since.slice(0, 10) + "T00:00:00Z"); t < Date.parse(until); t += DAY) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

// A Chart.js plugin of this page: a dashed vertical line and the model's name at each deploy.
const deployMarks = {
  id: "deployMarks",
  afterDatasetsDraw(chart, _args, options) {
    const marks = options.marks || [];
    const { ctx, chartArea, scales } = chart;
    ctx.save();
    ctx.strokeStyle = "#b45309";
    ctx.fillStyle = "#b45309";
    ctx.setLineDash([4, 3]);
    ctx.font = "11px system-ui, sans-serif";
    for (const mark of marks) {
      const x = scales.x.getPixelForValue(mark.index);
      ctx.beginPath();
      ctx.moveTo(x, chartArea.top);
      ctx.lineTo(x, chartArea.bottom);
      ctx.stroke();
      ctx.fillText(`\u25b2 ${mark.label}`, x + 3, chartArea.top + 10);
    }
    ctx.restore();
  },
};

const COLOURS = ["#1d4ed8", "#059669", "#dc2626", "#7c3aed"];

export class Dashboard {
  constructor(root, api, showError) {
    this.root = root;
    this.api = api;
    this.showError = showError;
    this.charts = new Map();
    this.form = root.querySelector("#dash-filters");
    this.grid = root.querySelector("#dash-grid");
    this.status = root.querySelector("#dash-status");
    this.form.addEventListener("submit", (event) => { event.preventDefault(); this.load(); });
    const until = new Date(Date.now() + DAY).toISOString().slice(0, 10);
    const since = new Date(Date.now() - 29 * DAY).toISOString().slice(0, 10);
    if (!this.form.since.value) this.form.since.value = since;
    if (!this.form.until.value) this.form.until.value = until;
  }

  query() {
    const params = new URLSearchParams();
    for (const name of ["since", "until", "intent", "agent", "model"]) {
      const value = this.form[name].value.trim();
      if (value) params.set(name, value);
    }
    return params.toString();
  }

  // Each figure from its own endpoint, all at once: a chart shows as soon as its query returns
  // (GET /api/metrics computes them all in one request, for API users). A newer load wins.
  async load() {
    const generation = (this.generation = (this.generation || 0) + 1);
    const query = this.query();
    this.status.textContent = "Loading\u2026";
    this.grid.setAttribute("aria-busy", "true");
    for (const spec of [...CHARTS, LEARNING, WORKLOAD]) this.card(spec);
    const csv = this.root.querySelector("#dash-csv");
    csv.replaceChildren(...CHARTS.map((c) => h("option", { value: c.metric, text: c.metric })));
    const metrics = [...CHARTS.map((c) => c.metric), LEARNING.metric, WORKLOAD.metric];
    const results = await Promise.allSettled(metrics.map(async (metric) => {
      const data = await this.api.request("GET", `/api/metrics/${encodeURIComponent(metric)}?${query}`);
      if (generation !== this.generation) return;
      this.render(metric, data);
      if (metric === "resolution") {
        const f = data.filter;
        this.status.textContent = `${data.resolution.conversations} conversations created ${f.since.slice(0, 10)} \u2013 ${f.until.slice(0, 10)}` +
          (data.deploys.length ? ` \u00b7 ${data.deploys.length} deploy(s) marked \u25b2` : "");
      }
    }));
    if (generation !== this.generation) return;
    this.grid.setAttribute("aria-busy", "false");
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      if (results[metrics.indexOf("resolution")].status === "rejected") this.status.textContent = "";
      this.showError(failed.reason);
    }
  }

  async exportCsv() {
    const metric = this.root.querySelector("#dash-csv").value || "resolution";
    const resp = await fetch(`/api/metrics/${encodeURIComponent(metric)}/csv?${this.query()}`,
      { headers: { Authorization: `Bearer ${this.api.token}` } });
    if (!resp.ok) { this.showError(new Error(`CSV export failed (HTTP ${resp.status})`)); return; }
    const url = URL.createObjectURL(await resp.blob());
    const link = h("a", { href: url, download: `${metric}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    URL.revokeObjectURL(url);
  }

  /** One figure's chart, from its endpoint's answer. */
  render(metric, data) {
    if (metric === LEARNING.metric) { this.drawLearning(data.learning.models); return; }
    if (metric === WORKLOAD.metric) { this.drawWorkload(data.workload.agents); return; }
    const spec = CHARTS.find((c) => c.metric === metric);
    if (spec.points) { this.drawPoints(spec, data); return; }
    const labels = daysOf(data.filter.since, data.filter.until);
    const marks = data.deploys.map((d) => ({ index: labels.indexOf(d.at.slice(0, 10)), label: d.model_version }))
      .filter((m) => m.index >= 0);
    const figure = data[metric];
    const byDay = new Map(figure.series.map((point) => [point.day, point]));
    const datasets = spec.fields.map((field, n) => ({
      label: field.replace(/_/g, " "),
      data: labels.map((day) => {
        const point = byDay.get(day);
        const value = point ? point[field] : null;
        return typeof value === "number" ? (spec.percent ? Math.round(value * 1000) / 10 : value) : null;
      }),
      borderColor: COLOURS[n % COLOURS.length],
      backgroundColor: COLOURS[n % COLOURS.length],
      spanGaps: true,
      tension: 0.2,
    }));
    this.draw(spec, figure, { type: "line", labels, datasets, marks });
  }

  /** A figure given as points ``{at, ...}`` of ``bucket_seconds`` (the queue): one label per
   * point, each deploy marked on the bucket it fell in. */
  drawPoints(spec, data) {
    const figure = data[spec.metric];
    const seconds = figure.bucket_seconds;
    const points = figure.points;
    const labels = points.map((p) => bucketLabel(p.at, seconds));
    const starts = points.map((p) => Date.parse(p.at));
    const marks = data.deploys.map((d) => {
      const t = Date.parse(d.at);
      let index = -1;
      for (let k = 0; k < starts.length && starts[k] <= t; k += 1) index = k;
      return { index, label: d.model_version };
    }).filter((m) => m.index >= 0);
    const datasets = spec.fields.map((field, n) => ({
      label: field,
      data: points.map((p) => p[field]),
      borderColor: COLOURS[n % COLOURS.length],
      backgroundColor: n ? "rgba(5, 150, 105, 0.25)" : COLOURS[0],
      fill: n > 0,  // the mean as an area under the longest
      pointRadius: points.length > 60 ? 0 : 2,
      borderWidth: 1.5,
    }));
    this.draw(spec, figure, { type: "line", labels, datasets, marks,
      xTicks: { maxRotation: 0, autoSkipPadding: 24 } });
  }

  /** The card of a figure (made, in the page's order, on the first load), its headline set
   * from ``figure`` when given. */
  card(spec, figure) {
    let card = this.grid.querySelector(`[data-metric="${spec.metric}"]`);
    if (!card) {
      card = h("article", { class: "dash-card", "data-metric": spec.metric },
        h("h3", { text: spec.title }),
        h("p", { class: "dash-figure" }),
        h("p", { class: "muted small dash-sub" }),
        h("div", { class: "dash-chart" }, h("canvas", { "aria-label": spec.title, role: "img" })),
        h("details", { class: "dash-definition" },
          h("summary", { text: "Definition" }),
          h("p", { class: "small", text: spec.definition }),
          h("p", { class: "muted small", text: `docs/metrics.md#${spec.metric.replace(/_/g, "-")}` })));
      this.grid.append(card);
    }
    if (figure) {
      card.querySelector(".dash-figure").textContent = spec.headline(figure);
      card.querySelector(".dash-sub").textContent = spec.sub(figure);
    }
    return card;
  }

  draw(spec, figure, { type, labels, datasets, marks, xTicks }) {
    const card = this.card(spec, figure);
    const old = this.charts.get(spec.metric);
    if (old) old.destroy();
    const canvas = card.querySelector("canvas");
    this.charts.set(spec.metric, new window.Chart(canvas, {
      type,
      data: { labels, datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { ticks: xTicks || {} },
          y: { beginAtZero: true, ticks: spec.percent ? { callback: (v) => `${v}%` } : {} } },
        plugins: { legend: { display: datasets.length > 1 }, deployMarks: { marks: marks || [] } },
      },
      plugins: [deployMarks],
    }));
  }

  drawLearning(models) {
    const spec = { ...LEARNING, headline: () => String(models.length) };
    const fields = ["held_share", "corrected_share", "bot_resolution_rate"];
    this.draw(spec, {}, { type: "bar", labels: models.map((m) => m.model_version),
      datasets: fields.map((field, n) => ({ label: field.replace(/_/g, " "),
        data: models.map((m) => typeof m[field] === "number" ? Math.round(m[field] * 1000) / 10 : null),
        backgroundColor: COLOURS[n] })) });
  }

  drawWorkload(agents) {
    const names = Object.keys(agents);
    const spec = { ...WORKLOAD, headline: () => String(names.length) };
    const fields = ["conversations", "decisions", "messages"];
    this.draw(spec, {}, { type: "bar", labels: names, datasets: fields.map((field, n) => ({
      label: field, data: names.map((a) => agents[a][field]), backgroundColor: COLOURS[n] })) });
  }
}
