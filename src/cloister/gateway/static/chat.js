"use strict";
// The gateway's web chat: the OpenAI-compatible API seen from a browser, plus what Cloister adds to each answer
// (consensus mode, agreement, receipt). No framework and no build step, so what the gateway serves is what runs.

const KEY_STORAGE = "cloister.apiKey";
const HINTS = {
  400: "The gateway refused the request as malformed; check the message and the settings above.",
  401: "The API key is missing, malformed or not valid here: paste a key made for this gateway.",
  402: "Out of credit for this deployment: deposit more on the ledger, then try again.",
  404: "Not found on this gateway: pick another deployment or reload the list.",
  413: "The conversation is too long: start a new chat.",
  503: "No replica can serve this right now: try again shortly or choose a lighter consensus mode.",
};

const $ = (id) => document.getElementById(id);
const state = { key: "", history: [], controller: null };

/** An HTTP error from the gateway, with the message of its OpenAI-style error body. */
class GatewayError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function gatewayError(response) {
  let message = "";
  try {
    message = (await response.json())?.error?.message ?? "";
  } catch {
    // a body that is not JSON: the status line is all there is to say
  }
  return new GatewayError(response.status, message || response.statusText || "request failed");
}

function describe(error) {
  if (error instanceof GatewayError) {
    const hint = HINTS[error.status];
    const status = error.status ? `HTTP ${error.status}: ` : "";
    return `${status}${error.message}${hint ? ` — ${hint}` : ""}`;
  }
  return `Could not reach the gateway (${error.message}). Check that it is running, then try again.`;
}

function showStatus(text, kind = "error") {
  const box = $("status");
  box.textContent = text;
  box.className = `status ${kind}`;
  box.hidden = !text;
}

/** fetch() on this gateway with the API key; non-2xx answers become a GatewayError. */
async function api(path, options = {}) {
  const headers = { ...(options.headers ?? {}) };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) throw await gatewayError(response);
  return response;
}

function randomNonce() {
  // The client's share of the selection seed: with it, the gateway cannot steer which replicas are chosen.
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function connect() {
  const select = $("deployment");
  select.disabled = true;
  try {
    const models = (await (await api("/v1/models")).json()).data ?? [];
    select.replaceChildren(...models.map((model) => new Option(model.id, model.id)));
    if (!models.length) select.append(new Option("no deployment on this gateway", ""));
    select.disabled = !models.length;
    showStatus(models.length ? `Connected: ${models.length} deployment(s).` : "Connected, but no deployment.", "info");
  } catch (error) {
    select.replaceChildren(new Option("connect first", ""));
    showStatus(describe(error));
  }
}

/** Yield the data of each server-sent event of a streamed body (SSE framing: blank-line separated blocks). */
async function* serverSentData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = (buffer + value).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const data = lines.filter((line) => line.startsWith("data:")).map((line) => line.slice(5).replace(/^ /, ""));
      if (data.length) yield data.join("\n");
    }
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function appendMessage(role, text) {
  const item = element("li", `message ${role}`);
  item.append(element("span", "who", role === "user" ? "You" : "Assistant"), element("div", "text", text));
  $("log").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

/** One assistant answer in the log: its text as it streams, then its mode, agreement and receipt. */
class Answer {
  constructor() {
    this.item = appendMessage("assistant", "");
    this.item.setAttribute("aria-busy", "true");
    this.body = this.item.querySelector(".text");
    this.meta = element("div", "meta");
    this.proof = element("div", "proof");
    this.proof.hidden = true;
    this.item.append(this.meta, this.proof);
    this.text = "";
    this.verdict = { mode: null, agreed: null, receipt_id: null, dispute_id: null };
    this.render();
  }

  append(delta) {
    this.text += delta;
    this.body.textContent = this.text;
  }

  update(fields) {
    for (const name of Object.keys(this.verdict)) {
      const value = fields[name];
      if (value !== undefined && value !== null && value !== "") this.verdict[name] = value;
    }
    this.render();
  }

  /** The majority answered something else than the replica that streamed: show what the replicas agreed on. */
  replace(content) {
    this.text = content;
    this.body.textContent = content;
    this.note = "The streamed answer was outvoted; this is the majority's answer.";
  }

  finish() {
    this.item.removeAttribute("aria-busy");
    if (!this.text) this.body.textContent = "(empty answer)";
    this.done = true;
    this.render();
  }

  fail(message) {
    this.item.removeAttribute("aria-busy");
    this.item.classList.add("failed");
    this.body.textContent = this.text ? `${this.text}\n\n[${message}]` : message;
  }

  render() {
    const { mode, agreed, receipt_id: receipt, dispute_id: dispute } = this.verdict;
    const parts = [element("span", "badge mode", `mode ${mode ?? "…"}`)];
    if (agreed === true) parts.push(element("span", "badge agreed", "replicas agreed"));
    else if (agreed === false) parts.push(element("span", "badge disagreed", "replicas disagreed — majority answer"));
    else parts.push(element("span", "badge pending", this.done ? "agreement unknown" : "awaiting commitments"));
    if (dispute) parts.push(element("span", "badge disagreed", `dispute ${dispute}`));
    if (this.note) parts.push(element("span", "note", this.note));
    if (receipt) {
      const link = element("a", "receipt-link", `receipt ${receipt}`);
      link.href = `/v1/receipts/${encodeURIComponent(receipt)}`;
      link.target = "_blank";
      link.rel = "noopener";
      const verify = element("button", "secondary small verify", "Verify");
      verify.type = "button";
      verify.addEventListener("click", () => this.verify(receipt, verify));
      parts.push(link, verify);
    }
    this.meta.replaceChildren(...parts);
  }

  async verify(receipt, button) {
    button.disabled = true;
    this.proof.hidden = false;
    this.proof.replaceChildren(element("p", "help", "Verifying…"));
    try {
      const response = await api(`/v1/receipts/${encodeURIComponent(receipt)}/verify`);
      this.proof.replaceChildren(...checklist(await response.json()));
    } catch (error) {
      this.proof.replaceChildren(element("p", "result failed", describe(error)));
    } finally {
      button.disabled = false;
    }
  }
}

/** The gateway's verification of a receipt: {ok, error?, checks: [{name, passed, detail}]}. */
function checklist(result) {
  const items = result.checks ?? [];
  const ok = result.ok === true && items.length > 0;
  const failed = items.find((item) => !item.passed);
  const summary = ok
    ? `Receipt verified: all ${items.length} checks passed.`
    : `Receipt NOT verified${failed ? `: check “${failed.name}” failed` : ""}${result.error ? ` (${result.error})` : ""}.`;
  const list = element("ul", "checklist");
  for (const item of items) {
    const row = element("li", item.passed ? "pass" : "fail");
    row.append(element("span", "mark", item.passed ? "✓" : "✗"), element("span", "name", item.name));
    if (item.detail) row.append(element("span", "detail", item.detail));
    list.append(row);
  }
  return [element("p", `result ${ok ? "passed" : "failed"}`, summary), list];
}

function headerVerdict(headers) {
  const agreed = headers.get("X-Cloister-Agreed");
  return {
    receipt_id: headers.get("X-Cloister-Receipt"),
    mode: headers.get("X-Cloister-Consensus"),
    agreed: agreed === "true" ? true : agreed === "false" ? false : null,
  };
}

async function streamAnswer(response, answer) {
  for await (const data of serverSentData(response.body)) {
    if (data === "[DONE]") break;
    let payload;
    try {
      payload = JSON.parse(data);
    } catch {
      throw new GatewayError(0, "the gateway sent an event that is not JSON");
    }
    if (payload.error) throw new GatewayError(0, payload.error.message ?? "the answer failed midway");
    if (payload.cloister) {
      answer.update(payload.cloister);
      if (typeof payload.cloister.content === "string") answer.replace(payload.cloister.content);
    }
    for (const choice of payload.choices ?? []) {
      if (choice.delta?.content) answer.append(choice.delta.content);
    }
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").hidden = !busy;
  $("new-chat").disabled = busy;
}

async function send(text) {
  const model = $("deployment").value;
  if (!state.key) return showStatus("Paste an API key and press Connect first.");
  if (!model) return showStatus("Choose a deployment first.");
  showStatus("");
  state.history.push({ role: "user", content: text });
  appendMessage("user", text);
  const answer = new Answer();
  const headers = { "Content-Type": "application/json", "X-Cloister-Nonce": randomNonce() };
  const mode = $("consensus").value;
  if (mode) headers["X-Cloister-Consensus"] = mode;
  state.controller = new AbortController();
  setBusy(true);
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST",
      headers,
      body: JSON.stringify({ model, messages: state.history, stream: true }),
      signal: state.controller.signal,
    });
    answer.update(headerVerdict(response.headers));
    await streamAnswer(response, answer);
    answer.finish();
    state.history.push({ role: "assistant", content: answer.text });
  } catch (error) {
    state.history.pop(); // that turn got no complete answer: leave it out of the next request
    const stopped = error.name === "AbortError";
    answer.fail(stopped ? "stopped" : describe(error));
    if (!stopped) showStatus(describe(error));
  } finally {
    state.controller = null;
    setBusy(false);
    answer.item.scrollIntoView({ block: "end" });
  }
}

function init() {
  state.key = sessionStorage.getItem(KEY_STORAGE) ?? "";
  $("api-key").value = state.key;
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    connect();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = "";
    $("api-key").value = "";
    $("deployment").replaceChildren(new Option("connect first", ""));
    $("deployment").disabled = true;
    showStatus("Key forgotten.", "info");
  });
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("message").value.trim();
    if (!text || state.controller) return;
    $("message").value = "";
    send(text);
    $("message").focus();
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("new-chat").addEventListener("click", () => {
    state.history = [];
    $("log").replaceChildren();
    $("message").focus();
  });
  if (state.key) connect();
}

init();
