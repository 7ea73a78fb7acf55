/**
 * The server-rendered overview page: the cluster's identity and its tasks.
 * @module
 */

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Renders the home page. */
export function renderHome(view: {
  name: string;
  actor: string;
  tasks: readonly { task_id: string; name: string; state: string; created_at: Date | string }[];
}): string {
  const rows = view.tasks
    .map(
      (t) =>
        `<tr><td><code>${escapeHtml(t.task_id)}</code></td><td>${escapeHtml(t.name)}</td>` +
        `<td class="s-${escapeHtml(t.state)}">${escapeHtml(t.state)}</td>` +
        `<td>${escapeHtml(new Date(t.created_at).toISOString())}</td></tr>`,
    )
    .join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="3">
<title>taskweb · ${escapeHtml(view.name)}</title>
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:1.5rem;max-width:60rem}
table{border-collapse:collapse;width:100%}td,th{padding:.3rem .5rem;border-bottom:1px solid #ddd;text-align:left}
.s-completed{color:#176117}.s-failed,.s-exception{color:#a11}.s-running{color:#0550ae}.s-pending{color:#8a6100}
</style></head><body>
<h1>taskweb cluster <code>${escapeHtml(view.name)}</code></h1>
<p>Actor: <a href="${escapeHtml(view.actor)}">${escapeHtml(view.actor)}</a></p>
<h2>Tasks</h2>
<table><thead><tr><th>Task</th><th>Name</th><th>State</th><th>Created</th></tr></thead>
<tbody>${rows || '<tr><td colspan="4">No tasks yet.</td></tr>'}</tbody></table>
</body></html>`;
}
