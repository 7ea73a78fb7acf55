/**
 * Draws a task graph as SVG, laid out by dagre (top to bottom, ranks by dependency). Nodes
 * are links with accessible names; their state is a class, so a state change recolors a node
 * without moving anything.
 * @module
 */
/* global document, URL */
import dagre from "/ui/vendor/dagre/dagre.esm.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_WIDTH = 200;
const NODE_HEIGHT = 48;

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text != null) node.textContent = text;
  return node;
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The state a node is colored by: an inactive task has its own color. */
export function displayState(node) {
  if (node.state == null) return "unknown";
  return node.inactive && node.state === "unscheduled" ? "inactive" : node.state;
}

/** The words a node's accessible name and state line use. */
export function stateWords(node) {
  if (node.state == null) return "state unknown";
  if (node.inactive && node.state === "unscheduled") return "inactive";
  if (node.breakpoint && node.state === "running") return "waiting for a person";
  return node.state;
}

/** The second line of a node: its state, and where it lives when not in this group. */
function subtitle(node) {
  if (node.kind === "remote") return `${new URL(node.remote.origin).host} · ${stateWords(node)}`;
  if (node.kind === "other-group") return `group ${node.taskGroupId} · ${stateWords(node)}`;
  return stateWords(node);
}

/**
 * The other cluster's own web app, at its origin, opened on the task (or task group) whose
 * federated id is `url`.
 */
export function remoteWebAppLink(url) {
  const parsed = new URL(url);
  const segments = parsed.pathname.split("/");
  const id = decodeURIComponent(segments.at(-1) ?? "");
  const view = segments.at(-2) === "task-groups" ? "groups" : "tasks";
  return `${parsed.origin}/#/${view}/${encodeURIComponent(id)}`;
}

/** What a screen reader says for a node. */
function accessibleName(node) {
  const where = node.kind === "remote" ? `Remote task on ${node.remote.origin}: ` : "";
  return `${where}${node.name}, ${stateWords(node)}`;
}

/**
 * Lays out and draws `graph` ({ tasks, remote, otherGroups, edges }) into `container`.
 * Returns `update(task)`, which recolors one local task's node in place.
 */
export function drawGraph(container, graph) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "TB", nodesep: 24, ranksep: 48, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  const nodes = new Map();
  for (const t of graph.tasks) nodes.set(t.taskId, { ...t, kind: "local" });
  for (const t of graph.otherGroups ?? []) nodes.set(t.taskId, { ...t, kind: "other-group" });
  for (const r of graph.remote ?? []) {
    nodes.set(r.url, { taskId: r.url, name: r.label, state: r.state, kind: "remote", remote: r });
  }
  for (const [id] of nodes) g.setNode(id, { width: NODE_WIDTH, height: NODE_HEIGHT });
  for (const e of graph.edges) if (nodes.has(e.from) && nodes.has(e.to)) g.setEdge(e.from, e.to);
  dagre.layout(g);
  const { width, height } = g.graph();

  const svg = el("svg", {
    viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`,
    width: Math.ceil(width),
    height: Math.ceil(height),
    role: "group",
    "aria-label": `Task graph: ${graph.tasks.length} tasks`,
    class: "graph",
  });
  const defs = el("defs");
  const marker = el("marker", {
    id: "arrow",
    viewBox: "0 0 10 10",
    refX: 10,
    refY: 5,
    markerWidth: 7,
    markerHeight: 7,
    orient: "auto-start-reverse",
  });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  svg.append(defs);

  const edgeLayer = el("g", { class: "edges", "aria-hidden": "true" });
  for (const e of g.edges()) {
    const points = g.edge(e).points;
    const d = points.map((p, i) => `${i === 0 ? "M" : "L"} ${p.x} ${p.y}`).join(" ");
    edgeLayer.append(el("path", { d, class: "edge", "marker-end": "url(#arrow)" }));
  }
  svg.append(edgeLayer);

  const parts = new Map();
  const nodeLayer = el("g", { class: "nodes" });
  for (const [id, node] of nodes) {
    const box = g.node(id);
    const x = box.x - NODE_WIDTH / 2;
    const y = box.y - NODE_HEIGHT / 2;
    let href = `#/tasks/${encodeURIComponent(id)}`;
    if (node.kind === "remote") href = remoteWebAppLink(node.remote.url);
    const link = el("a", {
      href,
      class: `node node-${node.kind} state-${displayState(node)}`,
      "data-task-id": id,
      "data-state": node.state ?? "unknown",
      "aria-label": accessibleName(node),
    });
    if (node.kind === "remote") {
      link.setAttribute("target", "_blank");
      link.setAttribute("rel", "noopener noreferrer");
    }
    link.append(
      el("rect", { x, y, width: NODE_WIDTH, height: NODE_HEIGHT, rx: 6, class: "node-box" }),
      el("text", { x: x + 10, y: y + 19, class: "node-title" }, clip(node.name, 26)),
      el("text", { x: x + 10, y: y + 37, class: "node-state" }, clip(subtitle(node), 30)),
    );
    nodeLayer.append(link);
    parts.set(id, { link, sub: link.lastChild, node });
  }
  svg.append(nodeLayer);
  container.replaceChildren(svg);

  return function update(task) {
    const part = parts.get(task.taskId);
    if (part == null) return false;
    const node = { ...part.node, ...task };
    part.node = node;
    part.link.setAttribute("class", `node node-${node.kind} state-${displayState(node)}`);
    part.link.setAttribute("data-state", node.state ?? "unknown");
    part.link.setAttribute("aria-label", accessibleName(node));
    part.sub.textContent = clip(subtitle(node), 30);
    return true;
  };
}
