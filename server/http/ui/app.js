/**
 * The web app: a single page with hash routes.
 *
 * - `#/` task groups, `#/groups/<id>` a task group's graph (live), `#/tasks/<id>` a task
 *   (definition, runs, live log, artifacts, activities), `#/submit` edit and submit a graph,
 *   `#/federation` followers, following, follow requests, delivery health and hooks.
 * - Every view asks the cluster which actions the signed-in client may take and shows only
 *   those buttons; the cluster checks the scopes again on every request.
 * @module
 */
/* global document, window, location, setTimeout, clearTimeout, setInterval, clearInterval, AbortController, URL */
import {
  api,
  ApiCallError,
  forgetWhoami,
  satisfies,
  signIn,
  signOut,
  streamText,
  subscribe,
  token,
  whoami,
} from "./api.js";
import { displayState, drawGraph, remoteWebAppLink, stateWords } from "./graph.js";
import {
  CREATE_GROUP,
  LIST_GROUPS,
  LIST_HOOKS,
  MANAGE_FOLLOWS,
  READ_FEDERATION,
  READ_FOLLOWERS,
  READ_FOLLOWING,
  readGroup,
  readTask,
  TASK_ACTIONS,
  taskAction,
} from "./scopes.js";

/** Builds an element: `h("a", { href }, "text", child)`. Text is never parsed as HTML. */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    node.append(child instanceof globalThis.Node ? child : String(child));
  }
  return node;
}

/** How long each state of a task is shown before the next one, in ms. */
const STEP_MS = 250;

const view = document.getElementById("view");
const statusLine = document.getElementById("status");
const who = document.getElementById("who");

/** What the current view must undo when the route changes (streams, timers). */
let cleanups = [];

function onLeave(fn) {
  cleanups.push(fn);
}

function say(text, kind = "info") {
  statusLine.textContent = text;
  statusLine.dataset.kind = kind;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function when(iso) {
  return iso == null ? "—" : new Date(iso).toLocaleString();
}

function stateBadge(task) {
  return h(
    "span",
    { class: `badge state-${displayState(task)}`, "data-state": task.state ?? "unknown" },
    stateWords(task),
  );
}

function errorText(error) {
  if (error instanceof ApiCallError) {
    if (error.status === 403) return `Not allowed: ${error.message}`;
    return error.message;
  }
  return String(error);
}

/** Shows a section whose content failed to load, in place. */
function failed(section, error) {
  section.replaceChildren(
    h(
      "p",
      { class: "muted" },
      error instanceof ApiCallError && error.status === 404
        ? "Not available on this cluster."
        : errorText(error),
    ),
  );
}

// ---------------------------------------------------------------------------------------
// Actions

/**
 * The action buttons for `task` that the client may use, after asking the cluster. Each
 * button posts the action and reports the result in the status line.
 */
async function actionButtons(task, after) {
  const offered = TASK_ACTIONS.filter((a) => a.applies(task));
  if (offered.length === 0) return [];
  const checks = {};
  for (const a of offered) checks[a.action] = taskAction(a.action, task.taskId);
  const allowed = await satisfies(checks);
  return offered
    .filter((a) => allowed[a.action])
    .map((a) =>
      h(
        "button",
        {
          type: "button",
          class: `action action-${a.action}`,
          "data-action": a.action,
          "aria-label": `${a.label} ${task.name ?? task.taskId}`,
          onclick: async (event) => {
            event.currentTarget.disabled = true;
            try {
              await api(`/tasks/${encodeURIComponent(task.taskId)}/${a.action}`, {
                method: "POST",
                body: a.body ?? {},
              });
              say(`${a.label}: done for ${task.taskId}.`);
            } catch (error) {
              say(`${a.label} ${task.taskId}: ${errorText(error)}`, "error");
            }
            after?.();
          },
        },
        a.label,
      ),
    );
}

// ---------------------------------------------------------------------------------------
// Views

async function signInView() {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const problem = h("p", { class: "problem", role: "alert" });
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: async (event) => {
        event.preventDefault();
        signIn(input.value.trim());
        forgetWhoami();
        try {
          await whoami();
          await showWho();
          location.hash = "#/";
        } catch (error) {
          signOut();
          problem.textContent = `That token was refused: ${errorText(error)}`;
        }
      },
    },
    h("h1", {}, "Sign in"),
    h("p", {}, "Sign in with an API token of this cluster."),
    h("label", { for: "token" }, "API token"),
    input,
    h("button", { type: "submit" }, "Sign in"),
    problem,
  );
  view.replaceChildren(form);
  input.focus();
}

async function groupsView() {
  const canCreate = (await satisfies({ create: CREATE_GROUP })).create;
  const table = h("tbody");
  const refresh = async () => {
    const { taskGroups } = await api("/task-groups?limit=100");
    table.replaceChildren(
      ...(taskGroups.length === 0
        ? [h("tr", {}, h("td", { colspan: 4 }, "No task groups yet."))]
        : taskGroups.map((g) =>
            h(
              "tr",
              { "data-task-group-id": g.taskGroupId },
              h(
                "td",
                {},
                h("a", { href: `#/groups/${encodeURIComponent(g.taskGroupId)}` }, g.taskGroupId),
              ),
              h(
                "td",
                { class: "counts" },
                Object.entries(g.counts).map(([state, n]) =>
                  h("span", { class: `badge state-${state}` }, `${n} ${state}`),
                ),
              ),
              h("td", {}, when(g.createdAt)),
              h("td", {}, g.resolvedAt == null ? "open" : when(g.resolvedAt)),
            ),
          )),
    );
  };
  // The rows first: the table is shown filled, nothing below it moves when they arrive.
  await refresh();
  view.replaceChildren(
    h(
      "div",
      { class: "heading" },
      h("h1", {}, "Task groups"),
      canCreate ? h("a", { href: "#/submit", class: "button" }, "Submit a graph") : null,
    ),
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        { class: "groups" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "Task group"),
            h("th", { scope: "col" }, "Tasks"),
            h("th", { scope: "col" }, "Created"),
            h("th", { scope: "col" }, "Resolved"),
          ),
        ),
        table,
      ),
    ),
  );
  let pending;
  onLeave(
    subscribe("/events", (name) => {
      if (name !== "task") return;
      clearTimeout(pending);
      pending = setTimeout(() => void refresh().catch(() => {}), 400);
    }),
  );
  onLeave(() => clearTimeout(pending));
}

async function groupView(taskGroupId) {
  const graph = await api(`/task-groups/${encodeURIComponent(taskGroupId)}/graph`);
  const canvas = h("div", { class: "graph-box", tabindex: 0, "aria-label": "Graph, scrollable" });
  const rows = h("tbody");
  const live = h("span", { class: "live", "aria-live": "polite" }, "connecting…");
  const update = drawGraph(canvas, graph);
  const tasks = new Map(graph.tasks.map((t) => [t.taskId, t]));
  const rowOf = new Map();
  const versions = new Map();
  const renderRow = async (task) => {
    const version = (versions.get(task.taskId) ?? 0) + 1;
    versions.set(task.taskId, version);
    const buttons = await actionButtons(task);
    // A newer state was drawn while this one waited for its scope check.
    if (versions.get(task.taskId) !== version) return;
    const row = h(
      "tr",
      { "data-task-id": task.taskId },
      h(
        "td",
        {},
        h("a", { href: `#/tasks/${encodeURIComponent(task.taskId)}` }, task.name),
        h("br"),
        h("code", { class: "muted" }, task.taskId),
      ),
      h("td", {}, stateBadge(task)),
      h("td", { class: "actions" }, buttons),
    );
    const old = rowOf.get(task.taskId);
    if (old != null) old.replaceWith(row);
    else rows.append(row);
    rowOf.set(task.taskId, row);
  };
  for (const t of graph.tasks) await renderRow(t);
  // Shown whole, once the graph is drawn and every row has its buttons: nothing moves in.
  view.replaceChildren(
    h("div", { class: "heading" }, h("h1", {}, "Task group ", h("code", {}, taskGroupId)), live),
    legend(),
    canvas,
    h("h2", {}, "Tasks"),
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        { class: "tasks" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "Task"),
            h("th", { scope: "col" }, "State"),
            h("th", { scope: "col" }, "Actions"),
          ),
        ),
        rows,
      ),
    ),
  );

  // Remote dependencies change by activities, not by this cluster's tasks: reread them now
  // and then (cheap: one query).
  const refreshRemote = async () => {
    const again = await api(`/task-groups/${encodeURIComponent(taskGroupId)}/graph`);
    for (const r of again.remote) update({ taskId: r.url, state: r.state });
    for (const o of again.otherGroups) update(o);
  };
  let remoteSoon;
  const refreshRemoteSoon = () => {
    if (graph.remote.length === 0 && graph.otherGroups.length === 0) return;
    clearTimeout(remoteSoon);
    remoteSoon = setTimeout(() => void refreshRemote().catch(() => {}), 300);
  };
  const timer = setInterval(refreshRemoteSoon, 5000);
  onLeave(() => {
    clearInterval(timer);
    clearTimeout(remoteSoon);
  });

  // A task that went pending, running and completed between two reads of the stream is
  // shown in each state for a moment, in order, rather than jumping to the last one.
  const queues = new Map();
  let closed = false;
  onLeave(() => {
    closed = true;
  });
  const apply = (data) => {
    const before = tasks.get(data.taskId);
    const task = { ...before, ...data };
    tasks.set(data.taskId, task);
    update(task);
    if (before == null || before.state !== task.state || before.inactive !== task.inactive) {
      void renderRow(task);
    }
  };
  const drain = (queue) => {
    const next = queue.shift();
    if (next == null || closed) {
      queue.busy = false;
      return;
    }
    queue.busy = true;
    apply(next);
    setTimeout(() => drain(queue), queue.length > 4 ? 40 : STEP_MS);
  };
  const enqueue = (data) => {
    let queue = queues.get(data.taskId);
    if (queue == null) queues.set(data.taskId, (queue = []));
    queue.push(data);
    if (!queue.busy) drain(queue);
  };

  onLeave(
    subscribe(
      `/task-groups/${encodeURIComponent(taskGroupId)}/events`,
      (name, data) => {
        if (name !== "task") return;
        enqueue(data);
        // A local task moving is often the news that a remote dependency resolved.
        refreshRemoteSoon();
      },
      (s) => {
        live.textContent =
          s === "live" ? "live" : s === "refused" ? "not live: no scope" : "reconnecting…";
        live.dataset.live = s;
      },
    ),
  );
}

function legend() {
  const states = [
    ["unscheduled", "unscheduled"],
    ["inactive", "inactive"],
    ["pending", "pending"],
    ["running", "running"],
    ["completed", "completed"],
    ["failed", "failed"],
    ["exception", "exception"],
    ["unknown", "remote, not yet known"],
  ];
  return h(
    "ul",
    { class: "legend", "aria-label": "Colors by state" },
    states.map(([s, words]) => h("li", {}, h("span", { class: `swatch state-${s}` }), words)),
  );
}

async function taskView(taskId) {
  const path = `/tasks/${encodeURIComponent(taskId)}`;
  const header = h("div", { class: "heading" });
  const actions = h("div", { class: "actions" });
  const summary = h("dl", { class: "summary" });
  const runs = h("div", { class: "scroll" });
  const log = h("pre", { class: "log", tabindex: 0, "aria-label": "Log of the latest run" });
  const logTitle = h("h2", {}, "Log");
  const artifacts = h("div", { class: "scroll" });
  const activities = h("div", { class: "activities" });
  const definition = h("pre", { class: "definition", tabindex: 0 });
  let following;
  let lastKey;
  const render = async () => {
    const task = await api(path);
    const view = {
      taskId: task.task_id,
      name: task.name,
      state: task.state,
      inactive: task.inactive,
      breakpoint: task.breakpoint,
    };
    header.replaceChildren(h("h1", {}, task.name, " ", stateBadge(view)));
    actions.replaceChildren(...(await actionButtons(view, () => void render())));
    summary.replaceChildren(
      h("dt", {}, "Task id"),
      h("dd", {}, h("code", {}, task.task_id)),
      h("dt", {}, "Task group"),
      h(
        "dd",
        {},
        h("a", { href: `#/groups/${encodeURIComponent(task.task_group_id)}` }, task.task_group_id),
      ),
      h("dt", {}, "Federated id"),
      h("dd", {}, h("a", { href: task.url }, task.url)),
      h("dt", {}, "Dependencies"),
      h(
        "dd",
        {},
        task.dependencies.length === 0
          ? "none"
          : h(
              "ul",
              {},
              task.dependencies.map((d) =>
                h(
                  "li",
                  {},
                  d.remote
                    ? h(
                        "a",
                        { href: remoteWebAppLink(d.dependency), rel: "noopener noreferrer" },
                        d.dependency,
                      )
                    : h("a", { href: `#/tasks/${encodeURIComponent(d.dependency)}` }, d.dependency),
                  d.resolution ? ` (${d.resolution})` : "",
                ),
              ),
            ),
      ),
    );
    runs.replaceChildren(
      task.runs.length === 0
        ? h("p", { class: "muted" }, "No runs yet.")
        : h(
            "table",
            { class: "runs" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["Run", "State", "Reason", "Started", "Resolved", "Exit"].map((c) =>
                  h("th", { scope: "col" }, c),
                ),
              ),
            ),
            h(
              "tbody",
              {},
              task.runs.map((r) =>
                h(
                  "tr",
                  {},
                  h("td", {}, r.run_id),
                  h("td", {}, stateBadge(r)),
                  h("td", {}, r.reason_resolved ?? r.reason_created),
                  h("td", {}, when(r.started_at)),
                  h("td", {}, when(r.resolved_at)),
                  h("td", {}, r.exit_code ?? "—"),
                ),
              ),
            ),
          ),
    );
    artifacts.replaceChildren(
      task.artifacts.length === 0
        ? h("p", { class: "muted" }, "No artifacts.")
        : h(
            "table",
            { class: "artifacts" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["Name", "Size", "SHA-256", "Type"].map((c) => h("th", { scope: "col" }, c)),
              ),
            ),
            h(
              "tbody",
              {},
              task.artifacts.map((a) =>
                h(
                  "tr",
                  {},
                  h(
                    "td",
                    {},
                    h("a", { href: a.contentUrl, download: a.name.split("/").at(-1) }, a.name),
                  ),
                  h("td", {}, formatBytes(a.size)),
                  h("td", {}, h("code", { class: "digest" }, a.sha256)),
                  h("td", {}, a.media_type),
                ),
              ),
            ),
          ),
    );
    definition.textContent = JSON.stringify(task.definition, null, 2);

    // The log: followed while the latest run runs, read once otherwise.
    const last = task.runs.at(-1);
    const key = last == null ? "none" : `${last.run_id}:${last.state}`;
    if (key !== lastKey) {
      lastKey = key;
      following?.abort();
      following = undefined;
      if (last == null || task.breakpoint) {
        log.textContent = task.breakpoint ? "A breakpoint task runs nothing." : "No runs yet.";
      } else {
        const logPath = `${path}/runs/${last.run_id}/log`;
        if (last.state === "running") {
          logTitle.textContent = `Log of run ${last.run_id} (live)`;
          log.textContent = "";
          const controller = new AbortController();
          following = controller;
          void streamText(
            `${logPath}?follow=1`,
            (text) => {
              const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
              log.textContent += text;
              if (atEnd) log.scrollTop = log.scrollHeight;
            },
            controller.signal,
          ).catch(() => {});
        } else {
          logTitle.textContent = `Log of run ${last.run_id}`;
          const res = await globalThis.fetch(`/api/v1${logPath}`, {
            headers: { Authorization: `Bearer ${token() ?? ""}` },
          });
          const text = res.ok ? await res.text() : "The log could not be read.";
          log.textContent = text === "" ? "(The run wrote nothing.)" : text;
        }
      }
    }
  };
  const typeOf = (types) => types.filter((t) => t !== "Activity").join(", ");
  const ABOUT = {
    dependency: "about its remote dependency",
    hook: "fired the hook that created its task group; about",
  };
  const loadActivities = async () => {
    const a = await api(`${path}/activities`);
    activities.replaceChildren(
      h("h3", {}, "Sent"),
      a.sent.length === 0
        ? h("p", { class: "muted" }, "None.")
        : h(
            "ul",
            { class: "activities-sent" },
            a.sent.map((s) =>
              h(
                "li",
                { "data-activity-id": s.activityId },
                h("code", {}, typeOf(s.types)),
                " ",
                h("a", { href: s.activityId }, s.activityId),
                ` published ${when(s.publishedAt)}`,
                s.fannedOutAt ? `, sent to followers ${when(s.fannedOutAt)}` : ", not sent yet",
              ),
            ),
          ),
      h("h3", {}, "Received"),
      a.received.length === 0
        ? h("p", { class: "muted" }, "None.")
        : h(
            "ul",
            { class: "activities-received" },
            a.received.map((r) =>
              h(
                "li",
                { "data-activity-id": r.activityId, "data-about": r.about },
                h("code", {}, typeOf(r.types)),
                " ",
                h("a", { href: r.activityId }, r.activityId),
                " from ",
                h("a", { href: r.actor, class: "actor" }, r.actor),
                r.relayedBy ? ` (relayed by ${r.relayedBy})` : "",
                `, received ${when(r.receivedAt)}; ${ABOUT[r.about] ?? "about"} `,
                r.object ? h("a", { href: r.object }, r.object) : "—",
              ),
            ),
          ),
      h("h3", {}, "Last known state of its remote dependencies"),
      a.remote.length === 0
        ? h("p", { class: "muted" }, "None.")
        : h(
            "ul",
            { class: "remote-states" },
            a.remote.map((r) =>
              h(
                "li",
                {},
                r.kind === "artifact"
                  ? `Artifact ${r.name} (${formatBytes(r.size)}, sha-256 ${r.sha256.slice(0, 12)}…) of `
                  : `State ${r.state} (by ${r.source}) of `,
                h("a", { href: r.taskUrl }, r.taskUrl),
                ` from ${r.actor}, ${when(r.updatedAt)}`,
              ),
            ),
          ),
    );
  };
  onLeave(() => following?.abort());
  await render();
  try {
    await loadActivities();
  } catch (error) {
    failed(activities, error);
  }
  view.replaceChildren(
    header,
    actions,
    summary,
    h("h2", {}, "Runs"),
    runs,
    logTitle,
    log,
    h("h2", {}, "Artifacts"),
    artifacts,
    h("h2", {}, "Activities"),
    activities,
    h("h2", {}, "Definition"),
    definition,
  );

  let pending;
  let polling;
  onLeave(
    subscribe(
      "/events",
      (name, data) => {
        if (name !== "task" || data.taskId !== taskId) return;
        clearTimeout(pending);
        pending = setTimeout(() => {
          void render().catch(() => {});
          void loadActivities().catch(() => {});
        }, 150);
      },
      (status) => {
        // A token that may read this task but not follow every task's changes: read the
        // task again every few seconds instead.
        if (status === "refused" && polling == null) {
          polling = setInterval(() => void render().catch(() => {}), 3000);
        }
      },
    ),
  );
  onLeave(() => {
    clearTimeout(pending);
    clearInterval(polling);
  });
}

async function submitView() {
  const YAML = await import("/ui/vendor/yaml/index.js");
  const source = h("textarea", { id: "source", rows: 14, spellcheck: "false" });
  const problem = h("p", { class: "problem", role: "alert" });
  const list = h("div", {});
  const preview = h("div", { class: "graph-box", "aria-label": "Preview of the graph" });
  let graph;
  const read = () => {
    problem.textContent = "";
    try {
      graph = YAML.parse(source.value);
      if (graph == null || !Array.isArray(graph.tasks)) {
        throw new Error("The graph needs a taskGroupId and a list of tasks.");
      }
    } catch (error) {
      graph = undefined;
      problem.textContent = `The graph could not be read: ${error.message}`;
      list.replaceChildren();
      preview.replaceChildren();
      return;
    }
    const boxes = graph.tasks.map((t) =>
      h("input", {
        type: "checkbox",
        id: `run-${t.taskId}`,
        checked: t.inactive !== true,
        "aria-label": `Schedule ${t.taskId} when submitted`,
        onchange: (event) => {
          t.inactive = !event.currentTarget.checked;
          drawPreview();
        },
      }),
    );
    list.replaceChildren(
      h(
        "fieldset",
        {},
        h("legend", {}, "Tasks to schedule (unchecked: created inactive, activate later)"),
        graph.tasks.map((t, i) =>
          h(
            "div",
            { class: "toggle" },
            boxes[i],
            h("label", { for: `run-${t.taskId}` }, t.name ?? t.taskId),
          ),
        ),
      ),
    );
    drawPreview();
  };
  const drawPreview = () => {
    const ids = new Set(graph.tasks.map((t) => t.taskId));
    const edges = [];
    const remote = [];
    for (const t of graph.tasks) {
      for (const d of t.dependencies ?? []) {
        if (ids.has(d)) edges.push({ from: d, to: t.taskId });
        else if (/^https?:/.test(d)) {
          const url = new URL(d);
          remote.push({
            url: d,
            origin: url.origin,
            label: url.pathname.split("/").at(-1),
            state: null,
          });
          edges.push({ from: d, to: t.taskId });
        }
      }
      for (const input of t.inputs ?? []) {
        if (ids.has(input.task)) edges.push({ from: input.task, to: t.taskId });
      }
    }
    drawGraph(preview, {
      tasks: graph.tasks.map((t) => ({
        taskId: t.taskId,
        name: t.name ?? t.taskId,
        state: "unscheduled",
        inactive: t.inactive === true,
        breakpoint: t.breakpoint === true,
      })),
      remote,
      edges,
    });
  };
  view.replaceChildren(
    h("h1", {}, "Submit a task graph"),
    h(
      "form",
      {
        class: "card",
        onsubmit: async (event) => {
          event.preventDefault();
          if (graph == null) read();
          if (graph == null) return;
          try {
            const result = await api("/task-groups", { method: "POST", body: graph });
            say(
              `Task group ${result.taskGroupId} ${result.created ? "created" : "already existed"}.`,
            );
            location.hash = `#/groups/${encodeURIComponent(result.taskGroupId)}`;
          } catch (error) {
            problem.textContent = errorText(error);
          }
        },
      },
      h("label", { for: "source" }, "Task graph (YAML or JSON)"),
      source,
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", onclick: read }, "Read graph"),
        h("button", { type: "submit" }, "Submit"),
      ),
      problem,
      list,
    ),
    preview,
  );
}

async function federationView() {
  const allowed = await satisfies({
    following: READ_FOLLOWING,
    followers: READ_FOLLOWERS,
    manage: MANAGE_FOLLOWS,
    deliveries: READ_FEDERATION,
    hooks: LIST_HOOKS,
  });
  const sections = {
    pending: h("div", { "data-section": "pending" }),
    followers: h("div", { "data-section": "followers" }),
    following: h("div", { "data-section": "following" }),
    deliveries: h("div", { "data-section": "deliveries" }),
    hooks: h("div", { "data-section": "hooks" }),
  };
  const actorList = (rows) =>
    rows.length === 0
      ? h("p", { class: "muted" }, "None.")
      : h(
          "ul",
          {},
          rows.map((r) =>
            h(
              "li",
              {},
              h("a", { href: r.actor_id ?? r.actor }, r.actor_id ?? r.actor),
              ` (${r.state})`,
            ),
          ),
        );
  const load = async () => {
    const notAllowed = (what) => h("p", { class: "muted" }, `Your token may not read ${what}.`);
    if (!allowed.following) {
      sections.following.replaceChildren(notAllowed("the clusters this one follows"));
    } else {
      try {
        const { following } = await api("/following");
        sections.following.replaceChildren(actorList(following));
      } catch (error) {
        failed(sections.following, error);
      }
    }
    if (!allowed.followers) {
      sections.followers.replaceChildren(notAllowed("this cluster's followers"));
      sections.pending.replaceChildren(notAllowed("follow requests"));
    } else {
      try {
        const { followers } = await api("/followers");
        sections.followers.replaceChildren(
          actorList(followers.filter((f) => f.state !== "pending")),
        );
      } catch (error) {
        failed(sections.followers, error);
      }
      try {
        const answer = await api("/followers?state=pending");
        const pending = (answer.followers ?? []).filter((f) => f.state === "pending");
        sections.pending.replaceChildren(
          pending.length === 0
            ? h("p", { class: "muted" }, "None.")
            : h(
                "ul",
                {},
                pending.map((f) =>
                  h(
                    "li",
                    {},
                    h("a", { href: f.actor_id }, f.actor_id),
                    " ",
                    allowed.manage
                      ? ["approve", "reject"].map((verb) =>
                          h(
                            "button",
                            {
                              type: "button",
                              class: "action",
                              "aria-label": `${verb === "approve" ? "Approve" : "Reject"} ${f.actor_id}`,
                              onclick: async () => {
                                try {
                                  await api(`/followers/${verb}`, {
                                    method: "POST",
                                    body: { actor: f.actor_id },
                                  });
                                  say(`${verb}d ${f.actor_id}.`);
                                } catch (error) {
                                  say(errorText(error), "error");
                                }
                                void load();
                              },
                            },
                            verb === "approve" ? "Approve" : "Reject",
                          ),
                        )
                      : null,
                  ),
                ),
              ),
        );
      } catch (error) {
        failed(sections.pending, error);
      }
    }
    if (!allowed.deliveries) {
      sections.deliveries.replaceChildren(notAllowed("delivery health"));
    } else {
      try {
        const { peers } = await api("/deliveries/peers");
        sections.deliveries.replaceChildren(
          peers.length === 0
            ? h("p", { class: "muted" }, "No deliveries yet.")
            : h(
                "div",
                { class: "scroll" },
                h(
                  "table",
                  { class: "peers" },
                  h(
                    "thead",
                    {},
                    h(
                      "tr",
                      {},
                      [
                        "Peer inbox",
                        "Last success",
                        "Last failure",
                        "Failures in a row",
                        "Circuit",
                        "Waiting",
                      ].map((c) => h("th", { scope: "col" }, c)),
                    ),
                  ),
                  h(
                    "tbody",
                    {},
                    peers.map((p) =>
                      h(
                        "tr",
                        {},
                        h("td", {}, p.inbox, p.gone ? " (gone)" : ""),
                        h("td", {}, when(p.lastSuccessAt)),
                        h("td", {}, when(p.lastFailureAt)),
                        h("td", {}, p.consecutiveFailures),
                        h(
                          "td",
                          {},
                          h("span", { class: `circuit circuit-${p.circuit}` }, p.circuit),
                        ),
                        h("td", {}, p.pending),
                      ),
                    ),
                  ),
                ),
              ),
        );
      } catch (error) {
        failed(sections.deliveries, error);
      }
    }
    if (!allowed.hooks) {
      sections.hooks.replaceChildren(notAllowed("hooks"));
    } else {
      try {
        const { hooks } = await api("/hooks");
        const items = [];
        for (const hook of hooks) {
          let fires = [];
          let problem = null;
          try {
            fires = (await api(`/hooks/${encodeURIComponent(hook.hookId)}/fires?limit=10`)).fires;
          } catch (error) {
            problem = errorText(error);
          }
          items.push(
            h(
              "li",
              { "data-hook-id": hook.hookId },
              h("code", {}, hook.hookId),
              hook.description ? ` ${hook.description}` : "",
              h(
                "p",
                { class: "muted filter" },
                "On: ",
                Object.entries(hook.filter ?? {})
                  .map(([k, v]) => `${k} ${typeof v === "string" ? v : JSON.stringify(v)}`)
                  .join(", ") || "every activity of a followed cluster",
              ),
              problem != null
                ? h("p", { class: "muted" }, problem)
                : fires.length === 0
                  ? h("p", { class: "muted" }, "Not fired yet.")
                  : h(
                      "ul",
                      { class: "fires" },
                      fires.map((f) =>
                        h(
                          "li",
                          { "data-fire-id": f.fireId, "data-state": f.state },
                          `${f.state} ${when(f.firedAt ?? f.receivedAt)} on ${f.cluster}'s `,
                          h("a", { href: f.activityId }, f.event?.["event.kind"] ?? "activity"),
                          f.taskGroupId
                            ? h(
                                "span",
                                {},
                                ": task group ",
                                h(
                                  "a",
                                  { href: `#/groups/${encodeURIComponent(f.taskGroupId)}` },
                                  f.taskGroupId,
                                ),
                              )
                            : "",
                          f.error ? ` (${f.error})` : "",
                        ),
                      ),
                    ),
            ),
          );
        }
        sections.hooks.replaceChildren(
          items.length === 0
            ? h("p", { class: "muted" }, "No hooks.")
            : h("ul", { class: "hooks" }, items),
        );
      } catch (error) {
        failed(sections.hooks, error);
      }
    }
  };
  await load();
  // Shown once every section is in, so that none pushes the next down as it arrives.
  view.replaceChildren(
    h("h1", {}, "Federation"),
    h("h2", {}, "Pending follow requests"),
    sections.pending,
    h("h2", {}, "Followers"),
    sections.followers,
    h("h2", {}, "Following"),
    sections.following,
    h("h2", {}, "Delivery health per peer"),
    sections.deliveries,
    h("h2", {}, "Hooks"),
    sections.hooks,
  );
}

// ---------------------------------------------------------------------------------------
// Routing

async function showWho() {
  const submitLink = document.querySelector('nav a[href="#/submit"]');
  submitLink.hidden =
    token() == null || !(await satisfies({ c: CREATE_GROUP }).catch(() => ({}))).c;
  if (token() == null) {
    who.replaceChildren(h("a", { href: "#/signin" }, "Sign in"));
    return;
  }
  try {
    const me = await whoami();
    who.replaceChildren(
      h("span", { class: "client" }, me.clientId),
      " ",
      h(
        "button",
        {
          type: "button",
          class: "link",
          onclick: () => {
            signOut();
            forgetWhoami();
            location.hash = "#/signin";
            void showWho();
          },
        },
        "Sign out",
      ),
    );
  } catch {
    who.replaceChildren(h("a", { href: "#/signin" }, "Sign in"));
  }
}

async function route() {
  for (const fn of cleanups) fn();
  cleanups = [];
  say("");
  const hash = location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").slice(1).map(decodeURIComponent);
  document.querySelectorAll("nav a").forEach((a) => {
    a.toggleAttribute("aria-current", a.getAttribute("href") === `#/${parts[0] ?? ""}`);
  });
  if (token() == null || parts[0] === "signin") {
    await signInView();
    return;
  }
  view.setAttribute("aria-busy", "true");
  try {
    const id = parts.slice(1).join("/");
    const [name, needs, show] =
      parts[0] === "federation"
        ? ["federation", [], federationView]
        : parts[0] === "groups" && id !== ""
          ? ["this task group", readGroup(id), () => groupView(id)]
          : parts[0] === "tasks" && id !== ""
            ? ["this task", readTask(id), () => taskView(id)]
            : parts[0] === "submit"
              ? ["submitting task graphs", CREATE_GROUP, submitView]
              : ["this cluster's task groups", LIST_GROUPS, groupsView];
    if (needs.length > 0 && !(await satisfies({ needs })).needs) {
      view.replaceChildren(
        h("h1", {}, "Nothing to show"),
        h("p", {}, `Your token may not see ${name}: it needs ${needs.join(" and ")}.`),
      );
    } else {
      await show();
    }
  } catch (error) {
    if (error instanceof ApiCallError && error.status === 401) {
      signOut();
      location.hash = "#/signin";
      return;
    }
    view.replaceChildren(h("h1", {}, "Something went wrong"), h("p", {}, errorText(error)));
  } finally {
    view.removeAttribute("aria-busy");
    view.dataset.route = parts[0] ?? "";
    view.dataset.ready = "true";
  }
}

window.addEventListener("hashchange", () => {
  delete view.dataset.ready;
  void route();
});
void showWho();
void route();
