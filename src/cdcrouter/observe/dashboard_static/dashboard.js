// cdcrouter dashboard: polls /api/status (the `cdcrouter status --format json` document) and draws
// it. Hand-written, no dependencies, nothing fetched from elsewhere.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLUMNS = ["Tables", "Capture", "Raw topic", "Filters", "Filtered topics", "Consumer groups"];
const COL_W = 212, COL_GAP = 22, LINE_H = 16, TOP = 40, GAP = 14, LEFT = 16;
let pollSeconds = 3;
let tables = [];

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function num(v, unit) {
  if (v === null || v === undefined) return "–";
  return `${v}${unit || ""}`;
}

// Names often share a long prefix (one pipeline's topics): keep the start and the telling end.
function clip(s, n) { return s.length > n ? s.slice(0, 8) + "…" + s.slice(s.length - (n - 9)) : s; }

// Which drawn things a problem is about (its `where`, as health.py writes it).
function badSet(doc) {
  return new Set((doc.problems || []).map((p) => p.where));
}

function buildNodes(doc) {
  const bad = badSet(doc);
  const nodes = [], edges = [];
  const add = (n) => { nodes.push(n); return n; };
  const cap = doc.capture;
  const raw = doc.raw_topic;
  const router = raw.router_group;
  const dlqs = doc.dead_letter_topics || [];
  const dlqNode = (d, col) => add({
    id: "dlq:" + d.name, col, kind: "dlq", title: d.name,
    lines: [`DLQ (${d.kind}): ${d.exists ? d.depth : "no topic"}`],
    bad: bad.has(d.name), attrs: { "data-dlq": d.name, "data-depth": d.depth },
  });

  let capNode = null;
  if (cap) {
    const lines = cap.slot_exists
      ? [`slot ${cap.slot}`, cap.active ? "streaming" : "INACTIVE", `WAL ${cap.wal_status}, retained ${bytes(cap.retained_wal_bytes)}`,
         `${num(cap.kafka && cap.kafka.events_per_s)} ev/s`]
      : [`slot ${cap.slot}`, "SLOT MISSING"];
    if (cap.snapshot) lines.push(`snapshot ${cap.snapshot.table} ${num(cap.snapshot.percent, "%")}`);
    capNode = add({ id: "capture", col: 1, title: "capture", lines, bad: bad.has(cap.slot),
                    attrs: { "data-rate": cap.kafka ? cap.kafka.events_per_s : "" } });
    for (const t of tables) {
      const name = t.slice(t.indexOf(".") + 1);  // schema.table: the schema is the pipeline's
      edges.push([add({ id: "table:" + t, col: 0, title: name, lines: [], bad: false }).id, capNode.id]);
    }
  }
  const rawNode = add({
    id: "raw", col: 2, title: raw.name,
    lines: raw.exists
      ? [`router ${router.group}`, `lag ${router.lag}, ${router.members.length} member(s)`,
         `committed ${router.committed_in_window} in ${doc.sample_seconds}s`]
      : ["TOPIC MISSING"],
    bad: bad.has(raw.name) || bad.has(`${router.group} on ${raw.name}`),
    attrs: { "data-topic": raw.name, "data-lag": router.lag },
  });
  if (capNode) edges.push([capNode.id, rawNode.id]);
  for (const d of dlqs.filter((d) => d.kind === "capture")) {
    edges.push([capNode ? capNode.id : rawNode.id, dlqNode(d, 1).id, "dlq"]);
  }
  for (const d of dlqs.filter((d) => d.kind === "router")) edges.push([rawNode.id, dlqNode(d, 2).id, "dlq"]);

  for (const j of doc.jobs || []) {  // routing on Flink / Confluent Cloud: the job routes
    const where = `${j.target}:${j.name}`;
    edges.push([rawNode.id, add({
      id: "job:" + where, col: 3, kind: "job", title: where, lines: [`job ${j.state}`],
      bad: bad.has(where), attrs: { "data-job": where },
    }).id]);
  }
  for (const f of doc.filters) {
    const n = add({
      id: "filter:" + f.id, col: 3, title: f.id,
      lines: [`consumer ${f.consumer_id}`, `${num(f.events_per_s)} ev/s`],
      bad: false, attrs: { "data-filter": f.id, "data-rate": f.events_per_s ?? "" },
    });
    edges.push([rawNode.id, n.id]);
    edges.push([n.id, "topic:" + f.topic]);
  }
  for (const t of doc.filtered_topics) {
    add({
      id: "topic:" + t.name, col: 4, title: t.name,
      lines: t.exists ? [`${num(t.events_per_s)} ev/s`] : ["TOPIC MISSING"],
      bad: bad.has(t.name), attrs: { "data-topic": t.name, "data-rate": t.events_per_s ?? "" },
    });
    for (const g of t.groups) {
      const where = `${g.group} on ${t.name}`;
      const n = add({
        id: "group:" + where, col: 5, title: g.group,
        lines: [`lag ${g.lag} (${g.state.toLowerCase()})`, g.stalled ? "STALLED" : g.lag_growing ? "LAG GROWING" : `committed ${g.committed_in_window}`],
        bad: bad.has(where), attrs: { "data-group": g.group, "data-lag": g.lag },
      });
      edges.push(["topic:" + t.name, n.id]);
    }
    for (const d of dlqs.filter((d) => d.kind === "consumer" && d.name.startsWith(t.name + "."))) {
      edges.push(["topic:" + t.name, dlqNode(d, 5).id, "dlq"]);
    }
  }
  return { nodes, edges };
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function drawTopology(doc) {
  const { nodes, edges } = buildNodes(doc);
  const y = new Array(COLUMNS.length).fill(TOP);
  const byId = {};
  for (const n of nodes) {
    n.w = COL_W;
    n.h = 22 + LINE_H * n.lines.length;
    n.x = LEFT + n.col * (COL_W + COL_GAP);
    n.y = y[n.col];
    y[n.col] += n.h + GAP;
    byId[n.id] = n;
  }
  const width = LEFT * 2 + COLUMNS.length * COL_W + (COLUMNS.length - 1) * COL_GAP;
  const svg = el("svg", { width, height: Math.max(...y) + 10, role: "img", "aria-label": "pipeline topology" });
  COLUMNS.forEach((c, i) => svg.appendChild(el("text", { x: LEFT + i * (COL_W + COL_GAP), y: 22, class: "col" }, c)));
  for (const [from, to, kind] of edges) {
    const a = byId[from], b = byId[to];
    if (!a || !b) continue;
    let d;
    if (a.col === b.col) {  // a DLQ under its source
      const x = a.x + 12;
      d = `M${x},${a.y + a.h} L${x},${b.y}`;
    } else {
      const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2, mx = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    }
    svg.appendChild(el("path", { d, class: "edge" + (kind ? " " + kind : "") }));
  }
  for (const n of nodes) {
    const g = el("g", { class: "node" + (n.kind ? " " + n.kind : "") + (n.bad ? " bad" : ""), "data-node": n.id });
    for (const [k, v] of Object.entries(n.attrs || {})) g.setAttribute(k, v);
    g.appendChild(el("title", {}, [n.title, ...n.lines].join("\n")));
    g.appendChild(el("rect", { x: n.x, y: n.y, width: n.w, height: n.h, rx: 6 }));
    g.appendChild(el("text", { x: n.x + 8, y: n.y + 16, class: "title" }, (n.bad ? "⚠ " : "") + clip(n.title, n.bad ? 25 : 27)));
    n.lines.forEach((line, i) => g.appendChild(el("text", { x: n.x + 8, y: n.y + 16 + LINE_H * (i + 1) }, clip(line, 32))));
    svg.appendChild(g);
  }
  document.getElementById("topology").replaceChildren(svg);
}

function row(cells, cls, attrs) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v ?? "");
  for (const [text, numeric] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (numeric) td.className = "num";
    tr.appendChild(td);
  }
  return tr;
}

function drawTables(doc) {
  document.querySelector("#latency tbody").replaceChildren(...doc.latency.map((l) => row([
    [l.filter_id], [l.topic], [num(l.p50_ms), true], [num(l.p99_ms), true], [num(l.max_ms), true], [l.samples, true],
  ], "", { "data-route": l.filter_id, "data-p50": l.p50_ms, "data-p99": l.p99_ms, "data-samples": l.samples })));
  const bad = badSet(doc);
  document.querySelector("#dlqs tbody").replaceChildren(...doc.dead_letter_topics.map((d) => row(
    [[d.name], [d.kind], [d.exists ? d.depth : "no topic", true]], bad.has(d.name) ? "bad" : "",
  )));
  const list = document.getElementById("problems");
  list.replaceChildren(...doc.problems.map((p) => {
    const li = document.createElement("li");
    li.innerHTML = "<code></code> <b></b>: <span></span> <span class=hint></span>";
    li.children[0].textContent = p.code;
    li.children[1].textContent = p.where;
    li.children[2].textContent = p.message;
    li.children[3].textContent = p.hint ? `(${p.hint})` : "";
    return li;
  }));
  document.getElementById("problems-section").hidden = doc.problems.length === 0;
}

function show(doc) {
  const health = document.getElementById("health");
  health.textContent = doc.healthy ? "healthy" : "unhealthy";
  health.className = "badge " + (doc.healthy ? "ok" : "bad");
  document.getElementById("generated").textContent = `as of ${doc.generated_at}` +
    (doc.sample_seconds ? ` (sampled over ${doc.sample_seconds} s)` : "");
  const error = document.getElementById("error");
  error.hidden = !doc.error;
  if (doc.error) {  // the pipeline could not be read: keep the last picture, say why
    error.textContent = `cannot read the pipeline: ${doc.error.message}` + (doc.error.hint ? ` (hint: ${doc.error.hint})` : "");
    return;
  }
  drawTopology(doc);
  drawTables(doc);
}

async function poll() {
  try {
    const resp = await fetch("/api/status", { cache: "no-store" });
    if (resp.ok) show(await resp.json());
  } catch (e) {
    const error = document.getElementById("error");
    error.hidden = false;
    error.textContent = `the dashboard server does not answer: ${e}`;
    document.getElementById("health").className = "badge bad";
  }
  setTimeout(poll, pollSeconds * 1000);
}

async function start() {
  try {
    const topo = await (await fetch("/api/topology", { cache: "no-store" })).json();
    tables = topo.tables;
    pollSeconds = topo.poll_seconds;
  } catch (e) { /* drawn without the tables; poll() says if the server is away */ }
  poll();
}

start();
