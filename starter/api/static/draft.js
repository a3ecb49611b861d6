// Chorus drafts page: reads and edits one draft through the /v1 API, live over SSE.
// No framework, no inline code (the page's CSP allows only 'self'); text goes into the DOM
// with textContent only.
"use strict";

const draftId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const $ = (id) => document.getElementById(id);
let user = sessionStorage.getItem("chorus.user") || "";
let key = sessionStorage.getItem("chorus.key") || "";
let baseVersion = 0;      // the version the text area holds
let dirty = false;        // the reader has typed since baseVersion
let newest = null;        // the newest version event seen while dirty
let lastEventId = 0;      // for resuming the event stream
let streamAbort = null;
const history = new Map(); // version -> revision

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = !message;
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (key) headers["Authorization"] = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
  if (!response.ok) {
    const err = new Error((data && (data.detail || data.title)) || ("HTTP " + response.status));
    err.status = response.status;
    err.code = data && data.code;
    throw err;
  }
  return data;
}

const q = () => "?user=" + encodeURIComponent(user);
const base = () => "/v1/drafts/" + encodeURIComponent(draftId);

function renderView(view) {
  $("title").textContent = view.title;
  document.title = view.title + " · Chorus draft";
  $("draft-id").textContent = view.draft_id;
  $("version").textContent = String(view.version);
  $("status").textContent = view.status;
  const list = $("collaborators");
  list.replaceChildren();
  for (const [name, role] of Object.entries(view.collaborators)) {
    const li = document.createElement("li");
    li.textContent = name + " (" + role + ")";
    list.appendChild(li);
  }
}

function setText(content, version) {
  $("content").value = content;
  baseVersion = version;
  dirty = false;
  newest = null;
  $("notice").hidden = true;
  $("version").textContent = String(version);
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  const versions = [...history.keys()].sort((a, b) => b - a);
  for (const v of versions) {
    const rev = history.get(v);
    const li = document.createElement("li");
    li.dataset.version = String(v);
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = "v" + v + " " + rev.author;
    const what = document.createElement("span");
    what.textContent = rev.summary ? ": " + rev.summary : "";
    const when = document.createElement("div");
    when.className = "when";
    when.textContent = rev.created_at ? new Date(rev.created_at).toLocaleString() : "";
    li.append(who, what, when);
    list.appendChild(li);
  }
}

function renderComments(comments) {
  const list = $("comments");
  list.replaceChildren();
  for (const c of comments) {
    if (c.resolved) continue;
    const li = document.createElement("li");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = c.author + ": ";
    const text = document.createElement("span");
    text.textContent = c.text;
    li.append(who, text);
    list.appendChild(li);
  }
}

async function onVersion(rev) {
  history.set(rev.version, rev);
  renderHistory();
  if (rev.status) $("status").textContent = rev.status;
  if (rev.version <= baseVersion) return;
  if (dirty) {
    newest = rev;
    $("notice-text").textContent =
      "Version " + rev.version + " by " + rev.author + " is newer than your text.";
    $("notice").hidden = false;
    return;
  }
  if (typeof rev.content === "string") {
    setText(rev.content, rev.version);
  } else {
    const view = await api("GET", base() + q());  // a large draft: read it whole
    renderView(view);
    setText(view.content || "", view.version);
  }
}

function handleMessage(event, data, id) {
  if (id) lastEventId = Math.max(lastEventId, Number(id) || 0);
  const payload = JSON.parse(data);
  if (event === "version") return onVersion(payload);
  if (event === "comments") return renderComments(payload.comments || []);
  if (event === "closed") $("status").textContent = payload.status;
}

async function follow() {
  // fetch, not EventSource: the API key travels in a header.
  while (true) {
    streamAbort = new AbortController();
    try {
      const headers = { "Accept": "text/event-stream", "Last-Event-ID": String(lastEventId) };
      if (key) headers["Authorization"] = "Bearer " + key;
      const response = await fetch(base() + "/events" + q(), { headers, signal: streamAbort.signal });
      if (!response.ok) throw new Error("event stream: HTTP " + response.status);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = "message", data = "", id = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) event = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
            else if (line.startsWith("id: ")) id = line.slice(4);
          }
          if (data) await handleMessage(event, data, id);
        }
      }
    } catch (e) {
      if (e.name === "AbortError") return;
    }
    await new Promise((r) => setTimeout(r, 1000));  // reconnect, resuming after lastEventId
  }
}

async function open() {
  showError("");
  try {
    const view = await api("GET", base() + q());
    renderView(view);
    setText(view.content || "", view.version);
    const revisions = await api("GET", base() + "/revisions" + q());
    for (const rev of revisions) {
      history.set(rev.version, { ...rev, content: rev.content_after });
    }
    renderHistory();
    lastEventId = view.version;
    $("login").hidden = true;
    $("draft").hidden = false;
    follow();
  } catch (e) {
    showError(e.message);
  }
}

async function save() {
  showError("");
  $("saved").textContent = "";
  try {
    const result = await api("POST", base() + "/edits", {
      user, base_version: baseVersion, content: $("content").value,
      summary: $("summary").value,
    });
    baseVersion = result.version;
    dirty = false;
    $("notice").hidden = true;
    $("version").textContent = String(result.version);
    $("summary").value = "";
    $("saved").textContent = "Saved version " + result.version;
  } catch (e) {
    showError(e.message);
  }
}

async function comment(event) {
  event.preventDefault();
  const text = $("comment-text").value.trim();
  if (!text) return;
  showError("");
  try {
    await api("POST", base() + "/comments", { user, text });
    $("comment-text").value = "";
  } catch (e) {
    showError(e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("draft-id").textContent = draftId;
  $("user").value = user;
  $("key").value = key;
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    user = $("user").value.trim();
    key = $("key").value.trim();
    sessionStorage.setItem("chorus.user", user);
    sessionStorage.setItem("chorus.key", key);
    open();
  });
  $("content").addEventListener("input", () => { dirty = true; });
  $("save").addEventListener("click", save);
  $("comment-form").addEventListener("submit", comment);
  $("load-newer").addEventListener("click", () => {
    if (newest) onVersion({ ...newest, version: newest.version }).then(() => {});
    dirty = false;
    if (newest && typeof newest.content === "string") setText(newest.content, newest.version);
  });
});
