// The i2vd dashboard: polls the JSON API and draws it. File names and prompts are user
// data: they only ever go into the page as text nodes (textContent), never as HTML.
"use strict";

const POLL_MS = 2000;
const PAGE_SIZE = 12;
let galleryOffset = 0;
let gallerySignature = "";
let failedSignature = "";

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, String(value));
    else node[name] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(seconds) {
  if (!seconds) return "-";
  return new Date(seconds * 1000).toLocaleString();
}

function replace(id, ...children) {
  document.getElementById(id).replaceChildren(...children.flat().filter((child) => child !== null));
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ headers: { Accept: "application/json" } }, options));
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("not signed in");
  }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function drawCounts(counts) {
  replace("counts", Object.entries(counts).map(([state, count]) =>
    el("div", { class: `tile ${state}`, "data-state": state },
      el("span", { class: "number" }, count), el("span", { class: "muted" }, state))));
}

function progressBar(text) {
  const match = /(\d+)\s*(?:\/|of)\s*(\d+)/.exec(text || "") || /(\d+(?:\.\d+)?)\s*%/.exec(text || "");
  if (!match) return null;
  const [value, max] = match[2] !== undefined ? [Number(match[1]), Number(match[2])] : [Number(match[1]), 100];
  return max > 0 ? el("progress", { value, max }) : null;
}

function drawServers(servers, running) {
  if (!running) {
    replace("servers", el("p", { class: "muted" }, "The daemon is not running: no server is in use."));
    return;
  }
  replace("servers", servers.map((server) => {
    const down = server.down_since;
    const health = down
      ? el("span", { class: "pill bad" }, `down since ${when(down)}`)
      : el("span", { class: "pill ok" }, "up");
    const doing = server.current_job
      ? [el("p", {}, `job ${server.current_job}: `, el("span", { class: "file" }, server.current_file || "")),
        server.progress ? el("p", { class: "muted" }, server.progress) : null, progressBar(server.progress)]
      : [el("p", { class: "muted" }, "idle")];
    return el("div", { class: "card server" },
      el("h3", {}, server.name || server.url || "server", " ", health),
      el("p", { class: "muted" }, server.about || ""),
      down && server.error ? el("p", { class: "error" }, server.error) : null,
      el("p", {}, "GPU: ", server.gate || "-"),
      el("p", {}, "Schedule: ", server.schedule || "always"),
      doing,
      el("p", { class: "muted" }, `${server.jobs_done || 0} done, ${server.jobs_failed || 0} failed since start`));
  }));
}

// The GPU hosts' workers (executor: celery): shown only when there are any, or a broker to speak of.
function drawWorkers(workers, broker) {
  document.getElementById("workers-section").hidden = !workers.length && !broker;
  const line = document.getElementById("broker");
  line.hidden = !broker;
  if (broker) {
    line.className = broker.reachable === false || broker.warning ? "error" : "muted";
    line.textContent = (broker.reachable === false
      ? `broker unreachable: ${broker.url} since ${when(broker.since)}: ${broker.error || ""}`
      : `broker ${broker.url}, queue ${broker.queue}: reachable`)
      + (broker.warning ? `; warning: ${broker.warning}` : "");
  }
  replace("workers", workers.map((worker) => {
    const alive = worker.state === "alive";
    const job = worker.current_job === null || worker.current_job === undefined ? null : worker.current_job;
    const doing = job === null
      ? el("p", { class: "muted" }, alive ? "idle" : "was idle")
      : el("p", {}, alive ? `job ${job}: ` : `was on job ${job}: `,
        el("span", { class: "file" }, worker.current_file || worker.current_key || ""));
    return el("div", { class: "card worker", "data-worker-id": worker.worker_id, "data-state": worker.state },
      el("h3", {}, worker.worker_id, " ",
        el("span", { class: `pill ${alive ? "ok" : "bad"}` }, alive ? "alive" : "gone")),
      el("p", { class: "muted" }, worker.worker_id.split("/")[0] === worker.host ? "" : `on ${worker.host}: `,
        worker.server),
      el("p", {}, "GPU: ", worker.gate || "-"),
      doing,
      el("p", { class: "muted" }, `last seen ${when(worker.last_seen)}; ${worker.jobs_done || 0} done`));
  }));
}

function drawCurrent(jobs, servers) {
  if (!jobs.length) {
    replace("current", el("p", { class: "muted" }, "Nothing running."));
    return;
  }
  const progress = Object.fromEntries(servers.map((server) => [server.current_job, server.progress]));
  replace("current", jobs.map((job) => el("div", { class: "card current" },
    el("h3", { class: "file" }, job.rel_path),
    el("p", { class: "prompt" }, job.prompt),
    el("p", { class: "muted" }, `job ${job.id}, profile ${job.profile_name}, started ${when(job.started_at)}`),
    progress[job.id] ? el("p", {}, progress[job.id]) : null, progressBar(progress[job.id]))));
}

function videoCard(job) {
  const video = el("video", { controls: true, preload: "metadata", playsInline: true, muted: true, loop: true,
    poster: job.poster_url || null, "data-job-id": job.id });
  video.append(el("source", { src: job.video_url, type: "video/mp4" }));
  return el("figure", { class: "video", "data-job-id": job.id },
    video,
    el("figcaption", { class: "meta" },
      el("div", { class: "name" }, job.rel_path),
      el("div", { class: "prompt" }, job.prompt),
      el("div", { class: "muted" }, `${job.profile_name} · ${when(job.finished_at)}`)));
}

async function drawGallery() {
  const data = await api(`/api/jobs?state=done&limit=${PAGE_SIZE}&offset=${galleryOffset}`);
  const signature = `${data.total}:${data.jobs.map((job) => `${job.id}@${job.updated_at}`).join(",")}`;
  if (signature === gallerySignature) return;  // redraw only on change: a playing video keeps playing
  gallerySignature = signature;
  const shown = data.jobs.filter((job) => job.video_url);
  replace("gallery", shown.length ? shown.map(videoCard) : [el("p", { class: "muted" }, "No videos yet.")]);
  const last = Math.min(data.total, galleryOffset + data.jobs.length);
  document.getElementById("page").textContent = data.total ? `${galleryOffset + 1}–${last} of ${data.total}` : "";
  document.getElementById("newer").disabled = galleryOffset === 0;
  document.getElementById("older").disabled = last >= data.total;
}

async function retry(path, button) {
  const message = document.getElementById("retry-message");
  button.disabled = true;
  try {
    const data = await api(path, { method: "POST" });
    const said = (result) => `job ${result.job.id}: ${result.outcome}${result.reason ? ` (${result.reason})` : ""}`;
    message.textContent = data.results.length ? data.results.map(said).join("; ") : "Nothing to retry.";
  } catch (error) {
    message.textContent = `Retry failed: ${error.message}`;
    button.disabled = false;
  }
  failedSignature = "";
  refresh();
}

async function drawFailed() {
  const data = await api("/api/jobs?state=failed&limit=100");
  const signature = `${data.total}:${data.jobs.map((job) => `${job.id}@${job.updated_at}`).join(",")}`;
  document.getElementById("retry-all").hidden = data.total === 0;
  if (signature === failedSignature) return;
  failedSignature = signature;
  document.getElementById("retry-all").disabled = false;
  if (!data.jobs.length) {
    replace("failed", el("p", { class: "muted" }, "No failed jobs."));
    return;
  }
  const rows = data.jobs.map((job) => {
    const button = el("button", { type: "button", class: "retry", "data-job-id": job.id }, "Retry");
    button.addEventListener("click", () => retry(`/api/jobs/${job.id}/retry`, button));
    return el("tr", { "data-job-id": job.id },
      el("td", {}, job.id), el("td", { class: "file" }, job.rel_path),
      el("td", { class: "error" }, job.last_error || ""),
      el("td", { class: "optional muted" }, when(job.updated_at)), el("td", {}, button));
  });
  const hidden = data.total - data.jobs.length;
  const more = hidden > 0 ? el("p", { class: "muted" }, `and ${hidden} more`) : null;
  replace("failed", el("table", {},
    el("thead", {}, el("tr", {}, el("th", {}, "Job"), el("th", {}, "File"), el("th", {}, "Error"),
      el("th", { class: "optional" }, "When"), el("th", {}, ""))),
    el("tbody", {}, rows)), more);
}

function drawWebhooks(hooks) {
  const line = document.getElementById("webhooks");
  line.hidden = !hooks;
  if (!hooks) return;
  line.className = hooks.undelivered || hooks.given_up ? "error" : "muted";
  line.textContent = `Webhooks: ${hooks.undelivered} undelivered` +
    (hooks.given_up ? `, ${hooks.given_up} given up after 24 h` : "") +
    (hooks.last_error ? `; last error: ${hooks.last_error}` : "");
}

function drawParked(parked) {
  replace("parked", parked.length ? parked.map((group) => el("div", { class: "card parked" },
    el("p", { class: "error" }, group.reason),
    el("p", {}, `${group.files.length} job(s) wait until this is fixed:`),
    el("ul", {}, group.files.map((file) => el("li", { class: "file" }, file)))))
    : [el("p", { class: "muted" }, "No parked folders.")]);
}

function drawRoots(data) {
  const roots = data.roots.map((root) => {
    const profiles = Object.entries(root.profiles).map(([name, count]) => `${name} (${count})`).join(", ");
    const method = root.method ? `${root.method}${root.why ? `: ${root.why}` : ""}` : "not watched now";
    return el("div", { class: "card root" },
      el("h3", { class: "file" }, root.path, " ",
        root.active === false ? el("span", { class: "pill bad" }, "not active") : null),
      el("p", { class: "muted" }, `${method}; after: ${root.after}; output: `, root.output_dir),
      el("p", {}, "Profiles: ", profiles || "none used yet"),
      root.schedule ? el("p", { class: "schedule" }, "Schedule: ", root.schedule) : null);
  });
  replace("roots", el("p", { class: "muted" }, `${data.settling} file(s) being written or settling`), roots);
}

async function refresh() {
  try {
    const [status, roots] = await Promise.all([api("/api/status"), api("/api/roots")]);
    const daemon = document.getElementById("daemon");
    daemon.textContent = status.daemon.running ? `running (PID ${status.daemon.pid})` : "not running";
    daemon.className = `pill ${status.daemon.running ? "ok" : "bad"}`;
    drawCounts(status.counts);
    drawWebhooks(status.webhooks);
    drawServers(status.servers, status.daemon.running);
    drawWorkers(status.workers || [], status.broker);
    drawCurrent(status.current_jobs, status.servers);
    drawParked(status.parked);
    drawRoots(roots);
    await Promise.all([drawGallery(), drawFailed()]);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.getElementById("problem").hidden = true;
    document.body.dataset.loaded = "true";
  } catch (error) {
    const problem = document.getElementById("problem");
    problem.textContent = `Cannot reach i2vd: ${error.message}`;
    problem.hidden = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("retry-all").addEventListener("click", (event) => retry("/api/retry-failed", event.target));
  document.getElementById("newer").addEventListener("click", () => {
    galleryOffset = Math.max(0, galleryOffset - PAGE_SIZE); gallerySignature = ""; drawGallery();
  });
  document.getElementById("older").addEventListener("click", () => {
    galleryOffset += PAGE_SIZE; gallerySignature = ""; drawGallery();
  });
  refresh();
  setInterval(refresh, POLL_MS);
});
