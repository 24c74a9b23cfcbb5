// The arena pages: plain browser JavaScript, no build step, nothing loaded from elsewhere.
// Text from the server goes on the page through textContent only, never as HTML.
"use strict";

const SESSION_KEY = "llmlab-arena-session";
const SESSION_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;
let current = null; // the comparison on screen: {session, comparison_id, prompt, a, b}

async function call(method, url, body) {
  const response = await fetch(url, {
    method, headers: {"Content-Type": "application/json"}, body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : response.statusText;
    throw new Error(`${response.status} ${detail}`);
  }
  return data;
}

function show(id, text) {
  document.getElementById(id).textContent = text;
}

function setButtons(enabled) {
  document.querySelectorAll("button[data-verdict]").forEach((b) => { b.disabled = !enabled; });
}

async function nextComparison() {
  setButtons(false);
  let session = localStorage.getItem(SESSION_KEY);
  if (!SESSION_PATTERN.test(session || "")) session = null;
  try {
    current = await call("POST", "/api/next", {session});
  } catch (e) {
    show("status", `Could not load the next comparison (${e.message}); reload the page to try again.`);
    return;
  }
  localStorage.setItem(SESSION_KEY, current.session);
  show("prompt", current.prompt);
  show("answer-a", current.a);
  show("answer-b", current.b);
  document.body.dataset.comparison = current.comparison_id; // lets tests wait for the next comparison
  setButtons(true);
}

async function vote(verdict) {
  if (!current) return;
  const shown = current;
  current = null;
  setButtons(false);
  try {
    const result = await call("POST", "/api/vote", {comparison_id: shown.comparison_id, session: shown.session,
                                                     verdict});
    show("status", result.models ? `Recorded. A was ${result.models.a}, B was ${result.models.b}.`
                                 : `Recorded: ${result.votes} votes so far.`);
  } catch (e) {
    show("status", `Vote not recorded (${e.message}).`);
  }
  await nextComparison();
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function rating(td, value, low, high) {
  td.textContent = Math.round(value) + " ";
  const ci = document.createElement("span");
  ci.className = "ci";
  ci.textContent = `[${Math.round(low)}, ${Math.round(high)}]`;
  td.appendChild(ci);
}

async function loadBoard() {
  let board;
  try {
    board = await call("GET", "/api/leaderboard");
  } catch (e) {
    show("summary", `Could not load the leaderboard (${e.message}).`);
    return;
  }
  const excluded = board.votes - board.counted;
  show("summary", board.votes ? `${board.votes} votes` + (excluded ? ` (${excluded} "both bad" left out)` : "")
                              : "No votes yet.");
  document.body.dataset.votes = String(board.votes);
  const body = document.querySelector("#board tbody");
  body.replaceChildren();
  for (const r of board.rows) {
    const row = body.insertRow();
    row.dataset.model = r.model;
    cell(row, r.rank);
    cell(row, r.model, "model");
    rating(row.insertCell(), r.bt, r.bt_low, r.bt_high);
    rating(row.insertCell(), r.elo, r.elo_low, r.elo_high);
    for (const key of ["votes", "wins", "losses", "ties"]) cell(row, r[key]);
  }
}

if (document.body.dataset.page === "vote") {
  document.querySelectorAll("button[data-verdict]").forEach((b) => {
    b.addEventListener("click", () => vote(b.dataset.verdict));
  });
  const keys = {"1": "a", "2": "b", "3": "tie", "4": "both_bad"};
  document.addEventListener("keydown", (e) => {
    if (keys[e.key] && current) vote(keys[e.key]);
  });
  nextComparison();
} else {
  document.getElementById("refresh").addEventListener("click", loadBoard);
  loadBoard();
}
