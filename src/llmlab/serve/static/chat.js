// The chat page: multi-turn, streamed over server-sent events from /v1/chat/completions.
// Plain browser JavaScript, no build step and nothing fetched from elsewhere (the page works offline).
// document.body.dataset.state is "idle" or "streaming" and dataset.finish the last reply's finish reason
// ("stop", "length", "stopped" by the user, or "error"): the browser test waits on them.

const $ = (id) => document.getElementById(id);
const turns = []; // {role, content} of the conversation so far
let modelName = null;
let controller = null; // AbortController of the reply being streamed

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function setState(state) {
  document.body.dataset.state = state;
  $("send").disabled = state !== "idle";
  $("stop").disabled = state !== "streaming";
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : JSON.stringify(body);
  } catch (e) {
    return response.statusText;
  }
}

let modelLoads = 0; // a key typed while the page's first load is in flight starts a second one: the last wins

async function loadModel() {
  const mine = ++modelLoads;
  const health = await fetch("/health").then((r) => r.json()).catch(() => ({}));
  $("key-label").hidden = !health.needs_api_key;
  const response = await fetch("/v1/models", { headers: headers() }).catch(() => null);
  const models = response && response.ok ? await response.json() : null;
  if (mine !== modelLoads) return;
  if (models) {
    modelName = models.data[0].id;
    $("model").textContent = modelName;
    setStatus("");
  } else {
    $("model").textContent = health.model || "(unknown model)";
    modelName = health.model || null;
    if (response && response.status === 401) setStatus("This server needs an API key: enter it in Settings.", true);
  }
  if (!controller) setState("idle"); // a reply already streaming keeps its state
}

function number(id, parse) {
  const value = parse($(id).value);
  return Number.isFinite(value) ? value : undefined;
}

// Reads the SSE stream: events are separated by a blank line, each line "data: {json}" or "data: [DONE]".
async function readEvents(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onChunk(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  turns.push({ role: "user", content: text });
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  reply.classList.add("streaming");
  const messages = $("system").value.trim() ? [{ role: "system", content: $("system").value.trim() }] : [];
  const body = {
    model: modelName, messages: messages.concat(turns), stream: true,
    temperature: number("temperature", parseFloat), top_p: number("top-p", parseFloat),
    max_tokens: number("max-tokens", (v) => parseInt(v, 10)),
  };
  controller = new AbortController();
  setState("streaming");
  setStatus("");
  let content = "";
  let finish = "error";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    await readEvents(response, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      for (const choice of chunk.choices) {
        if (choice.delta && choice.delta.content) {
          content += choice.delta.content;
          reply.textContent = content;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
  } catch (e) {
    if (e.name === "AbortError") {
      finish = "stopped";
    } else {
      setStatus(e.message, true);
    }
  }
  reply.classList.remove("streaming");
  if (finish === "stopped" || finish === "length") {
    const note = document.createElement("span");
    note.className = "note";
    note.textContent = finish === "stopped" ? " [stopped]" : " [max tokens reached]";
    reply.appendChild(note);
  }
  if (finish !== "error") turns.push({ role: "assistant", content });
  else turns.pop(); // the question got no answer: it can be asked again
  controller = null;
  document.body.dataset.finish = finish;
  document.body.dataset.turns = String(turns.length);
  setState("idle");
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || document.body.dataset.state !== "idle") return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => {
  if (controller) controller.abort();
  turns.length = 0;
  $("messages").replaceChildren();
  setStatus("");
});
$("api-key").addEventListener("change", loadModel);
loadModel();
