// The page's whole logic: who is talking, the session, sending a message and reading the streamed reply
// (NDJSON, one event a line: see app.py), and the side panel of memories.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { user: "", session: "", used: [], cited: [], view: "used" };
const hint = $("#messages .hint"); // shown again whenever the chat starts over

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatDate(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// -- who and when -----------------------------------------------------------------------------------

async function newSession(announce) {
  const response = await fetch("/api/sessions/new");
  state.session = (await response.json()).session_id;
  $("#session").textContent = `session ${state.session.slice(0, 8)}`;
  if (announce) addLine("divider", "New session: what was said before is now a memory of an earlier conversation.");
}

function knownUsers() {
  return JSON.parse(localStorage.getItem("memagent-users") || "[]");
}

async function setUser(name) {
  state.user = name;
  localStorage.setItem("memagent-user", name);
  const users = [name, ...knownUsers().filter((u) => u !== name)].slice(0, 20);
  localStorage.setItem("memagent-users", JSON.stringify(users));
  $("#known-users").replaceChildren(...users.map((u) => Object.assign(element("option"), { value: u })));
  $("#messages").replaceChildren(hint);
  state.used = [];
  state.cited = [];
  await newSession(false);
  await showMemories();
}

// -- the chat ---------------------------------------------------------------------------------------

function addLine(kind, text) {
  const line = element("li", kind, text);
  $("#messages").append(line);
  line.scrollIntoView({ block: "end" });
  return line;
}

function addReply() {
  const line = addLine("msg assistant");
  line.dataset.state = "streaming";
  const notes = element("details", "notes");
  notes.append(element("summary", "", "notes on the memories"), element("div", "notes-text"));
  notes.hidden = true;
  line.append(notes, element("div", "text"), element("div", "meta"));
  line.querySelector(".text").append(element("span", "typing", "…"));
  return line;
}

function onEvent(line, event) {
  const text = line.querySelector(".text");
  if (event.type === "memories") {
    state.used = event.memories;
    state.cited = [];
    showMemories();
  } else if (event.type === "notes") {
    const notes = line.querySelector(".notes");
    notes.hidden = false;
    notes.querySelector(".notes-text").textContent += event.text;
  } else if (event.type === "answer") {
    line.querySelector(".typing")?.remove();
    text.append(event.text);
  } else if (event.type === "done") {
    finish(line, event);
  } else if (event.type === "error") {
    line.dataset.state = "error";
    line.classList.add("error");
    text.textContent = event.message;
  }
}

function finish(line, event) {
  const answer = event.answer;
  line.dataset.state = "done";
  line.querySelector(".text").textContent = event.text; // the parsed answer, without the reader's labels
  if (answer === null) return; // a fact noted, not a question answered
  const count = (n) => `${n} ${n === 1 ? "memory" : "memories"}`;
  const confidence = `confidence ${answer.confidence.toFixed(2)}`;
  if (answer.refused) { // the memories it read did not hold the answer: none is marked as cited
    line.classList.add("refused");
    line.prepend(element("div", "badge", "Not in my memories"));
    line.querySelector(".meta").textContent = `${count(answer.citations.length)} read · ${confidence}`;
    state.cited = [];
  } else {
    line.querySelector(".meta").textContent = `${count(answer.citations.length)} cited · ${confidence}`;
    state.cited = answer.citations;
  }
  showMemories();
}

async function send(message) {
  addLine("msg user", message);
  const line = addReply();
  try {
    await stream(line, message);
  } catch (error) { // the server went away
    onEvent(line, { type: "error", message: String(error) });
  }
}

async function stream(line, message) {
  const response = await fetch("/api/chat", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user_id: state.user, session_id: state.session, message }),
  });
  if (!response.ok) {
    onEvent(line, { type: "error", message: `${response.status}: ${await response.text()}` });
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      onEvent(line, JSON.parse(buffer.slice(0, end)));
      buffer = buffer.slice(end + 1);
    }
    line.scrollIntoView({ block: "end" });
  }
  if (line.dataset.state === "streaming") onEvent(line, { type: "error", message: "The reply was cut off." });
}

// -- the side panel ---------------------------------------------------------------------------------

function memoryCard(memory) {
  const card = element("li", "memory");
  card.dataset.id = memory.id;
  const head = element("div", "memory-head");
  head.append(element("time", "", formatDate(memory.date)));
  if (memory.session_id === state.session) head.append(element("span", "tag", "this session"));
  if (state.cited.includes(memory.id)) {
    card.classList.add("cited");
    head.append(element("span", "tag cited-tag", "cited"));
  }
  card.append(head);
  for (const said of memory.text.split("\n")) {
    const [role, ...rest] = said.split(": ");
    const known = role === "user" || role === "assistant";
    const row = element("p", known ? role : "");
    if (known) row.append(element("b", "", role === "user" ? "you" : "assistant"), element("span", "", rest.join(": ")));
    else row.append(said); // a line of a longer message
    card.append(row);
  }
  return card;
}

async function showMemories() {
  let memories = state.used;
  let note = "Ask a question: the memories the answer was given show up here, the ones it cited marked.";
  if (state.view === "all") {
    const response = await fetch(`/api/memories?user_id=${encodeURIComponent(state.user)}`);
    memories = response.ok ? await response.json() : [];
    note = `${memories.length} ${memories.length === 1 ? "memory" : "memories"} of ${state.user}, oldest first.`;
  } else if (memories.length) {
    note = `The last answer was given ${memories.length} ${memories.length === 1 ? "memory" : "memories"}, oldest first.`;
  }
  $("#memories-note").textContent = note;
  $("#memory-list").replaceChildren(...memories.map(memoryCard));
}

// -- wiring -----------------------------------------------------------------------------------------

$("#composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = $("#message").value.trim();
  if (!message || $("#send").disabled) return;
  $("#message").value = "";
  $("#send").disabled = true;
  try {
    await send(message);
  } finally {
    $("#send").disabled = false;
    $("#message").focus();
  }
});

$("#message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { // Enter sends, Shift+Enter breaks the line
    event.preventDefault();
    $("#composer").requestSubmit();
  }
});

$("#user").addEventListener("change", () => {
  const name = $("#user").value.trim();
  if (name && name !== state.user) setUser(name);
});

$("#new-session").addEventListener("click", () => newSession(true));

for (const tab of document.querySelectorAll(".tabs button")) {
  tab.addEventListener("click", () => {
    state.view = tab.dataset.view;
    document.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("active", b === tab));
    showMemories();
  });
}

$("#user").value = localStorage.getItem("memagent-user") || "me";
setUser($("#user").value);
