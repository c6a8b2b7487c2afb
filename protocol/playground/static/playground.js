// The playground: chat (streamed from /v1/chat/completions, with structured output and tools),
// ranking (/rerank or /score) and live server figures (/v1/models, /load, /metrics). It calls
// the public API as any client does; the API key, conversations and settings stay in this
// browser's localStorage and the key travels only in the Authorization header.
"use strict";

const $ = (id) => document.getElementById(id);

const store = {
  get(key, fallback) {
    try {
      const value = localStorage.getItem("lumen." + key);
      return value === null ? fallback : JSON.parse(value);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem("lumen." + key, JSON.stringify(value));
    } catch {
      // storage full or blocked: the page still works, it just forgets on reload
    }
  },
};

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function notice(message) {
  $("notice").textContent = message || "";
  $("notice").hidden = !message;
}

// ---- API -------------------------------------------------------------------------------

async function api(path, body, signal) {
  const headers = {};
  const key = store.get("apiKey", "");
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

async function errorMessage(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message = body.error?.message || body.message || message;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) message += " (enter the API key at the top of the page)";
  return message;
}

// The data fields of a server-sent event stream, one string per event.
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) yield data;
    }
  }
}

// ---- Tabs ------------------------------------------------------------------------------

const TABS = ["chat", "rank", "server"];

function selectTab(name, focus = false) {
  for (const tab of TABS) {
    const selected = tab === name;
    const button = $("tab-" + tab);
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $("panel-" + tab).hidden = !selected;
    if (selected && focus) button.focus();
  }
  store.set("tab", name);
  if (name === "server") serverPolling.start();
  else serverPolling.stop();
}

$("tabs").addEventListener("click", (event) => {
  const tab = event.target.closest("[role=tab]");
  if (tab) selectTab(tab.id.slice(4));
});

$("tabs").addEventListener("keydown", (event) => {
  const current = TABS.indexOf(store.get("tab", "chat"));
  const next = {
    ArrowRight: (current + 1) % TABS.length,
    ArrowLeft: (current + TABS.length - 1) % TABS.length,
    Home: 0,
    End: TABS.length - 1,
  }[event.key];
  if (next === undefined) return;
  event.preventDefault();
  selectTab(TABS[next], true);
});

// ---- Models and key --------------------------------------------------------------------

let models = [];

function fillModels(select, remembered) {
  select.replaceChildren(...models.map((m) => el("option", { value: m.id }, m.id)));
  if (models.some((m) => m.id === remembered)) select.value = remembered;
}

async function loadModels() {
  try {
    models = (await (await api("/v1/models")).json()).data;
    notice("");
  } catch (error) {
    models = [];
    notice("Could not list the models: " + error.message);
  }
  fillModels($("model"), store.get("model", models[0]?.id));
  // Ranking wants the embedding / scoring model, usually served after the chat one.
  fillModels($("rank-model"), store.get("rankModel", models[models.length - 1]?.id));
  renderModelTable();
}

$("api-key").value = store.get("apiKey", "");
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  store.set("apiKey", $("api-key").value.trim());
  loadModels();
});
$("model").addEventListener("change", () => store.set("model", $("model").value));
$("rank-model").addEventListener("change", () => store.set("rankModel", $("rank-model").value));

// ---- Chat ------------------------------------------------------------------------------

// [{id, title, messages: [{role, content, tool_calls?, stats?, error?, stopped?}]}], newest first
let conversations = store.get("conversations", []);
let currentId = store.get("current", null);
let controller = null; // the streaming reply's AbortController
let editing = null; // index of the user message being edited

const SETTING_FIELDS = ["system", "temperature", "top-p", "max-tokens", "seed", "schema", "tools", "tool-choice"];
const savedSettings = store.get("settings", {});
for (const id of SETTING_FIELDS) if (savedSettings[id] !== undefined) $(id).value = savedSettings[id];
$("chat-settings").addEventListener("input", () => {
  store.set("settings", Object.fromEntries(SETTING_FIELDS.map((id) => [id, $(id).value])));
});
$("chat-settings").addEventListener("submit", (event) => event.preventDefault());

function save() {
  store.set("conversations", conversations);
  store.set("current", currentId);
}

function newConversation() {
  const conversation = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: "New chat", messages: [] };
  conversations.unshift(conversation);
  currentId = conversation.id;
  save();
  return conversation;
}

function current() {
  return conversations.find((c) => c.id === currentId) || newConversation();
}

function renderList() {
  $("chat-list").replaceChildren(
    ...conversations.map((c) =>
      el(
        "li",
        {},
        el("button", {
          type: "button", class: "open", "aria-current": String(c.id === currentId), title: c.title,
          onclick: () => { if (controller) return; currentId = c.id; editing = null; save(); renderChat(); },
        }, c.title),
        el("button", {
          type: "button", class: "quiet", "aria-label": "Delete " + c.title,
          onclick: () => {
            if (controller && c.id === currentId) return;
            conversations = conversations.filter((other) => other !== c);
            if (c.id === currentId) currentId = conversations[0]?.id ?? null;
            save();
            renderChat();
          },
        }, "×"),
      ),
    ),
  );
}

function toolCallText(call) {
  return `${call.function.name}(${call.function.arguments})`;
}

function messageBody(message) {
  const content = el("div", { class: "content" });
  if (message.role === "assistant") content.append(window.renderMarkdown(message.content));
  else content.append(el("p", { class: "pre" }, message.content));
  const parts = [content];
  if (message.tool_calls?.length) {
    parts.push(el("div", { class: "tools-called" }, el("strong", {}, "Tool calls"),
      el("pre", {}, message.tool_calls.map(toolCallText).join("\n"))));
  }
  if (message.error) parts.push(el("p", { class: "error" }, "Error: " + message.error));
  if (message.stats) parts.push(el("p", { class: "stats" }, message.stats));
  return parts;
}

function renderMessages() {
  const conversation = current();
  const last = conversation.messages.length - 1;
  $("messages").replaceChildren(
    ...conversation.messages.map((message, i) => {
      const item = el("li", { class: "message " + message.role },
        el("div", { class: "role" }, message.role), ...messageBody(message));
      if (controller === null) {
        const controls = el("div", { class: "controls" });
        if (message.role === "user") {
          controls.append(el("button", { type: "button", class: "quiet", onclick: () => startEdit(i) }, "Edit"));
        } else if (i === last) {
          controls.append(el("button", { type: "button", class: "quiet", onclick: regenerate }, "Regenerate"));
        }
        item.append(controls);
      }
      return item;
    }),
  );
  $("messages").lastElementChild?.scrollIntoView({ block: "end" });
}

function renderChat() {
  renderList();
  renderMessages();
  $("prompt").labels[0].firstChild.textContent = editing === null ? "Message " : "Edit message ";
}

// Re-render the streaming reply at most once per frame.
let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    renderMessages();
  });
}

function startEdit(index) {
  editing = index;
  $("prompt").value = current().messages[index].content;
  $("prompt").focus();
  renderChat();
}

function regenerate() {
  const conversation = current();
  if (conversation.messages.at(-1)?.role === "assistant") conversation.messages.pop();
  generate(conversation);
}

function numberSetting(id, parse) {
  const raw = $(id).value.trim();
  if (raw === "") return undefined;
  const value = parse(raw);
  if (Number.isNaN(value)) throw new Error(`${$(id).labels[0].textContent} is not a number`);
  return value;
}

function jsonSetting(id, what) {
  const raw = $(id).value.trim();
  if (!raw) return undefined;
  try {
    return JSON.parse(raw);
  } catch (error) {
    throw new Error(`${what}: not valid JSON (${error.message})`);
  }
}

function requestBody(conversation) {
  const body = {
    model: $("model").value,
    messages: [],
    stream: true,
    stream_options: { include_usage: true },
    temperature: numberSetting("temperature", parseFloat),
    top_p: numberSetting("top-p", parseFloat),
    max_tokens: numberSetting("max-tokens", (v) => parseInt(v, 10)),
    seed: numberSetting("seed", (v) => parseInt(v, 10)),
  };
  const system = $("system").value.trim();
  if (system) body.messages.push({ role: "system", content: system });
  for (const message of conversation.messages.slice(0, -1)) { // all but the reply being made
    let content = message.content;
    // Tools are not run here, so earlier calls go back as text rather than unanswered calls.
    if (message.tool_calls?.length) content += "\n" + message.tool_calls.map(toolCallText).join("\n");
    if (content) body.messages.push({ role: message.role, content });
  }
  const schema = jsonSetting("schema", "The JSON schema");
  if (schema !== undefined) {
    body.response_format = { type: "json_schema", json_schema: { name: "playground", schema } };
  }
  const tools = jsonSetting("tools", "The tool definitions");
  if (tools !== undefined) {
    if (!Array.isArray(tools)) throw new Error("The tool definitions must be a JSON array");
    body.tools = tools;
    body.tool_choice = $("tool-choice").value;
  }
  return body;
}

// Tool-call deltas carry an index; the first one of an index brings its id and name, the
// following ones pieces of the arguments.
function mergeToolCalls(reply, deltas) {
  reply.tool_calls ??= [];
  for (const delta of deltas) {
    const call = (reply.tool_calls[delta.index] ??= { id: "", type: "function", function: { name: "", arguments: "" } });
    if (delta.id) call.id = delta.id;
    if (delta.function?.name) call.function.name += delta.function.name;
    if (delta.function?.arguments) call.function.arguments += delta.function.arguments;
  }
}

function replyStats(started, first, ended, usage, reply) {
  const parts = [];
  if (usage) {
    parts.push(`${usage.completion_tokens} tokens`);
    const seconds = (ended - (first ?? started)) / 1000;
    if (usage.completion_tokens > 1 && seconds > 0) {
      parts.push(`${((usage.completion_tokens - 1) / seconds).toFixed(1)} tokens/s`);
    }
  }
  if (first !== null) parts.push(`first token after ${Math.round(first - started)} ms`);
  if (reply.finish && reply.finish !== "stop") parts.push(`finish: ${reply.finish}`);
  if (reply.stopped) parts.push("stopped");
  return parts.join(" · ");
}

function setStreaming(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
  $("messages").setAttribute("aria-busy", String(on));
}

async function generate(conversation) {
  const reply = { role: "assistant", content: "" };
  let body;
  try {
    body = requestBody({ messages: [...conversation.messages, reply] });
  } catch (error) {
    notice(error.message);
    return;
  }
  notice("");
  conversation.messages.push(reply);
  controller = new AbortController();
  setStreaming(true);
  save();
  renderChat();
  const started = performance.now();
  let first = null;
  let usage = null;
  try {
    const response = await api("/v1/chat/completions", body, controller.signal);
    for await (const data of sseEvents(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      const delta = choice.delta || {};
      if (first === null && (delta.content || delta.tool_calls)) first = performance.now();
      if (delta.content) reply.content += delta.content;
      if (delta.tool_calls) mergeToolCalls(reply, delta.tool_calls);
      if (choice.finish_reason) reply.finish = choice.finish_reason;
      scheduleRender();
    }
  } catch (error) {
    if (error.name === "AbortError") reply.stopped = true;
    else reply.error = error.message;
  }
  reply.stats = replyStats(started, first, performance.now(), usage, reply);
  controller = null;
  setStreaming(false);
  save();
  renderChat();
  $("prompt").focus();
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  const conversation = current();
  if (editing !== null) conversation.messages.splice(editing);
  editing = null;
  conversation.messages.push({ role: "user", content: text });
  if (conversation.title === "New chat") conversation.title = text.slice(0, 48);
  $("prompt").value = "";
  generate(conversation);
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  } else if (event.key === "Escape" && editing !== null) {
    editing = null;
    $("prompt").value = "";
    renderChat();
  }
});

$("stop").addEventListener("click", () => controller?.abort());
$("new-chat").addEventListener("click", () => {
  if (controller) return;
  editing = null;
  newConversation();
  renderChat();
  $("prompt").focus();
});

// ---- Rank ------------------------------------------------------------------------------

$("rank-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const route = document.querySelector("input[name=rank-route]:checked").value;
  const model = $("rank-model").value;
  const query = $("query").value.trim();
  const documents = $("documents").value.split("\n").map((d) => d.trim()).filter(Boolean);
  $("rank").disabled = true;
  try {
    let scored;
    if (route === "/rerank") {
      const result = await (await api("/rerank", { model, query, documents })).json();
      scored = result.results.map((r) => ({ index: r.index, score: r.relevance_score }));
    } else {
      const result = await (await api("/score", { model, text_1: query, text_2: documents })).json();
      scored = result.data.map((d) => ({ index: d.index, score: d.score }));
    }
    scored.sort((a, b) => b.score - a.score);
    const top = Math.max(...scored.map((s) => Math.abs(s.score)), 1e-9);
    $("rank-results").tBodies[0].replaceChildren(
      ...scored.map((s, rank) => {
        const bar = el("span", { class: "bar", "aria-hidden": "true" });
        bar.style.width = `${Math.round((Math.abs(s.score) / top) * 6)}rem`;
        return el("tr", {}, el("td", {}, String(rank + 1)),
          el("td", {}, bar, s.score.toFixed(4)), el("td", {}, documents[s.index]));
      }),
    );
    $("rank-results").hidden = false;
    notice("");
  } catch (error) {
    notice(`${route}: ${error.message}`);
  } finally {
    $("rank").disabled = false;
  }
});

// ---- Server ----------------------------------------------------------------------------

function renderModelTable() {
  $("model-table").tBodies[0].replaceChildren(
    ...models.map((m) =>
      el("tr", {}, el("td", {}, m.id), el("td", {}, String(m.max_model_len ?? "")), el("td", {}, m.owned_by ?? "")),
    ),
  );
}

// Each sample's values by metric name, over every label set.
function parseMetrics(text) {
  const values = {};
  for (const line of text.split("\n")) {
    const match = line.match(/^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)/);
    if (match) (values[match[1]] ??= []).push(Number(match[2]));
  }
  return values;
}

const sum = (list) => (list || []).reduce((a, b) => a + b, 0);
const HISTORY = 40; // samples per chart: two minutes at one per 3 s

const CHARTS = [
  { id: "running", title: "Running requests", value: (m) => sum(m["vllm:num_requests_running"]), format: String },
  { id: "waiting", title: "Waiting requests", value: (m) => sum(m["vllm:num_requests_waiting"]), format: String },
  { id: "kv", title: "KV cache usage", value: (m) => 100 * Math.max(0, ...(m["vllm:kv_cache_usage_perc"] || [])), format: (v) => v.toFixed(1) + " %" },
  { id: "tps", title: "Generated tokens/s", rate: (m) => sum(m["vllm:generation_tokens_total"]), format: (v) => v.toFixed(1) },
];

const SVG = "http://www.w3.org/2000/svg";
for (const chart of CHARTS) {
  chart.history = [];
  chart.valueNode = el("p", { class: "value", id: "figure-" + chart.id }, "–");
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${HISTORY - 1} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", chart.title + " over the last two minutes");
  chart.line = document.createElementNS(SVG, "polyline");
  svg.append(chart.line);
  $("charts").append(el("div", { class: "chart" }, el("h3", {}, chart.title), chart.valueNode, svg));
}

let lastCounters = null; // {time, values} of the previous sample, for rates

function recordMetrics(metrics) {
  const now = performance.now();
  for (const chart of CHARTS) {
    let value;
    if (chart.rate) {
      const total = chart.rate(metrics);
      const before = lastCounters?.values[chart.id];
      value = before === undefined ? 0 : Math.max(0, total - before) / ((now - lastCounters.time) / 1000);
    } else {
      value = chart.value(metrics);
    }
    chart.history = [...chart.history, value].slice(-HISTORY);
    chart.valueNode.textContent = chart.format(value);
    const top = Math.max(...chart.history, 1e-9);
    const offset = HISTORY - chart.history.length;
    chart.line.setAttribute("points", chart.history.map((v, i) => `${offset + i},${100 - (v / top) * 96}`).join(" "));
  }
  lastCounters = { time: now, values: Object.fromEntries(CHARTS.filter((c) => c.rate).map((c) => [c.id, c.rate(metrics)])) };
}

async function refreshServer() {
  try {
    const [modelList, load, metrics] = await Promise.all([
      api("/v1/models").then((r) => r.json()),
      api("/load").then((r) => r.json()),
      api("/metrics").then((r) => r.text()),
    ]);
    models = modelList.data;
    renderModelTable();
    $("load").textContent = JSON.stringify(load, null, 2);
    recordMetrics(parseMetrics(metrics));
    notice("");
  } catch (error) {
    notice("Server figures: " + error.message);
  }
}

const serverPolling = {
  timer: null,
  start() {
    if (this.timer !== null) return;
    refreshServer();
    this.timer = setInterval(() => { if (!document.hidden) refreshServer(); }, 3000);
  },
  stop() {
    clearInterval(this.timer);
    this.timer = null;
  },
};

// ---- Start -----------------------------------------------------------------------------

loadModels();
renderChat();
selectTab(TABS.includes(store.get("tab")) ? store.get("tab") : "chat");
